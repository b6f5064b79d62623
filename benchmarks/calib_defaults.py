"""How many random crops does calibration need? Range stability vs sample count on ABPN x3.

Justifies ``qdeploy.calib.images.DEFAULT_NUM_SAMPLES``: for N random 96x96 crops (one per image) of the
291 SR training images (T91 + BSD200) and 3 seeds, each tensor's chosen range is compared with the
reference from all 291 images (mean over the seeds); the error is ``|hi - hi_ref| + |lo - lo_ref|`` over
the reference width. The knee is where more samples stop moving the ranges.

    python benchmarks/calib_defaults.py --data ../shared/data/sr/train --out benchmarks/results/calib_defaults
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

COUNTS = (8, 16, 32, 64, 128, 291)


def export_abpn(work: Path) -> Path:
    from qdeploy.export import ExportConfig, export_model

    out = work / "abpn_x3.onnx"
    export_model(ExportConfig(spec="abpn-x3", output=out, input_shapes=((1, 3, 64, 64),), dynamic_hw=True))
    return out


def ranges_for(model_path: Path, data: Path, method: str, n: int, seed: int, crop: int) -> dict[str, tuple]:
    """``{tensor: (lo, hi)}`` from ``method`` on ``n`` crops (ort-cpu-int8 grid, one thread)."""
    from qdeploy.backends import SessionOptions, get_backend
    from qdeploy.calib import make_observer
    from qdeploy.calib.collect import CollectConfig, collect_ranges
    from qdeploy.calib.data import DataConfig, iter_samples
    from qdeploy.graph.io import load_model
    from qdeploy.quant import get_preset, tensors_to_calibrate
    from qdeploy.quant.quantize import calibration_model

    model, quant = load_model(model_path), get_preset("ort-cpu-int8")
    specs = get_backend("ort-cpu").open(model, SessionOptions(threads=1)).inputs
    config = DataConfig(data, value_range="0-255", crop=crop, num_samples=n, seed=seed)
    got = collect_ranges(calibration_model(model, quant, None), tensors_to_calibrate(model, quant, None),
                         lambda: iter_samples(config, specs), lambda: make_observer(method), quant.activation,
                         CollectConfig(threads=1))
    return {k: (r.lo, r.hi) for k, r in got.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/sr/train")
    ap.add_argument("--methods", default="minmax,mse,entropy")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--crop", type=int, default=96)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/calib_defaults"))
    args = ap.parse_args()
    if not args.data.is_dir():
        sys.exit(f"needs the SR training images at {args.data}")
    t0 = time.perf_counter()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = export_abpn(Path(tmp))
        for method in args.methods.split(","):
            runs = {n: [ranges_for(model, args.data, method, n, s, args.crop) for s in range(args.seeds)]
                    for n in COUNTS}
            results[method] = _errors(runs)
            print(method, json.dumps(results[method]), flush=True)
    record = {"command": "python " + " ".join(sys.argv), "crop": args.crop, "seeds": args.seeds, "counts": COUNTS,
              "errors": results, "seconds": time.perf_counter() - t0}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    args.out.with_suffix(".md").write_text(_table(record))
    print(_table(record))


def _errors(runs: dict[int, list[dict[str, tuple]]]) -> dict[str, dict[str, float]]:
    """Per sample count: median and max over tensors and seeds of the relative range error."""
    ref_runs = runs[COUNTS[-1]]
    ref = {k: np.mean([r[k] for r in ref_runs], axis=0) for k in ref_runs[0]}
    out = {}
    for n, rs in runs.items():
        errs = [(abs(r[k][0] - ref[k][0]) + abs(r[k][1] - ref[k][1])) / (ref[k][1] - ref[k][0]) for r in rs for k in r]
        out[str(n)] = {"median": float(np.median(errs)), "max": float(np.max(errs))}
    return out


def _table(record: dict) -> str:
    methods = list(record["errors"])
    lines = [f"# Range stability vs sample count (ABPN x3, {record['crop']}x{record['crop']} crops, "
             f"{record['seeds']} seeds)", "", f"Command: `{record['command']}`", "",
             "Relative range error vs all 291 images (median / max over tensors and seeds):", "",
             "| samples | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for n in record["counts"]:
        cells = [f"{100 * record['errors'][m][str(n)]['median']:.1f}% / {100 * record['errors'][m][str(n)]['max']:.1f}%"
                 for m in methods]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
