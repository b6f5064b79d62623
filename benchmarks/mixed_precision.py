"""Accuracy-targeted mixed precision: per-Q/DQ sensitivity, then the fewest tensors raised to meet a budget.

For one zoo SR model: uniform W8A8 and uniform W4A4 (same observer, same calibration crops of training
images), then ``search_precision`` from the W4A4 graph with a Y-PSNR loss budget (default 0.1 dB) measured
on a *held-out* split of the training set (BSD200 images never used for calibration; a raised tensor takes
the bounds calibrated for its new grid), and finally every
variant scored on the real test set (Set5 ...) that the search never saw. Sizes count weights at their
bit width (int4 = half a byte), as packed storage would; the QDQ files themselves keep 8-bit containers.

    python benchmarks/mixed_precision.py --model abpn-x3 --out benchmarks/results/mixed_precision_abpn
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODELS = {  # zoo name -> (scale, pixel gain, preset, preset options)
    "abpn-x3": (3, 255.0, "ort-cpu-int8", {"full_integer": False}),
    "swinir-light-x2": (2, 1.0, "lowbit-sim", {}),
}
HELD_OUT = 8  # last BSD200 images: the search's held-out split


def _crops(files: list[Path], n: int, size: int, scale: int, gain: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random LR crops (N, 3, size, size) in the model's range and their HR crops (uint8 HWC)."""
    from PIL import Image

    from qdeploy.sr.imresize import bicubic_downscale

    rng = np.random.default_rng(seed)
    files = [f for f in files if min(Image.open(f).size) >= scale * size]
    lrs, hrs = [], []
    for i in rng.choice(len(files), size=n, replace=len(files) < n):
        hr = np.array(Image.open(files[i]).convert("RGB"))
        hr = hr[: hr.shape[0] // scale * scale, : hr.shape[1] // scale * scale]
        lr = bicubic_downscale(hr, scale)
        y, x = rng.integers(lr.shape[0] - size + 1), rng.integers(lr.shape[1] - size + 1)
        lrs.append(lr[y:y + size, x:x + size].transpose(2, 0, 1))
        hrs.append(hr[y * scale:(y + size) * scale, x * scale:(x + size) * scale])
    return (np.stack(lrs).astype(np.float32) / (255.0 / gain)).astype(np.float32), np.stack(hrs)


def psnr_evaluator(hrs: np.ndarray, scale: int, gain: float):
    """Mean Y-PSNR (shave = scale) of the outputs vs the HR crops, the SR protocol on crops."""
    from qdeploy.sr.evaluate import score_image, to_uint8

    def evaluate(outputs: list[dict[str, np.ndarray]]) -> float:
        scores = []
        for hr, out in zip(hrs, outputs):
            sr = to_uint8(next(iter(out.values()))[0], int(gain))
            scores.append(score_image("crop", sr, hr, scale).psnr_y)
        return float(np.mean(scores))

    return evaluate


def calibrate(float_path: Path, npz: Path, out: Path, bits: int, model: str, method: str):
    from qdeploy.calib.data import DataConfig
    from qdeploy.pipeline import CalibrateConfig, calibrate_model

    _, _, preset, opts = MODELS[model]
    t = time.perf_counter()
    result = calibrate_model(CalibrateConfig(model=float_path, output=out, data=DataConfig(source=npz),
                                             method=method, preset=preset, threads=2,
                                             preset_options={**opts, "bits": bits}))
    return result, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--model", default="abpn-x3", choices=sorted(MODELS))
    ap.add_argument("--method", default="mse")
    ap.add_argument("--budget", type=float, default=0.1, help="Y-PSNR loss budget in dB (held-out split)")
    ap.add_argument("--heldout-crops", type=int, default=24)
    ap.add_argument("--sets", default="Set5")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/mixed_precision_abpn"))
    args = ap.parse_args()
    sr = args.shared / "sr"
    if not (sr / "train").is_dir():
        sys.exit(f"needs the SR data at {sr}")
    scale, gain, _, _ = MODELS[args.model]
    files = sorted(sr.glob("train/*/*.png"))
    bsd = sorted((sr / "train" / "BSD200").glob("*.png"))
    held = set(bsd[-HELD_OUT:])
    calib_lr, _ = _crops([f for f in files if f not in held], 32, 64, scale, gain, seed=0)
    held_lr, held_hr = _crops(sorted(held), args.heldout_crops, 48, scale, gain, seed=1)
    results = run(args, calib_lr, held_lr, held_hr, scale, gain)
    write(results, args)


def run(args: argparse.Namespace, calib_lr: np.ndarray, held_lr: np.ndarray, held_hr: np.ndarray,
        scale: int, gain: float) -> dict:
    from qdeploy.analyze import AnalyzeConfig, analyze_sensitivity
    from qdeploy.analyze.search import PrecisionTarget, model_size_bytes, search_precision
    from qdeploy.export import ExportConfig, export_model
    from qdeploy.graph.io import load_model, save_model
    from qdeploy.sr.evaluate import SREvalConfig, evaluate_sr

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        float_path = work / "float.onnx"
        export_model(ExportConfig(spec=args.model, output=float_path, input_shapes=((1, 3, 64, 64),),
                                  dynamic_hw=True))
        npz = work / "calib.npz"
        np.savez(npz, input=calib_lr)
        w8, w8_s = calibrate(float_path, npz, work / "w8a8.onnx", 8, args.model, args.method)
        w4, w4_s = calibrate(float_path, npz, work / "w4a4.onnx", 4, args.model, args.method)
        fmodel, q4 = load_model(float_path), load_model(w4.output)
        batches = [{"input": held_lr[i:i + 1]} for i in range(len(held_lr))]
        evaluator = psnr_evaluator(held_hr, scale, gain)
        config = AnalyzeConfig(threads=2)
        t = time.perf_counter()
        analysis = analyze_sensitivity(fmodel, q4, batches, evaluator, w4.ranges, config)
        analysis_s = time.perf_counter() - t
        t = time.perf_counter()
        # a tensor raised to 8 bits takes the bounds calibrated for the 8-bit grid: the W4A4 observer's
        # bounds clip for 16 levels and would waste the raise
        plan = search_precision(fmodel, q4, batches, PrecisionTarget("loss", args.budget), evaluator,
                                w8.ranges, analysis, config)
        search_s = time.perf_counter() - t
        mixed = save_model(plan.model, work / "mixed.onnx")
        paths = [float_path, w8.output, w4.output, mixed]
        psnr = {}
        for ds in args.sets.split(","):
            report = evaluate_sr(paths, SREvalConfig(dataset=sr_dir(args) / ds, scale=scale, value_range=int(gain),
                                                     threads=2, graph_optimization="disable"))
            psnr[ds] = [row.psnr_y for row in report.models]
        sizes = [model_size_bytes(fmodel), model_size_bytes(load_model(w8.output)), model_size_bytes(q4),
                 plan.size_bytes]
        return {"model": args.model, "method": args.method, "budget_db": args.budget,
                "labels": ["float", "uniform W8A8", "uniform W4A4", f"mixed (≤{args.budget} dB held-out)"],
                "psnr": psnr, "size_bytes": sizes, "calib_s": [0.0, w8_s, w4_s, w4_s + search_s],
                "analysis_s": analysis_s, "search_s": search_s, "tensors": len(analysis.tensors),
                "plan": plan.to_dict(), "top5": [t.name for t in analysis.tensors[:5]]}


def sr_dir(args: argparse.Namespace) -> Path:
    return args.shared / "sr"


def write(results: dict, args: argparse.Namespace) -> None:
    sets = list(results["psnr"])
    head = ["variant", "size KiB (packed)"] + [f"{ds} Y-PSNR (Δ)" for ds in sets] + ["calib + search s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, label in enumerate(results["labels"]):
        cells = [label, f"{results['size_bytes'][i] / 1024:.0f}"]
        for ds in sets:
            v, f = results["psnr"][ds][i], results["psnr"][ds][0]
            cells.append(f"{v:.3f}" if i == 0 else f"{v:.3f} ({v - f:+.3f})")
        cells.append(f"{results['calib_s'][i]:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    plan = results["plan"]
    table = "\n".join(lines)
    extra = (f"\nPrecision map: {plan['counts']}; held-out loss {plan['float_score'] - plan['score']:.3f} dB "
             f"(budget {results['budget_db']} dB, met={plan['met']}); sensitivity analysis of "
             f"{results['tensors']} tensors {results['analysis_s']:.0f}s, search {results['search_s']:.0f}s "
             f"({len(plan['candidates'])} candidates measured). Most sensitive: {', '.join(results['top5'])}.\n")
    print(table + "\n" + extra)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))
    cmd = "python benchmarks/mixed_precision.py " + " ".join(sys.argv[1:])
    args.out.with_suffix(".md").write_text(f"# Mixed precision to a {results['budget_db']} dB budget: "
                                           f"{results['model']}\n\nCommand: `{cmd}`\n\n{table}\n{extra}")


if __name__ == "__main__":
    main()
