"""Sensitivity-analysis time on SwinIR-light x2 (every quantized tensor), with and without prefix reuse.

One float export, one W4A4 min-max calibration (lowbit-sim: 288 quantized tensors), 4 held-out LR crops
48x48 of BSD200 training images never used for calibration; then ``analyze_sensitivity`` with
``reuse_prefix`` on or off, one ORT thread. Run the two settings as two processes at once so that they
share the machine's state (the ratio is what to read, these machines are noisy):

    python benchmarks/analysis_time.py --reuse on  --out benchmarks/results/analysis_time_on &
    python benchmarks/analysis_time.py --reuse off --out benchmarks/results/analysis_time_off
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--reuse", choices=["on", "off"], default="on")
    ap.add_argument("--crops", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/analysis_time_on"))
    args = ap.parse_args()
    sr = args.shared / "sr"
    if not (sr / "train").is_dir():
        sys.exit(f"needs the SR data at {sr}")
    sys.path.insert(0, str(Path(__file__).parent))
    from swinir_lowbit import calibration_patches, export_float

    from qdeploy.analyze import AnalyzeConfig, analyze_sensitivity
    from qdeploy.calib.data import DataConfig
    from qdeploy.graph.io import load_model
    from qdeploy.pipeline import CalibrateConfig, calibrate_model
    from qdeploy.sr.heldout import sr_crops

    held = sorted((sr / "train" / "BSD200").glob("*.png"))[-8:]
    lr, _ = sr_crops(held, args.crops, 48, 2, 1.0, seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        float_path = export_float(work)
        np.savez(work / "calib.npz", input=calibration_patches(sr / "train", 32, 64, seed=0))
        calibrate_model(CalibrateConfig(model=float_path, output=work / "w4.onnx", method="minmax",
                                        data=DataConfig(source=work / "calib.npz"), preset="lowbit-sim",
                                        preset_options={"bits": 4}, threads=args.threads, batch_size=8))
        t = time.perf_counter()
        result = analyze_sensitivity(load_model(float_path), load_model(work / "w4.onnx"),
                                     [{"input": lr[i:i + 1]} for i in range(len(lr))],
                                     config=AnalyzeConfig(threads=args.threads, reuse_prefix=args.reuse == "on"))
        wall = time.perf_counter() - t
    record = {"reuse_prefix": args.reuse, "tensors": len(result.tensors), "crops": args.crops,
              "threads": args.threads, "wall_s": wall, "timings": result.timings,
              "ranking_top10": [t.name for t in result.tensors[:10]],
              "only_float_sqnr_db": {t.name: t.only_float_sqnr_db for t in result.tensors}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=1, default=str))
    print(json.dumps({k: v for k, v in record.items() if k != "only_float_sqnr_db"}, default=str))


if __name__ == "__main__":
    main()
