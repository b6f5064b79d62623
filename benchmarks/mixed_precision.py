"""Accuracy-targeted mixed precision: per-Q/DQ sensitivity, then the fewest tensors raised to meet a budget.

For one zoo SR model: uniform W8A8 and uniform W4A4 (same observer, same calibration crops of training
images), then the product path ``calibrate --bits W4A4 --target-loss 0.1dB --target-data HELD_OUT
--target-scale S`` (per-Q/DQ sensitivity, then ``search_precision``) with the Y-PSNR loss measured
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


def calibrate(float_path: Path, npz: Path, out: Path, bits: int, args: argparse.Namespace, target=None,
              cache: Path | None = None):
    from qdeploy.calib.data import DataConfig
    from qdeploy.pipeline import CalibrateConfig, calibrate_model

    _, gain, preset, opts = MODELS[args.model]
    data = DataConfig(source=npz, value_range="0-255" if gain == 255 else "0-1")  # the range the target reads
    t = time.perf_counter()
    result = calibrate_model(CalibrateConfig(model=float_path, output=out, data=data,
                                             method=args.method, preset=preset, threads=args.threads, target=target,
                                             preset_options={**opts, "bits": bits}, cache=cache))
    return result, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--model", default="abpn-x3", choices=sorted(MODELS))
    ap.add_argument("--method", default="mse")
    ap.add_argument("--budget", type=float, default=0.1, help="Y-PSNR loss budget in dB (held-out split)")
    ap.add_argument("--heldout-crops", type=int, default=24)
    ap.add_argument("--crop", type=int, default=48, help="held-out LR crop size")
    ap.add_argument("--sets", default="Set5")
    ap.add_argument("--max-images", type=int, default=None, help="first N images of each test set")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/mixed_precision_abpn"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--low-bits", type=int, default=4, help="lowest bits the search starts from (W{b}A{b})")
    args = ap.parse_args()
    sr = args.shared / "sr"
    if not (sr / "train").is_dir():
        sys.exit(f"needs the SR data at {sr}")
    write(run(args, sr), args)


def run(args: argparse.Namespace, sr: Path) -> dict:
    """Uniform W8A8, W4A4 (and W{low}A{low}), then ``calibrate --bits W{low}A{low} --target-loss`` (the product
    path) at the budget."""
    from qdeploy.analyze.search import PrecisionTarget, model_size_bytes
    from qdeploy.analyze.target import TargetConfig
    from qdeploy.export import ExportConfig, export_model
    from qdeploy.graph.io import load_model
    from qdeploy.sr.evaluate import SREvalConfig, evaluate_sr
    from qdeploy.sr.heldout import sr_crops

    scale, gain, _, _ = MODELS[args.model]
    bsd = sorted((sr / "train" / "BSD200").glob("*.png"))
    held = bsd[-HELD_OUT:]
    calib_lr, _ = sr_crops([f for f in sorted(sr.glob("train/*/*.png")) if f not in held], 32, 64, scale, gain,
                           seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        held_dir = work / "heldout_hr"  # links, not copies: the data stays in ../shared
        held_dir.mkdir()
        for f in held:
            (held_dir / f.name).symlink_to(f.resolve())
        float_path = work / "float.onnx"
        export_model(ExportConfig(spec=args.model, output=float_path, input_shapes=((1, 3, 64, 64),),
                                  dynamic_hw=True))
        npz = work / "calib.npz"
        np.savez(npz, input=calib_lr)
        w8, w8_s = calibrate(float_path, npz, work / "w8a8.onnx", 8, args)
        w4, w4_s = calibrate(float_path, npz, work / "w4a4.onnx", 4, args)
        low, low_s = (w4, w4_s) if args.low_bits == 4 else calibrate(
            float_path, npz, work / f"w{args.low_bits}a{args.low_bits}.onnx", args.low_bits, args)
        target = TargetConfig(PrecisionTarget("loss", args.budget), held_dir, scale, args.heldout_crops, args.crop)
        # the W4A4 ranges are reused from its cache (same observer, same data): the search run adds only the
        # 8-bit bounds for raised tensors, the sensitivity analysis and the search
        mixed, mixed_s = calibrate(float_path, npz, work / "mixed.onnx", args.low_bits, args, target,
                                   cache=low.cache)
        mixed_s += low_s
        plan, analysis = mixed.plan, mixed.analysis
        paths = [float_path, w8.output, w4.output] + ([low.output] if low is not w4 else []) + [mixed.output]
        psnr = {}
        for ds in args.sets.split(","):
            config = SREvalConfig(dataset=sr / ds, scale=scale, value_range=int(gain), threads=args.threads,
                                  graph_optimization="basic", max_images=args.max_images)
            report = evaluate_sr(paths, config)
            psnr[ds] = [row.psnr_y for row in report.models]
        sizes = [model_size_bytes(load_model(p)) for p in paths[:-1]] + [plan.size_bytes]
        labels = ["float", "uniform W8A8", "uniform W4A4"] + (
            [f"uniform W{args.low_bits}A{args.low_bits}"] if low is not w4 else [])
        return {"model": args.model, "method": args.method, "budget_db": args.budget,
                "labels": [*labels, f"mixed from W{args.low_bits}A{args.low_bits} (≤{args.budget} dB held-out)"],
                "psnr": psnr, "size_bytes": sizes,
                "calib_s": [0.0, w8_s, w4_s] + ([low_s] if low is not w4 else []) + [mixed_s],
                "analysis_s": analysis.timings.get("total_s", 0.0), "search_s": plan.seconds,
                "tensors": len(analysis.tensors), "plan": plan.to_dict(),
                "top5": [t.name for t in analysis.tensors[:5]]}


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
