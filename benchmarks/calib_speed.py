"""Calibration speed: qdeploy's end-to-end ``calibrate_model`` vs ONNX Runtime's ``quantize_static``.

For each zoo model (float export with dynamic H/W) and each thread count, the same N random crops of the
SR training images are calibrated by qdeploy (every ``--methods`` entry, preset ort-cpu-int8, from an
.npz of the crops) and by ORT's ``quantize_static`` (MinMax, Percentile, Entropy; QDQ, per-channel, as in
``benchmarks/_ort_baseline.py``, pre-processing included) on the same feeds. Every timing is a fresh
process pinned to ``threads`` cores (ORT's calibrator takes no thread option; the pin bounds both),
timed around the call only (imports done first), and the runs are interleaved A B A B per repeat so
machine drift hits both sides alike. Timings on a busy machine are not measurements: run it idle.

    python benchmarks/calib_speed.py --repeats 3 --threads 1,2 --out benchmarks/results/calib_speed

Ratios: ``ours / ORT`` for the same-named method, and for every method ``ours / ORT MinMax`` (its
default) and ``ours / ORT Percentile`` (its histogram calibrator, the closest in work to mse and dobi).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODELS = {"abpn-x3": 96, "swinir-light-x2": 64, "imdn-x2": 64}
"""Zoo models and their crop size (ABPN is calibrated on 96x96, the others as in their benchmarks)."""

ORT_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}
"""qdeploy method -> ORT CalibrationMethod of the same idea."""

ORT_HISTOGRAM_CHUNK = 4
"""ORT's histogram calibrators (Percentile, Entropy) get the feeds 4 at a time, merged by ORT's own
histogram collector: fed all 32 at once they hold every activation of every sample and SwinIR-light's
exceeded this machine's memory (the process was killed). qdeploy streams on its own."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--methods", default="minmax,percentile,mse,entropy,dobi")
    ap.add_argument("--threads", default="1,2", help="comma list of thread counts (cores each run is pinned to)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--crops", type=int, default=32)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/sr/train")
    ap.add_argument("--work", type=Path, default=None, help="keep exports and crops here (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/calib_speed"))
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(_work(json.loads(args.worker))))
        return
    if not args.data.is_dir():
        sys.exit(f"needs the SR training images at {args.data}")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        runs = _run_all(args, work)
    record = _record(args, runs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    table = _markdown(record)
    args.out.with_suffix(".md").write_text(table)
    print(table)


def _run_all(args: argparse.Namespace, work: Path) -> list[dict]:
    """Every timing, interleaved: per repeat, per model and thread count, ours then ORT per method."""
    from qdeploy_models.zoo import ZOO

    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in ZOO.names()]
    if unknown:
        print(f"skipping models not in the zoo: {', '.join(unknown)}", file=sys.stderr)
    prepared = {m: _prepare(m, ZOO.get(m), args, work) for m in models if m not in unknown}
    methods = [m for m in args.methods.split(",") if m]
    runs: list[dict] = []
    for repeat in range(args.repeats):
        for model, (onnx_path, npz, value_range) in prepared.items():
            for threads in (int(t) for t in args.threads.split(",")):
                for method in methods:
                    jobs = [("qdeploy", method)] + ([("ort", ORT_METHODS[method])] if method in ORT_METHODS else [])
                    for tool, name in jobs:
                        job = {"tool": tool, "method": name, "model": str(onnx_path), "npz": str(npz),
                               "threads": threads, "work": str(work), "value_range": value_range}
                        got = _spawn(job)
                        runs.append({"model": model, "threads": threads, "tool": tool, "method": name,
                                     "repeat": repeat, "seconds": got["seconds"], "note": got["note"],
                                     "peak_mb": got.get("peak_mb")})
                        print(f"{model} t={threads} {tool:7s} {name:10s} {got['seconds']:7.2f} s {got['note']}",
                              file=sys.stderr)
    return runs


def _prepare(name: str, entry: object, args: argparse.Namespace, work: Path) -> tuple[Path, Path, str]:
    """Export the zoo model (dynamic H/W) and write the crops both sides are fed; cached in ``work``."""
    from qdeploy.export import ExportConfig, export_model

    onnx_path = work / name / "model.onnx"
    if not onnx_path.exists():
        export_model(ExportConfig(spec=name, output=onnx_path, input_shapes=((1, 3, 64, 64),), dynamic_hw=True))
    hi = entry.input_range[1]  # type: ignore[attr-defined]
    scale = 255.0 if hi > 1.5 else 1.0
    npz = work / name / f"crops{args.crops}.npz"
    if not npz.exists():
        np.savez(npz, input=_crops(args.data, args.crops, MODELS[name], scale))
    return onnx_path, npz, "0-255" if scale > 1 else "0-1"


def _crops(train: Path, n: int, size: int, scale: float, seed: int = 0) -> np.ndarray:
    """``n`` random ``size`` x ``size`` RGB crops of distinct training images, (n, 3, size, size) float32."""
    from PIL import Image

    files = sorted(p for p in train.rglob("*.png"))
    rng = np.random.default_rng(seed)
    crops = []
    for i in rng.permutation(len(files)):
        img = np.asarray(Image.open(files[i]).convert("RGB"))
        if min(img.shape[:2]) < size:
            continue
        y, x = rng.integers(img.shape[0] - size + 1), rng.integers(img.shape[1] - size + 1)
        crops.append(img[y : y + size, x : x + size].transpose(2, 0, 1))
        if len(crops) == n:
            break
    return (np.stack(crops).astype(np.float32) * np.float32(scale / 255.0)).astype(np.float32)


def _spawn(job: dict) -> dict:
    """Run one timed job in a fresh process: ``{"seconds": wall seconds around the call only, "note": ...}``."""
    env = {**os.environ, "OMP_NUM_THREADS": str(job["threads"])}
    out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], env=env, check=False,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{job['tool']} {job['method']} on {job['model']} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _work(job: dict) -> dict:
    """Worker process: pin to ``threads`` cores, import everything, then time one calibration."""
    cores = sorted(os.sched_getaffinity(0))[: job["threads"]] if hasattr(os, "sched_getaffinity") else []
    if cores:
        os.sched_setaffinity(0, cores)
    out = Path(job["work"]) / f"{job['tool']}_{job['method']}_{os.getpid()}.qdq.onnx"
    note = ""
    if job["tool"] == "ort":
        import onnxruntime.quantization  # noqa: F401 - imported before timing

        sys.path.insert(0, str(Path(__file__).parent))
        from generality import ort_histogram_chunks

        arr = np.load(job["npz"])["input"]
        feeds = [{"input": arr[i : i + 1]} for i in range(len(arr))]
        chunk = ORT_HISTOGRAM_CHUNK if job["method"] in ("Percentile", "Entropy") else None
        t = time.perf_counter()
        with ort_histogram_chunks(chunk):
            note = _ort(Path(job["model"]), out, feeds, job["method"])
    else:
        import dataclasses

        from qdeploy.calib.data import DataConfig
        from qdeploy.pipeline import CalibrateConfig, calibrate_model

        fields = {f.name for f in dataclasses.fields(CalibrateConfig)}
        extra = {"verify": False} if "verify" in fields else {}
        config = CalibrateConfig(model=Path(job["model"]), output=out, data=DataConfig(source=Path(job["npz"])),
                                 method=job["method"], threads=job["threads"], **extra)
        t = time.perf_counter()
        calibrate_model(config)
    seconds = time.perf_counter() - t
    for p in out.parent.glob(out.name.removesuffix(".onnx") + "*"):
        p.unlink(missing_ok=True)
    import resource

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    return {"seconds": seconds, "cores": cores, "note": note, "peak_mb": peak_mb}


def _ort(model: Path, out: Path, feeds: list[dict[str, np.ndarray]], method: str) -> str:
    """``benchmarks/_ort_baseline.ort_quantize_static``; where ORT's pre-processing fails (its symbolic
    shape inference gives up on SwinIR), the same call with ``skip_symbolic_shape=True``, as ORT's
    documentation suggests. Returns which one ran (timed either way: a failed attempt is work too)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from _ort_baseline import ort_quantize_static

    try:
        ort_quantize_static(model, out, feeds, method)
        return ""
    except Exception as exc:  # ORT raises a bare Exception ("Incomplete symbolic shape inference")
        failed = f"quant_pre_process failed ({str(exc)[:60]}); reran it with skip_symbolic_shape=True"
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = out.with_name(out.stem + ".pre.onnx")
    quant_pre_process(str(model), str(pre), skip_symbolic_shape=True)
    quantize_static(str(pre), str(out), _Reader(feeds), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=getattr(CalibrationMethod, method))
    pre.unlink(missing_ok=True)
    return failed


class _Reader:
    """ORT's CalibrationDataReader interface over a list of feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._it = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def _record(args: argparse.Namespace, runs: list[dict]) -> dict:
    """Medians per (model, threads, tool, method) and the ratios, with what produced them."""
    import onnxruntime

    median: dict[str, float] = {}
    peak: dict[str, float] = {}
    for key in {(r["model"], r["threads"], r["tool"], r["method"]) for r in runs}:
        mine = [r for r in runs if (r["model"], r["threads"], r["tool"], r["method"]) == key]
        median["|".join(map(str, key))] = statistics.median(r["seconds"] for r in mine)
        peak["|".join(map(str, key))] = max(r.get("peak_mb") or 0.0 for r in mine)
    return {"command": "python " + " ".join(sys.argv), "crops": args.crops, "repeats": args.repeats,
            "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "onnxruntime": onnxruntime.__version__, "median_s": median, "peak_mb": peak,
            "ort_histogram_chunk": ORT_HISTOGRAM_CHUNK, "runs": runs}


def _markdown(record: dict) -> str:
    med = record["median_s"]
    keys = sorted({tuple(k.split("|")[:2]) for k in med}, key=lambda k: (k[0], int(k[1])))
    lines = ["# Calibration time: qdeploy calibrate_model vs ORT quantize_static", "",
             f"Command: `{record['command']}`", "",
             f"{record['crops']} crops, median of {record['repeats']} interleaved runs, each a fresh process pinned "
             f"to the thread count; onnxruntime {record['onnxruntime']}, {record['cpus']} CPUs.", "",
             f"ORT's Percentile and Entropy calibrators are fed {record.get('ort_histogram_chunk')} samples per call "
             "(its own histogram merge): all 32 at once exceeded this machine's memory on SwinIR-light. "
             "Peak MB = the process's peak resident memory (imports and model included).", "",
             "| model | threads | method | qdeploy s | ORT same s | ratio same | ratio vs ORT MinMax | "
             "ratio vs ORT Percentile | qdeploy peak MB | ORT same peak MB |", "|---" * 10 + "|"]
    for model, threads in keys:
        ort = {m: med.get(f"{model}|{threads}|ort|{m}") for m in ORT_METHODS.values()}
        for k in sorted(k for k in med if k.startswith(f"{model}|{threads}|qdeploy|")):
            method = k.split("|")[3]
            ours, same = med[k], ort.get(ORT_METHODS.get(method, ""))
            peak = record.get("peak_mb", {})
            same_peak = peak.get(f"{model}|{threads}|ort|{ORT_METHODS.get(method, '')}")
            cells = [_fmt(ours), _fmt(same), _ratio(ours, same), _ratio(ours, ort["MinMax"]),
                     _ratio(ours, ort["Percentile"]), _mb(peak.get(k)), _mb(same_peak)]
            lines.append(f"| {model} | {threads} | {method} | " + " | ".join(cells) + " |")
    notes = sorted({f"{r['model']}: ORT {r['note']}" for r in record["runs"] if r.get("note")})
    return "\n".join(lines + ([""] + [f"- {n}" for n in notes] if notes else [])) + "\n"


def _fmt(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds:.2f}"


def _mb(value: float | None) -> str:
    return "—" if not value else f"{value:.0f}"


def _ratio(a: float, b: float | None) -> str:
    return "—" if not b else f"{a / b:.2f}"


if __name__ == "__main__":
    main()
