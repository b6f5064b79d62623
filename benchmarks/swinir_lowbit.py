"""SwinIR-light x2 at W8A8 / W4A4 / W3A3 / W2A2: the 2DQuant ablation, run through qdeploy's ONNX path.

One float ONNX export of the project's SwinIR-light (``swinir-light-x2`` zoo weights), then for every bit
width the methods min-max, percentile, DOBI, DOBI + exact shifted Q/K, DOBI + DQC, DOBI + shift + DQC,
all with the ``lowbit-sim`` preset (what 2DQuant quantizes: inputs and weights of every Linear, both
attention matmuls' inputs; convolutions float unless ``--convs``). Calibration: 32 LR patches 64x64 of
the T91+BSD200 *training* images for the bound search (2DQuant's protocol), more patches of the same
images for DQC; never a test set, and no checkpoint is picked on a test set. Accuracy: Y-PSNR through
plain Q/DQ math (ORT_DISABLE_ALL): no CPU runtime has W4A4 kernels, so the low-bit rows simulate
accuracy. DQC distils on the same 32 calibration patches. Also an INT4 weight-only (block-wise) row with
its real file size.

    python benchmarks/swinir_lowbit.py --sets Set5 --dqc-bits 4 --dqc-iters 30 --dqc-batch 2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

METHODS = [  # (label, observer, shift_qk, dqc)
    ("min-max", "minmax", False, False),
    ("percentile", "percentile", False, False),
    ("DOBI", "dobi", False, False),
    ("DOBI+shift", "dobi", True, False),
    ("DOBI+DQC", "dobi", False, True),
    ("DOBI+shift+DQC", "dobi", True, True),
]
PAPER_LOSS = {  # 2DQuant Table 3, Set5 x2: FP 38.15; loss of each method on *their* model
    (4, "min-max"): 3.76, (4, "percentile"): 0.78, (4, "DOBI"): 0.71, (4, "DOBI+DQC"): 0.28,
    (3, "min-max"): 9.96, (3, "percentile"): 3.78, (3, "DOBI"): 1.78, (3, "DOBI+DQC"): 0.83,
    (2, "min-max"): 4.27, (2, "percentile"): 7.33, (2, "DOBI"): 2.90, (2, "DOBI+DQC"): 2.15,
}
TARGET_LOSS = {8: 0.03, 4: 0.25, 3: 0.75, 2: 2.0}


def calibration_patches(train_dir: Path, n: int, size: int, seed: int) -> np.ndarray:
    """``n`` random ``size``x``size`` LR patches (x2 MATLAB bicubic) of training images, RGB in [0, 1]."""
    from PIL import Image

    from qdeploy.sr.imresize import bicubic_downscale

    rng = np.random.default_rng(seed)
    files = [f for f in sorted(train_dir.glob("*/*.png")) if min(Image.open(f).size) >= 2 * size]
    patches = []
    for i in rng.choice(len(files), size=n, replace=len(files) < n):
        hr = np.array(Image.open(files[i]).convert("RGB"))
        lr = bicubic_downscale(hr[: hr.shape[0] // 2 * 2, : hr.shape[1] // 2 * 2], 2)
        y, x = rng.integers(lr.shape[0] - size + 1), rng.integers(lr.shape[1] - size + 1)
        patch = np.rot90(lr[y:y + size, x:x + size], rng.integers(4))
        patches.append(np.ascontiguousarray(patch.transpose(2, 0, 1)))
    return (np.stack(patches).astype(np.float32) / 255.0).astype(np.float32)


def export_float(work: Path) -> Path:
    from qdeploy.export import ExportConfig, export_model

    out = work / "swinir_light_x2.onnx"
    export_model(ExportConfig(spec="swinir-light-x2", output=out, input_shapes=((1, 3, 64, 64),),
                              dynamic_hw=True))
    return out


def build_variant(float_path: Path, npz: Path, out: Path, bits: int, method: tuple,
                  args: argparse.Namespace) -> float:
    """Calibrate one variant; returns wall seconds (bound search + shift statistics + DQC)."""
    from qdeploy.calib.data import DataConfig
    from qdeploy.pipeline import CalibrateConfig, calibrate_model

    _, observer, shift, dqc = method
    options: dict = {"bits": bits, "shift_qk": shift}
    if args.convs:
        options["op_types"] = ("Conv", "MatMul", "Gemm")
    refine = {}
    if dqc:
        refine = {"refine": "dqc", "refine_options": {"iterations": args.dqc_iters, "lr": args.dqc_lr,
                                                      "batch_size": args.dqc_batch, "seed": 0,
                                                      "show_progress": False}}
    t = time.perf_counter()
    calibrate_model(CalibrateConfig(model=float_path, output=out, data=DataConfig(source=npz), method=observer,
                                    preset="lowbit-sim", preset_options=options, threads=2, batch_size=8,
                                    **refine))
    return time.perf_counter() - t


def weight_only_variant(float_path: Path, out: Path) -> None:
    from qdeploy.graph.io import load_model, save_model
    from qdeploy.quant.weight_only import WeightOnlyConfig, quantize_weights_only

    save_model(quantize_weights_only(load_model(float_path), WeightOnlyConfig()), out)


def sr_psnr(paths: list[Path], dataset: Path, max_images: int | None) -> list[float]:
    from qdeploy.sr.evaluate import SREvalConfig, evaluate_sr

    report = evaluate_sr(paths, SREvalConfig(dataset=dataset, scale=2, value_range=1, threads=2,
                                             graph_optimization="disable", max_images=max_images))
    return [row.psnr_y for row in report.models]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/swinir_lowbit"))
    ap.add_argument("--bits", default="8,4,3,2")
    ap.add_argument("--methods", default=",".join(m[0] for m in METHODS))
    ap.add_argument("--sets", default="Set5,Set14,B100,Urban100")
    ap.add_argument("--max-images", type=int, default=None, help="first N images of each set (Urban100: 50)")
    ap.add_argument("--convs", action="store_true", help="also quantize the convolutions")
    ap.add_argument("--no-int4w", action="store_true", help="skip the INT4 weight-only row")
    ap.add_argument("--dqc-iters", type=int, default=200)
    ap.add_argument("--dqc-lr", type=float, default=1e-2)
    ap.add_argument("--dqc-batch", type=int, default=4)
    ap.add_argument("--dqc-bits", default="8,4,3,2", help="bit widths that get the DQC rows (CPU cost)")
    args = ap.parse_args()
    sr = args.shared / "sr"
    if not (sr / "train").is_dir():
        sys.exit(f"needs the SR data at {sr} (Set5, Set14, B100, Urban100, train/)")
    chosen = [m for m in METHODS if m[0] in args.methods.split(",")]
    sets = args.sets.split(",")
    results: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        float_path = export_float(work)
        npz = work / "calib.npz"
        np.savez(npz, input=calibration_patches(sr / "train", 32, 64, seed=0))
        rows = [("float", 32, None, float_path, 0.0)]
        dqc_bits = {int(b) for b in args.dqc_bits.split(",")}
        for bits in [int(b) for b in args.bits.split(",")]:
            for method in chosen:
                if method[3] and bits not in dqc_bits:
                    continue
                out = work / f"w{bits}a{bits}_{method[0].replace('+', '_')}.onnx"
                seconds = build_variant(float_path, npz, out, bits, method, args)
                rows.append((method[0], bits, method, out, seconds))
                print(f"built W{bits}A{bits} {method[0]} in {seconds:.0f}s", flush=True)
        if not args.no_int4w:
            out = work / "int4_weight_only.onnx"
            t = time.perf_counter()
            weight_only_variant(float_path, out)
            rows.append(("INT4 weight-only (block 32)", 4, None, out, time.perf_counter() - t))
        psnr = {ds: sr_psnr([r[3] for r in rows], sr / ds, args.max_images) for ds in sets}
        for i, (label, bits, _, path, seconds) in enumerate(rows):
            results["rows"].append({"method": label, "bits": bits, "calib_s": seconds,
                                    "size_kb": path.stat().st_size / 1024,
                                    **{ds: psnr[ds][i] for ds in sets}})
    write_tables(results, sets)


def write_tables(results: dict, sets: list[str]) -> None:
    rows = results["rows"]
    fl = rows[0]
    head = ["bits", "method", "calib s (2 cores)", "size KiB"] + [f"{ds} Y-PSNR (Δ)" for ds in sets]
    head += ["target Set5 Δ", "2DQuant paper Δ"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        bits = "FP32" if r["method"] == "float" else (f"W{r['bits']}A{r['bits']}" if "weight-only" not in
                                                      r["method"] else "W4A16")
        cells = [bits, r["method"], f"{r['calib_s']:.0f}", f"{r['size_kb']:.0f}"]
        cells += [f"{r[ds]:.3f}" if r is fl else f"{r[ds]:.3f} ({r[ds] - fl[ds]:+.3f})" for ds in sets]
        target = TARGET_LOSS.get(r["bits"]) if r is not fl and "weight-only" not in r["method"] else None
        paper = PAPER_LOSS.get((r["bits"], r["method"]))
        cells += [f"≥ -{target}" if target is not None and r["method"] in ("DOBI+DQC", "DOBI+shift+DQC") else "",
                  f"-{paper:.2f}" if paper is not None else ""]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    out = Path(results["args"]["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    cmd = "python benchmarks/swinir_lowbit.py " + " ".join(sys.argv[1:])
    out.with_suffix(".md").write_text(f"# SwinIR-light x2 low-bit (Y-PSNR dB, Δ vs our float model)\n\n"
                                      f"Command: `{cmd}`\n\n{table}\n")


if __name__ == "__main__":
    main()
