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

W8_METHODS = ("min-max", "DOBI")  # at 8 bits every method is within 0.001 dB: the cheap pair suffices
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


def build_variant(float_path: Path, data: dict[str, Path], out: Path, bits: int, method: tuple,
                  args: argparse.Namespace) -> float:
    """Calibrate one variant (then DQC on its own patches); returns wall seconds of all of it."""
    from qdeploy.calib.data import DataConfig
    from qdeploy.pipeline import CalibrateConfig, calibrate_model

    _, observer, shift, dqc = method
    options: dict = {"bits": bits, "shift_qk": shift}
    if args.convs:
        options["op_types"] = ("Conv", "MatMul", "Gemm")
    t = time.perf_counter()
    calibrate_model(CalibrateConfig(model=float_path, output=out, data=DataConfig(source=data["calib"]),
                                    method=observer, preset="lowbit-sim", preset_options=options,
                                    threads=args.threads, batch_size=8))
    if dqc:
        refine_variant(float_path, out, data["dqc"], args)
    return time.perf_counter() - t


def refine_variant(float_path: Path, qdq_path: Path, npz: Path, args: argparse.Namespace) -> None:
    """DQC on the DQC patches, written over ``qdq_path`` (the product's ``--refine dqc``, other data)."""
    import torch

    from qdeploy.graph.io import load_model, save_model
    from qdeploy.refine.dqc import DQCConfig, refine_dqc

    torch.set_num_threads(args.threads)
    patches = np.load(npz)["input"]
    samples = [{"input": patches[i:i + 1]} for i in range(len(patches))]
    config = DQCConfig(iterations=args.dqc_iters, lr=args.dqc_lr, batch_size=args.dqc_batch, seed=0)
    refined, report = refine_dqc(load_model(float_path), load_model(qdq_path), samples, config, show_progress=False)
    print(f"  DQC loss {report.initial_loss:.4g} -> {report.final_loss:.4g} ({report.seconds:.0f}s)", flush=True)
    save_model(refined, qdq_path)


def weight_only_variant(float_path: Path, out: Path) -> None:
    from qdeploy.graph.io import load_model, save_model
    from qdeploy.quant.weight_only import WeightOnlyConfig, quantize_weights_only

    save_model(quantize_weights_only(load_model(float_path), WeightOnlyConfig()), out)


def crop_set(src: Path, dst: Path, lr_crop: int, scale: int = 2) -> Path:
    """``dst/HR``: the central ``lr_crop * scale`` HR crop of every image of ``src`` (evaluation protocol)."""
    from PIL import Image

    from qdeploy.sr.dataset import hr_files

    (dst / "HR").mkdir(parents=True, exist_ok=True)
    size = lr_crop * scale
    for f in hr_files(src):
        img = np.array(Image.open(f).convert("RGB"))
        y, x = max(0, (img.shape[0] - size) // 2), max(0, (img.shape[1] - size) // 2)
        Image.fromarray(img[y:y + size, x:x + size]).save(dst / "HR" / f"{f.stem}.png")
    return dst


def sr_psnr(path: Path, dataset: Path, threads: int) -> float:
    from qdeploy.sr.evaluate import SREvalConfig, evaluate_sr

    report = evaluate_sr([path], SREvalConfig(dataset=dataset, scale=2, value_range=1, threads=threads,
                                              graph_optimization="basic"))
    return report.models[0].psnr_y


def variants(args: argparse.Namespace) -> list[tuple[str, int, tuple | None]]:
    """(label, bits, method) to build: float first, then bits x methods, then INT4 weight-only."""
    chosen = [m for m in METHODS if m[0] in args.methods.split(",")]
    dqc_bits = {int(b) for b in args.dqc_bits.split(",")}
    out: list[tuple[str, int, tuple | None]] = [("float", 32, None)]
    for bits in [int(b) for b in args.bits.split(",")]:
        for m in chosen:
            if (m[3] and bits not in dqc_bits) or (bits == 8 and m[0] not in W8_METHODS):
                continue
            out.append((m[0], bits, m))
    if not args.no_int4w:
        out.append(("INT4 weight-only (block 32)", 4, None))
    return out


def measure(label: str, bits: int, method: tuple | None, work: Path, float_path: Path, data: dict[str, Path],
            sets: dict[str, Path], args: argparse.Namespace) -> dict:
    """Build one variant and score it on every set; one result row."""
    t = time.perf_counter()
    if label == "float":
        path, seconds = float_path, 0.0
    elif method is None:
        path = work / "int4_weight_only.onnx"
        weight_only_variant(float_path, path)
        seconds = time.perf_counter() - t
    else:
        path = work / f"w{bits}a{bits}_{label.replace('+', '_')}.onnx"
        seconds = build_variant(float_path, data, path, bits, method, args)
    row = {"method": label, "bits": bits, "calib_s": seconds, "size_kb": path.stat().st_size / 1024}
    for name, folder in sets.items():
        row[name] = sr_psnr(path, folder, args.threads)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/swinir_lowbit"))
    ap.add_argument("--bits", default="8,4,3,2")
    ap.add_argument("--methods", default=",".join(m[0] for m in METHODS))
    ap.add_argument("--sets", default="Set5,Set14,B100,Urban100")
    ap.add_argument("--crop-sets", default="Set14,B100,Urban100", help="sets scored on central LR crops")
    ap.add_argument("--eval-crop", type=int, default=64, help="LR crop size for --crop-sets")
    ap.add_argument("--convs", action="store_true", help="also quantize the convolutions")
    ap.add_argument("--no-int4w", action="store_true", help="skip the INT4 weight-only row")
    ap.add_argument("--dqc-iters", type=int, default=40)
    ap.add_argument("--dqc-lr", type=float, default=1e-2)
    ap.add_argument("--dqc-batch", type=int, default=2)
    ap.add_argument("--dqc-bits", default="8,4,3,2", help="bit widths that get the DQC rows (CPU cost)")
    ap.add_argument("--threads", type=int, default=1, help="ORT / torch threads of this process")
    ap.add_argument("--merge", nargs="+", type=Path, default=None, help="combine these result JSON files")
    args = ap.parse_args()
    if args.merge:
        write_tables(merge(args.merge, args.out))
        return
    sr = args.shared / "sr"
    if not (sr / "train").is_dir():
        sys.exit(f"needs the SR data at {sr} (Set5, Set14, B100, Urban100, train/)")
    run(args, sr)


def run(args: argparse.Namespace, sr: Path) -> None:
    out_json = args.out.with_suffix(".json")
    results = json.loads(out_json.read_text()) if out_json.exists() else {"rows": []}
    results["args"] = {k: str(v) for k, v in vars(args).items()}
    done = {(r["method"], r["bits"]) for r in results["rows"]}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        float_path = export_float(work)
        data = {"calib": work / "calib.npz", "dqc": work / "dqc.npz"}
        np.savez(data["calib"], input=calibration_patches(sr / "train", 32, 64, seed=0))
        np.savez(data["dqc"], input=calibration_patches(sr / "train", 64, 32, seed=1))
        crop = set(args.crop_sets.split(","))
        sets = {ds: (crop_set(sr / ds, work / f"{ds}_crop", args.eval_crop) if ds in crop else sr / ds)
                for ds in args.sets.split(",")}
        for label, bits, method in variants(args):
            if (label, bits) in done:
                continue
            row = measure(label, bits, method, work, float_path, data, sets, args)
            results["rows"].append(row)
            print(json.dumps(row), flush=True)
            _save(results, out_json)
    results["sets"] = list(sets)
    results["crop_sets"] = sorted(crop & set(sets))
    write_tables(results)


def _save(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(path)


def merge(paths: list[Path], out: Path) -> dict:
    """One result from several parts (float rows must agree: same model, same protocol)."""
    parts = [json.loads(p.read_text()) for p in paths]
    rows, seen = [], set()
    floats = [r for p in parts for r in p["rows"] if r["method"] == "float"]
    for r in floats[1:]:
        if any(abs(r[ds] - floats[0][ds]) > 1e-9 for ds in parts[0]["sets"]):
            sys.exit(f"float rows differ between parts: {floats[0]} vs {r}")
    for p in parts:
        for r in p["rows"]:
            if (r["method"], r["bits"]) not in seen:
                seen.add((r["method"], r["bits"]))
                rows.append(r)
    rows.sort(key=lambda r: (r["method"] != "float", -r["bits"] if "weight-only" not in r["method"] else 0,
                             [m[0] for m in METHODS].index(r["method"]) if r["method"] in [m[0] for m in METHODS]
                             else 99))
    args = parts[0]["args"] | {"out": str(out), "merged": [str(p) for p in paths]}
    return {"args": args, "rows": rows, "sets": parts[0]["sets"], "crop_sets": parts[0]["crop_sets"]}


def write_tables(results: dict) -> None:
    rows, sets = results["rows"], results["sets"]
    fl = rows[0]
    head = ["bits", "method", "calib s", "size KiB"] + [
        f"{ds}{' crops' if ds in results['crop_sets'] else ''} Y-PSNR (Δ)" for ds in sets]
    head += ["target Set5 Δ", "2DQuant paper Δ"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        bits = "FP32" if r["method"] == "float" else (f"W{r['bits']}A{r['bits']}" if "weight-only" not in
                                                      r["method"] else "W4A16")
        cells = [bits, r["method"], f"{r['calib_s']:.0f}", f"{r['size_kb']:.0f}"]
        cells += [f"{r[ds]:.3f}" if r is fl else f"{r[ds]:.3f} ({r[ds] - fl[ds]:+.3f})" for ds in sets]
        target = TARGET_LOSS.get(r["bits"]) if r is not fl and "weight-only" not in r["method"] else None
        paper = PAPER_LOSS.get((r["bits"], r["method"]))
        met = "" if target is None or "Set5" not in r else ("met" if fl["Set5"] - r["Set5"] <= target else "NOT met")
        cells += [(f"≥ -{target}" + (f" ({met})" if met else "")) if target is not None else "",
                  f"-{paper:.2f}" if paper is not None else ""]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    out = Path(results["args"]["out"])
    _save(results, out.with_suffix(".json"))
    cmd = "python benchmarks/swinir_lowbit.py " + " ".join(sys.argv[1:])
    crops = ", ".join(results["crop_sets"])
    out.with_suffix(".md").write_text(
        f"# SwinIR-light x2 low-bit (Y-PSNR dB, Δ vs our float model)\n\nCommand: `{cmd}`\n\n"
        f"Set5: whole images. {crops}: central {results['args'].get('eval_crop', '64')}x"
        f"{results['args'].get('eval_crop', '64')} LR crop of every image (float row on the same crops).\n\n"
        f"{table}\n")


if __name__ == "__main__":
    main()
