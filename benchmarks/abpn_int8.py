"""ABPN x3 INT8: qdeploy's observers and presets vs ONNX Runtime's ``quantize_static``, side by side.

Same float ONNX model, same calibration data (LR crops of the T91+BSD200 *training* images, never a test
set), then for every variant:
  * Y-PSNR on Set5 / Set14 / B100 (standard protocol) through ORT's real integer kernels
    (ORT_ENABLE_ALL) and through plain Q/DQ math (ORT_DISABLE_ALL), delta vs float;
  * output SQNR vs the float model on Set5;
  * ORT-CPU latency ratio INT8/FP32 at 1x3x360x640 with 2 threads, timed interleaved (A B A B) with
    the float model in the same run, median of per-round ratios.

    python benchmarks/abpn_int8.py --shared ../shared/data --out benchmarks/results/abpn_int8
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _ort_baseline import ort_quantize_static

QDQ_VARIANTS = [  # (label, method, preset, preset overrides)
    ("qdeploy minmax / ort-cpu-int8", "minmax", "ort-cpu-int8", {}),
    ("qdeploy percentile / ort-cpu-int8", "percentile", "ort-cpu-int8", {}),
    ("qdeploy entropy / ort-cpu-int8", "entropy", "ort-cpu-int8", {}),
    ("qdeploy mse / ort-cpu-int8", "mse", "ort-cpu-int8", {}),
    ("qdeploy mse / ort-cpu-int8, int8 weights + avoid_pair_saturation", "mse", "ort-cpu-int8",
     {"weight_dtype": "int8", "avoid_pair_saturation": True}),
    ("qdeploy mse / ort-cpu-int8, full_integer off", "mse", "ort-cpu-int8", {"full_integer": False}),
    ("qdeploy minmax / tensorrt-int8", "minmax", "tensorrt-int8", {}),
    ("qdeploy mse / tensorrt-int8", "mse", "tensorrt-int8", {}),
    ("qdeploy mse / tensorrt-int8, no input/ReLU shift", "mse", "tensorrt-int8", {"shift_one_sided": False}),
]
ORT_VARIANTS = [("ORT quantize_static MinMax", "MinMax", False), ("ORT quantize_static Entropy", "Entropy", False),
                ("ORT quantize_static Percentile", "Percentile", False),
                ("ORT quantize_static MinMax reduce_range", "MinMax", True)]


def calibration_crops(train_dir: Path, n: int, size: int, seed: int = 0) -> np.ndarray:
    """``n`` random ``size``x``size`` crops of bicubic-LR training images (N, 3, size, size), 0..255 float32."""
    from PIL import Image

    from qdeploy.sr.imresize import bicubic_downscale

    rng = np.random.default_rng(seed)
    files = [f for f in sorted(train_dir.glob("*/*.png")) if min(Image.open(f).size) >= 3 * size]
    picks = rng.choice(len(files), size=n, replace=len(files) < n)
    crops = []
    for i in picks:
        lr = bicubic_downscale(np.array(Image.open(files[i]).convert("RGB")), 3)
        y = rng.integers(lr.shape[0] - size + 1)
        x = rng.integers(lr.shape[1] - size + 1)
        crops.append(lr[y:y + size, x:x + size].transpose(2, 0, 1))
    return np.stack(crops).astype(np.float32)


def export_float(work: Path) -> Path:
    from qdeploy.export import ExportConfig, export_model

    out = work / "abpn_x3.onnx"
    export_model(ExportConfig(spec="abpn-x3", output=out, input_shapes=((1, 3, 64, 64),), dynamic_hw=True))
    return out


def build_variants(float_path: Path, crops: np.ndarray, work: Path) -> dict[str, dict]:
    from qdeploy.calib.data import DataConfig
    from qdeploy.pipeline import CalibrateConfig, calibrate_model

    npz = work / "calib.npz"
    np.savez(npz, input=crops)
    variants: dict[str, dict] = {}
    for k, (label, method, preset, opts) in enumerate(QDQ_VARIANTS):
        out = work / f"v{k}_{method}_{preset}.qdq.onnx"
        t = time.perf_counter()
        calibrate_model(CalibrateConfig(model=float_path, output=out, data=DataConfig(source=npz), method=method,
                                        preset=preset, preset_options=opts, threads=2))
        variants[label] = {"path": out, "calib_s": time.perf_counter() - t, "kind": preset}
    feeds = [{"input": crops[i:i + 1]} for i in range(len(crops))]
    for label, method, rr in ORT_VARIANTS:
        out = work / f"ort_{method}{'_rr' if rr else ''}.qdq.onnx"
        t = time.perf_counter()
        ort_quantize_static(float_path, out, feeds, method, reduce_range=rr)
        variants[label] = {"path": out, "calib_s": time.perf_counter() - t, "kind": "ort-cpu"}
    return variants


def sr_psnr(paths: list[Path], dataset: Path, graph_optimization: str) -> list[float]:
    from qdeploy.sr.evaluate import SREvalConfig, evaluate_sr

    report = evaluate_sr(paths, SREvalConfig(dataset=dataset, scale=3, value_range=255, threads=2,
                                             graph_optimization=graph_optimization))
    return [row.psnr_y for row in report.models]


def output_sqnr(float_path: Path, paths: list[Path], dataset: Path) -> list[float]:
    from qdeploy.backends import SessionOptions, get_backend
    from qdeploy.evaluate.metrics import sqnr_db
    from qdeploy.sr.dataset import load_sr_dataset

    pairs = load_sr_dataset(dataset, 3)
    feeds = [{"input": p.lr.transpose(2, 0, 1)[None].astype(np.float32)} for p in pairs]
    backend = get_backend("ort-cpu")
    with backend.open(float_path, SessionOptions(threads=2)) as s:
        ref = np.concatenate([s.run(f)[s.outputs[0].name].ravel() for f in feeds])
    out = []
    for p in paths:
        with backend.open(p, SessionOptions(threads=2)) as s:
            out.append(sqnr_db(ref, np.concatenate([s.run(f)[s.outputs[0].name].ravel() for f in feeds])))
    return out


def latency_ratios(float_path: Path, paths: list[Path], rounds: int) -> list[float]:
    from qdeploy.evaluate.profile import ProfileConfig, profile_models

    ratios = []
    for p in paths:  # one interleaved float-vs-variant run per variant
        cfg = ProfileConfig(input_shapes=(1, 3, 360, 640), warmup=3, iterations=rounds, threads=2,
                            input_range=(0.0, 255.0))
        report = profile_models([float_path, p], cfg)
        ratios.append(report.models[1].ratio_vs_first)
    return ratios


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/abpn_int8"))
    ap.add_argument("--crops", type=int, default=64)
    ap.add_argument("--crop-size", type=int, default=96)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--sets", default="Set5,Set14,B100")
    args = ap.parse_args()
    sr = args.shared / "sr"
    if not (sr / "train").is_dir():
        sys.exit(f"needs the SR benchmark data at {sr} (Set5, Set14, B100, train/)")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        float_path = export_float(work)
        crops = calibration_crops(sr / "train", args.crops, args.crop_size)
        variants = build_variants(float_path, crops, work)
        labels = list(variants)
        paths = [variants[k]["path"] for k in labels]
        results: dict = {"float": {}, "variants": {k: {"calib_s": v["calib_s"], "kind": v["kind"]}
                                                    for k, v in variants.items()}}
        for ds in args.sets.split(","):
            for mode in ("all", "disable"):
                vals = sr_psnr([float_path, *paths], sr / ds, mode)
                results["float"][f"{ds}_{mode}"] = vals[0]
                for k, v in zip(labels, vals[1:]):
                    results["variants"][k][f"{ds}_{mode}"] = v
                print(f"{ds} {mode}: float {vals[0]:.3f}", flush=True)
        for k, v in zip(labels, output_sqnr(float_path, paths, sr / "Set5")):
            results["variants"][k]["sqnr_set5"] = v
        for k, v in zip(labels, latency_ratios(float_path, paths, args.rounds)):
            results["variants"][k]["latency_ratio"] = v
    write_tables(results, args)


def write_tables(results: dict, args: argparse.Namespace) -> None:
    sets = args.sets.split(",")
    head = ["variant", "calib s", "SQNR Set5 dB", "INT8/FP32 latency"]
    for ds in sets:
        head += [f"{ds} real kernels (Δ)", f"{ds} plain QDQ (Δ)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    fl = results["float"]
    row = ["float (FP32)", "-", "inf", "1.00"]
    for ds in sets:
        row += [f"{fl[f'{ds}_all']:.3f}", f"{fl[f'{ds}_disable']:.3f}"]
    lines.append("| " + " | ".join(row) + " |")
    for k, v in results["variants"].items():
        row = [k, f"{v['calib_s']:.1f}", f"{v['sqnr_set5']:.2f}", f"{v['latency_ratio']:.2f}"]
        for ds in sets:
            for mode in ("all", "disable"):
                row.append(f"{v[f'{ds}_{mode}']:.3f} ({v[f'{ds}_{mode}'] - fl[f'{ds}_{mode}']:+.3f})")
        lines.append("| " + " | ".join(row) + " |")
    table = "\n".join(lines)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))
    cmd = "python benchmarks/abpn_int8.py " + " ".join(sys.argv[1:])
    args.out.with_suffix(".md").write_text(f"# ABPN x3 INT8 (Y-PSNR dB, Δ vs float)\n\nCommand: `{cmd}`\n\n{table}\n")


if __name__ == "__main__":
    main()
