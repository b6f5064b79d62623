"""Why NGswin x2 loses ~10 dB at W4A4: which quantized layers carry the loss, and what smoothing buys.

Reuses the W4A4 DOBI ranges that ``benchmarks/ngswin_lowbit.py`` calibrated (its WORK/w4a4_DOBI.calib.json)
and rebuilds the ``lowbit-sim`` W4A4 model with one group of layers left float, then scores Set5 x2 (whole
images, plain Q/DQ math). ``--smooth ALPHA``: SmoothQuant-style per-channel scaling of every ``ffn.fc1``
input (explicit ``Mul(x, 1/s)``, weight rows times ``s``, ``s_j = amax_j^a / wmax_j^(1-a)``; exact in
float), channel maxima from the calibration patches, then ``qdeploy calibrate ... --method dobi`` on it.

    python benchmarks/ngswin_diagnosis.py --groups all,no-attn,no-gemm,no-fc1,no-fc2,no-qkv,no-proj,no-misc
    python benchmarks/ngswin_diagnosis.py --smooth 0.5
    python benchmarks/ngswin_diagnosis.py --alphas 0.5,0.7,0.85          # qdeploy calibrate --smooth A --rotate
    python benchmarks/ngswin_diagnosis.py --after WORK/w4a4_DOBI_smooth_rot.calib.json \
        --groups all,no-attn,no-fc1,no-fc2,no-qkv,no-proj,scores,context   # what is left after the recipe
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx_ir as ir

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "exports" / "ngswin_lowbit"
SET5 = REPO.parent / "shared" / "data" / "sr" / "Set5"
FLOAT = 38.046  # Set5 x2 Y-PSNR of the float export (ngswin_float.md)
GROUPS = {"all": None, "scores": "scores", "context": "context",
          "no-attn": "attn", "no-gemm": "gemm", "no-fc1": r"ffn\.fc1", "no-fc2": r"ffn\.fc2",
          "no-qkv": r"\.qkv", "no-proj": r"\.proj \(", "no-misc": r"reduction|across_cascade|bottleneck"}


def layers(model: ir.Model, group: str | None) -> list[str]:
    """Node names of the layer group left float."""
    from qdeploy.graph.names import labels
    from qdeploy.graph.passes.shift_qk import find_attention

    if group is None:
        return []
    if group in ("scores", "context"):
        return [getattr(a, group).name for a in find_attention(model)]
    if group == "attn":
        return [n.name for a in find_attention(model) for n in (a.scores, a.context)]
    if group == "gemm":
        return [n.name for n in model.graph if n.op_type == "Gemm"]
    lab = labels(model)
    return [n.name for n in model.graph
            if n.op_type in ("Gemm", "MatMul") and re.search(group, lab.get(n.outputs[0].name, ""))]


def psnr(path: Path) -> float:
    from qdeploy.sr.evaluate import SREvalConfig, evaluate_sr

    cfg = SREvalConfig(dataset=SET5, scale=2, value_range=1, threads=2, graph_optimization="basic")
    return float(evaluate_sr([path], cfg).models[0].psnr_y)


def group_row(model: ir.Model, name: str, after: Path | None = None, bits: int = 4) -> float:
    """W4A4 with one group float: on the plain DOBI ranges, or (``after``) on a --smooth/--rotate cache."""
    from qdeploy.calib.cache import load_cache
    from qdeploy.quant import get_preset
    from qdeploy.quant.quantize import quantize
    from qdeploy.quant.smoothing import smooth_for_calibration

    base = get_preset("lowbit-sim")
    cache = load_cache(after or WORK / "w4a4_DOBI.calib.json")
    recipe = {}
    if after is not None:
        recipe = {"smooth_alpha": cache.extra["preset"]["smooth_alpha"], "rotate_inputs": True}
        cfg0 = get_preset("lowbit-sim", bits=bits, **recipe)
        model, _ = smooth_for_calibration(model, cfg0, cache.extra["smooth"], lambda m, n: {})
    excl = tuple(f"^{re.escape(n)}$" for n in layers(model, GROUPS[name]))
    cfg = get_preset("lowbit-sim", weight_bits=bits, activation=dataclasses.replace(base.activation, bits=bits),
                     exclude_nodes=excl, **recipe)
    out = WORK / f"diag_{'after_' if after else ''}w{bits}_{name}.onnx"
    ir.save(quantize(model, dict(cache.ranges), cfg), str(out))
    return psnr(out)


def alpha_row(alpha: float) -> float:
    """``qdeploy calibrate --smooth ALPHA --rotate`` at W4A4 DOBI (the product's recipe), Set5 PSNR."""
    out = WORK / f"alpha_{alpha}_w4a4.onnx"
    exe = str(Path(sys.executable).with_name("qdeploy"))
    subprocess.run([exe, "calibrate", str(WORK / "float.onnx"), "--data", str(WORK / "calib.npz"), "--range", "0-1",
                    "--preset", "lowbit-sim", "--bits", "W4A4", "--method", "dobi", "--smooth", str(alpha),
                    "--rotate", "--threads", "2", "--json", "-o", str(out)], check=True, capture_output=True)
    return psnr(out)


def channel_amax(model: ir.Model, names: list[str]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    from qdeploy.graph.passes import ExposeTensorsPass

    exposed = ExposeTensorsPass(names)(model.clone()).model
    sess = ort.InferenceSession(ir.serde.serialize_model(exposed).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    x = np.load(WORK / "calib.npz")["input"]
    amax = {n: np.zeros(1, np.float32) for n in names}
    for i in range(len(x)):
        for n, o in zip(names, sess.run(names, {"input": x[i:i + 1]}), strict=True):
            amax[n] = np.maximum(amax[n], np.abs(o.reshape(-1, o.shape[-1])).max(0))
    return amax


def smoothed(model: ir.Model, alpha: float) -> ir.Model:
    fc1 = [n for n in model.graph if n.name in set(layers(model, r"ffn\.fc1"))]
    amax = channel_amax(model, [n.inputs[0].name for n in fc1])
    for node in fc1:  # Gemm, transB = 0: weight rows are input channels
        xin, w = node.inputs[0], node.inputs[1]
        wa = w.const_value.numpy()
        s = np.maximum(amax[xin.name], 1e-5) ** alpha / np.maximum(np.abs(wa).max(1), 1e-5) ** (1 - alpha)
        s = (s / np.exp(np.mean(np.log(s)))).astype(np.float32)
        inv = ir.Value(name=f"{xin.name}_smooth_inv", const_value=ir.tensor(1 / s, name=f"{xin.name}_smooth_inv"))
        model.graph.register_initializer(inv)
        mul = ir.node("Mul", [xin, inv], name=f"{node.name}_smooth")
        model.graph.insert_before(node, mul)
        mul.outputs[0].name = f"{xin.name}_smoothed"
        node.replace_input_with(0, mul.outputs[0])
        nw = ir.Value(name=f"{w.name}_smoothed", const_value=ir.tensor(wa * s[:, None], name=f"{w.name}_smoothed"))
        model.graph.register_initializer(nw)
        node.replace_input_with(1, nw)
    return model


def smooth_row(model: ir.Model, alpha: float) -> float:
    src, out = WORK / f"smooth_{alpha}.onnx", WORK / f"smooth_{alpha}_w4a4.onnx"
    ir.save(smoothed(model, alpha), str(src))
    exe = str(Path(sys.executable).with_name("qdeploy"))
    subprocess.run([exe, "calibrate", str(src), "--data", str(WORK / "calib.npz"), "--range", "0-1", "--preset",
                    "lowbit-sim", "--bits", "W4A4", "--method", "dobi", "--threads", "2", "--json", "-o", str(out)],
                   check=True, capture_output=True)
    return psnr(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--groups", default="")
    ap.add_argument("--smooth", type=float, default=None)
    ap.add_argument("--alphas", default="")
    ap.add_argument("--after", type=Path, default=None, help="a --smooth/--rotate cache: groups after it")
    ap.add_argument("--bits", type=int, default=4, help="with --after: the cache's bit width")
    args = ap.parse_args()
    model = ir.load(str(WORK / "float.onnx"))
    what = "after --smooth/--rotate" if args.after else "DOBI"
    for name in [g for g in args.groups.split(",") if g]:
        psnr_db = group_row(model, name, args.after, args.bits)
        label = "everything quantized" if name == "all" else f"{name} float"
        print(f"| W{args.bits}A{args.bits} {what}, {label} | {psnr_db - FLOAT:+.3f} |", flush=True)
    for alpha in [float(a) for a in args.alphas.split(",") if a]:
        print(f"| W4A4 DOBI --smooth {alpha} --rotate | {alpha_row(alpha) - FLOAT:+.3f} |", flush=True)
    if args.smooth is not None:
        print(f"| W4A4 DOBI, fc1 inputs smoothed (alpha {args.smooth}) | {smooth_row(model, args.smooth):.3f} |")


if __name__ == "__main__":
    main()
