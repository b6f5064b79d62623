"""Does the default ``qdeploy calibrate`` hold up beyond ABPN? Every zoo family vs ORT and ModelOpt PTQ.

For each model (``--models``; a zoo entry or its weights file missing -> skipped with a note, re-run later
to fill it in) and each variant (``--variants``):

  * ``auto``: ``qdeploy calibrate MODEL.onnx --data BSD200 ...`` with NO method flag (``--method auto``,
    which checks itself on a held-out fifth of the data and repairs); its ``verify`` record is kept;
  * ``mse`` / ``percentile`` / ``minmax`` / ``entropy``: the same command with ``--method M`` (and the same
    ``--holdout`` so the very same calibration crops are used, unchecked);
  * ``ort-minmax`` / ``ort-percentile`` / ``ort-entropy``: ONNX Runtime ``quantize_static``
    (``_ort_baseline.py``: QDQ, per-channel int8 weights, uint8 activations);
  * ``modelopt``: NVIDIA ModelOpt ONNX PTQ, int8, its default calibration and op set (``_modelopt_baseline.py``).

Calibration feeds are identical for every tool: qdeploy's own reader on ``train/BSD200`` (HR photos as the
model's input, the default command's data), ``--crop`` (48 for SR, the classifier's own 32), 32 samples,
seed 0, held-out fifth excluded; the exact arrays are saved to ``calib.npz`` for ORT and ModelOpt.
Quality through ORT's real kernels (ORT_ENABLE_ALL): SR = Set5 Y-PSNR (``qdeploy eval sr``'s protocol,
``--color y`` for Y models), classifier = top-1 on its held-out crops (``scripts/train_cls.py``), top-1
agreement with float and logit SQNR. Calibration wall time: the tool's own call, same feeds, same threads
(qdeploy's includes auto's held-out check). Latency: INT8/FP32 on ORT CPU, interleaved A B A B, median of
per-round ratios. Timings taken on a loaded machine say so (``--timing-note``); ``--timing-only`` re-measures
calibration times and ratios of existing rows (the lead re-runs it on an idle machine).

    python benchmarks/generality.py --models abpn-x3,imdn-x2 --threads 1
    python benchmarks/generality.py --timing-only --timing-note "idle 2-core machine"
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from _modelopt_baseline import modelopt_quantize  # noqa: E402
from _ort_baseline import ort_quantize_static  # noqa: E402

MODELS = ("abpn-x3", "imdn-x2", "pan-x3", "esa-x4", "fsrcnn-y-x2", "tinycls", "swinir-light-x2")
SINGLE = ("mse", "percentile", "minmax", "entropy")
ORT = {"ort-minmax": "MinMax", "ort-percentile": "Percentile", "ort-entropy": "Entropy",
       "ort-minmax-rr": "MinMax"}  # -rr: reduce_range=True, ORT's advice for CPUs without VNNI
VARIANTS = ("auto", *SINGLE, *ORT, "modelopt")
# SwinIR on a 1-thread CPU: smaller timing input, fewer rounds; ORT's histogram calibrators keep every sample's
# activations of every tensor in memory (measured > 9 GB for 32 SwinIR crops, killed), so they get 4 at a time
SLOW = {"swinir-light-x2": {"timing_hw": 128, "rounds": 5, "ort_chunk": 4}}
NUM_SAMPLES = 32
SEED = 0
DEFAULT_NOTE = "under load: shared 2-core machine, other jobs running"


@dataclass(frozen=True)
class Spec:
    """How one zoo model is fed, scored and timed."""

    name: str
    kind: str  # "sr" | "cls"
    scale: int
    value_range: str  # "0-1" | "0-255"
    color: str  # "rgb" | "y"
    crop: int
    export_shape: tuple[int, ...]
    timing_shape: tuple[int, ...]
    rounds: int

    @property
    def input_range(self) -> tuple[float, float]:
        return (0.0, 255.0) if self.value_range == "0-255" else (0.0, 1.0)


def weights_file(name: str) -> Path | None:
    """The zoo entry's shipped weights file (None for a random-weights entry)."""
    from importlib import resources

    from qdeploy_models.zoo import get_entry

    weights = get_entry(name).weights
    return None if weights is None else Path(str(resources.files("qdeploy_models") / "weights" / weights))


def unfinished(name: str) -> str | None:
    """Why the model cannot be benchmarked yet (not in the zoo, weights missing or still training), or None."""
    from qdeploy_models.zoo import zoo_names

    if name not in zoo_names():
        return f"not in models/zoo.py yet ({name})"
    pt = weights_file(name)
    if pt is None or not pt.is_file():
        return f"weights file models/weights/{pt.name if pt else '?'} missing (not trained yet)"
    record = pt.with_suffix(".json")
    if not record.is_file() or record.stat().st_mtime + 60 < pt.stat().st_mtime:
        return f"training not finished (no models/weights/{record.name} newer than the weights)"
    return None


def model_spec(name: str, rounds: int) -> Spec | str:
    """The model's :class:`Spec`, or why it is skipped (see :func:`unfinished`)."""
    from qdeploy_models.zoo import get_entry

    reason = unfinished(name)
    if reason is not None:
        return reason
    entry = get_entry(name)
    shape = entry.default_input_shape
    value_range = "0-255" if entry.input_range[1] > 1.5 else "0-1"
    color = "y" if shape[1] == 1 else "rgb"
    if "-x" not in name:
        return Spec(name, "cls", 1, value_range, color, shape[-1], shape, shape, rounds)
    slow = SLOW.get(name, {})
    hw = slow.get("timing_hw", 256)
    return Spec(name, "sr", int(name.rsplit("-x", 1)[1]), value_range, color, 48, shape,
                (1, shape[1], hw, hw), slow.get("rounds", rounds))


# ---------------------------------------------------------------------------------------- artifacts


def export_float(spec: Spec, work: Path) -> Path:
    """The float ONNX export (dynamic H/W for SR), made once and kept in ``work``."""
    out = work / "float.onnx"
    if out.is_file():
        return out
    from qdeploy.export import ExportConfig, export_model

    export_model(ExportConfig(spec=spec.name, output=out, input_shapes=(spec.export_shape,),
                              dynamic_hw=spec.kind == "sr", threads=1))
    return out


def data_config(spec: Spec, data: Path) -> Any:
    """The calibration data exactly as the default ``qdeploy calibrate`` run reads it."""
    from qdeploy.calib.data import DataConfig
    from qdeploy.pipeline import AUTO_HOLDOUT

    return DataConfig(source=data, value_range=spec.value_range, color=spec.color, crop=spec.crop,
                      num_samples=NUM_SAMPLES, seed=SEED, holdout=AUTO_HOLDOUT)


def calibration_feeds(spec: Spec, float_path: Path, data: Path, work: Path) -> Path:
    """Save qdeploy's calibration samples (the same crops the CLI uses) as ``calib.npz`` for the other tools."""
    out = work / "calib.npz"
    if out.is_file():
        return out
    from qdeploy.backends import SessionOptions, get_backend
    from qdeploy.calib.data import iter_samples

    inputs = get_backend("ort-cpu").open(float_path, SessionOptions(threads=1)).inputs
    samples = list(iter_samples(data_config(spec, data), inputs))
    np.savez(out, **{k: np.concatenate([s[k] for s in samples]) for k in samples[0]})
    return out


def npz_feeds(npz: Path) -> list[dict[str, np.ndarray]]:
    with np.load(npz) as arrays:
        data = {k: arrays[k] for k in arrays.files}
    n = len(next(iter(data.values())))
    return [{k: v[i:i + 1] for k, v in data.items()} for i in range(n)]


# -------------------------------------------------------------------------------------- quantizers


def qdeploy_command(spec: Spec, float_path: Path, out: Path, method: str, data: Path, threads: int) -> list[str]:
    """The ``qdeploy calibrate`` command line of one variant (``auto`` = no method flag at all)."""
    from qdeploy.pipeline import AUTO_HOLDOUT

    cmd = ["qdeploy", "calibrate", str(float_path), "--data", str(data), "--crop", str(spec.crop),
           "--num-samples", str(NUM_SAMPLES), "--seed", str(SEED)]
    if spec.value_range == "0-255":
        cmd += ["--range", "0-255"]
    if spec.color == "y":
        cmd += ["--color", "y"]
    if method != "auto":  # same held-out fifth left out, so the same 32 crops as the default run
        cmd += ["--method", method, "--holdout", str(AUTO_HOLDOUT)]
    return [*cmd, "--threads", str(threads), "--json", "-o", str(out)]


def thread_env(threads: int) -> dict[str, str]:
    n = str(threads)
    return {**os.environ, "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n}


def run_qdeploy(cmd: list[str], threads: int) -> dict[str, Any]:
    """Run the CLI; its JSON summary plus the wall time of the whole process."""
    exe = Path(sys.executable).with_name("qdeploy")
    start = time.perf_counter()
    proc = subprocess.run([str(exe), *cmd[1:]], capture_output=True, text=True, env=thread_env(threads),
                          check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return {"error": " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])}
    result = json.loads(proc.stdout)
    return {"calib_s": result["seconds"], "process_s": wall, "method": result["method"],
            "verify": result.get("verify"), "summary": result.get("summary")}


@contextmanager
def ort_threads(threads: int) -> Iterator[None]:
    """Every ``onnxruntime.SessionOptions()`` made inside (ORT's calibrator's) uses ``threads`` threads."""
    import onnxruntime as ort

    base = ort.SessionOptions

    class _Options(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.intra_op_num_threads = threads
            self.inter_op_num_threads = 1

    ort.SessionOptions = _Options  # type: ignore[misc]
    try:
        yield
    finally:
        ort.SessionOptions = base  # type: ignore[misc]


@contextmanager
def ort_histogram_chunks(n: int | None) -> Iterator[None]:
    """ORT's histogram calibrators (Percentile, Entropy) collect ``n`` samples per call, merged by ORT's own
    histogram collector across calls, instead of holding all samples' activations at once."""
    if not n:
        yield
        return
    from onnxruntime.quantization import calibrate

    base = calibrate.HistogramCalibrater.collect_data

    class _Chunk:
        def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
            self.feeds = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    def chunked(self: Any, reader: Any) -> None:
        while True:
            chunk: list[dict[str, np.ndarray]] = []
            while len(chunk) < n and (feed := reader.get_next()) is not None:
                chunk.append(feed)
            if not chunk:
                return
            base(self, _Chunk(chunk))

    calibrate.HistogramCalibrater.collect_data = chunked
    try:
        yield
    finally:
        calibrate.HistogramCalibrater.collect_data = base


def run_ort(float_path: Path, out: Path, npz: Path, method: str, threads: int,
            reduce_range: bool = False, chunk: int | None = None) -> dict[str, Any]:
    feeds = npz_feeds(npz)
    skip = False
    chunk = chunk if method in ("Percentile", "Entropy") else None
    with ort_threads(threads), ort_histogram_chunks(chunk):
        start = time.perf_counter()
        try:
            ort_quantize_static(float_path, out, feeds, method, reduce_range=reduce_range)
        except Exception as exc:
            if "symbolic shape" not in str(exc):
                raise
            skip = True  # ORT's documented fallback: pre-process without symbolic shape inference
            start = time.perf_counter()
            ort_quantize_static(float_path, out, feeds, method, reduce_range=reduce_range, skip_symbolic_shape=True)
        seconds = time.perf_counter() - start
    import onnxruntime as ort

    return {"calib_s": seconds, "method": f"quantize_static {method}{' reduce_range' if reduce_range else ''}",
            "onnxruntime": ort.__version__, **({"pre_process": "skip_symbolic_shape=True"} if skip else {}),
            **({"calib_chunk": chunk} if chunk else {})}


def run_modelopt(float_path: Path, out: Path, npz: Path, threads: int) -> dict[str, Any]:
    rec = modelopt_quantize(float_path, out, npz, threads)
    if not rec.get("ok"):
        return {("skipped" if rec.get("skipped") else "error"): rec["reason"], "command": rec.get("command")}
    keep = ("version", "onnxruntime", "providers", "settings", "defaults", "command")
    return {"calib_s": rec["seconds"], "method": "modelopt int8 (default calibration)",
            **{k: rec.get(k) for k in keep}}


def quantize_variant(spec: Spec, variant: str, paths: dict[str, Path], data: Path, threads: int) -> dict[str, Any]:
    """Build one variant's QDQ model at ``paths['out']``; its record (times, method, verify, or error)."""
    out, float_path, npz = paths["out"], paths["float"], paths["npz"]
    if variant in ORT:
        return run_ort(float_path, out, npz, ORT[variant], threads, reduce_range=variant.endswith("-rr"),
                       chunk=SLOW.get(spec.name, {}).get("ort_chunk"))
    if variant == "modelopt":
        return run_modelopt(float_path, out, npz, threads)
    cmd = qdeploy_command(spec, float_path, out, variant, data, threads)
    return {**run_qdeploy(cmd, threads), "command": " ".join(cmd)}


# --------------------------------------------------------------------------------------- measuring


def sr_psnr(spec: Spec, path: Path, set5: Path, threads: int, graph_optimization: str) -> float:
    """Set5 Y-PSNR (``qdeploy eval sr`` protocol) at an ORT graph optimization level."""
    from qdeploy.sr.evaluate import SREvalConfig, evaluate_sr

    cfg = SREvalConfig(dataset=set5, scale=spec.scale, value_range=255 if spec.value_range == "0-255" else 1,
                       threads=threads, graph_optimization=graph_optimization, color=spec.color)
    return float(evaluate_sr([path], cfg).models[0].psnr_y)


def sr_quality(spec: Spec, path: Path, set5: Path, threads: int) -> dict[str, float]:
    """Set5 Y-PSNR through ORT's real kernels (ORT_ENABLE_ALL), and through plain Q/DQ math (DISABLE_ALL).

    Why both: the gap between them is what the CPU's integer kernels cost (e.g. u8s8 saturation without
    VNNI), apart from the calibration itself.
    """
    return {"psnr_y": sr_psnr(spec, path, set5, threads, "all"),
            "psnr_y_plain": sr_psnr(spec, path, set5, threads, "disable")}


def cls_logits(path: Path, xs: np.ndarray, threads: int) -> np.ndarray:
    from qdeploy.backends import SessionOptions, get_backend

    with get_backend("ort-cpu").open(path, SessionOptions(threads=threads, graph_optimization="all")) as s:
        name, out = s.inputs[0].name, s.outputs[0].name
        return np.concatenate([s.run({name: xs[i:i + 1]})[out] for i in range(len(xs))])


def cls_val(train: Path) -> tuple[np.ndarray, np.ndarray]:
    """The classifier's held-out crops and labels, as ``scripts/train_cls.py`` defines them."""
    sys.path.insert(0, str(REPO / "scripts"))
    import train_cls

    return train_cls.val_set(train_cls.load_images(train)[0])


def cls_quality(path: Path, float_path: Path, train: Path, threads: int) -> dict[str, float]:
    """Top-1 on held-out crops, top-1 agreement with float and logit SQNR vs float."""
    from qdeploy.evaluate.metrics import sqnr_db

    xs, ys = cls_val(train)
    logits = cls_logits(path, xs, threads)
    ref = logits if path == float_path else cls_logits(float_path, xs, threads)
    return {"top1": float((logits.argmax(1) == ys).mean()),
            "agreement": float((logits.argmax(1) == ref.argmax(1)).mean()),
            "sqnr_db": float(sqnr_db(ref.ravel(), logits.ravel())), "n_val": len(ys)}


def quality(spec: Spec, path: Path, float_path: Path, args: argparse.Namespace) -> dict[str, float]:
    if spec.kind == "sr":
        return sr_quality(spec, path, args.sr / "Set5", args.threads)
    return cls_quality(path, float_path, args.sr / "train", args.threads)


def latency_ratio(spec: Spec, float_path: Path, path: Path, threads: int) -> float:
    """INT8/FP32 latency on ORT CPU: interleaved A B A B rounds, median of per-round ratios."""
    from qdeploy.evaluate.profile import ProfileConfig, profile_models

    cfg = ProfileConfig(input_shapes=spec.timing_shape, warmup=3, iterations=spec.rounds, threads=threads,
                        input_range=spec.input_range)
    return float(profile_models([float_path, path], cfg).models[1].ratio_vs_first)


# ------------------------------------------------------------------------------------------- driver


def file_sha256(path: Path | None) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest() if path is not None else ""


def load_store(path: Path) -> dict[str, Any]:
    if path.is_file():
        return json.loads(path.read_text())
    return {"meta": {"commands": []}, "models": {}, "rows": {}}


def merge_store(store: dict[str, Any], other: dict[str, Any]) -> None:
    """Fold a parallel run's models, rows and commands into ``store`` (the other run's entries win)."""
    for name, rec in other["models"].items():
        if "skipped" not in rec or name not in store["models"]:
            store["models"][name] = rec
    store["rows"].update(other["rows"])
    store["meta"]["commands"] += [c for c in other["meta"]["commands"] if c not in store["meta"]["commands"]]


def save_store(store: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(store, indent=1, default=str) + "\n")
    tmp.replace(path)


def variant_paths(work: Path, variant: str, float_path: Path, npz: Path, sub: str = "") -> dict[str, Path]:
    """One folder per variant (qdeploy writes a manifest.json beside its output)."""
    folder = work / variant / sub
    folder.mkdir(parents=True, exist_ok=True)
    return {"out": folder / "model.qdq.onnx", "float": float_path, "npz": npz}


def run_row(spec: Spec, variant: str, paths: dict[str, Path], args: argparse.Namespace) -> dict[str, Any]:
    """Quantize, score and time one model x variant; a failure is recorded, not raised."""
    rec: dict[str, Any] = {"variant": variant, "threads": args.threads}
    try:
        rec |= quantize_variant(spec, variant, paths, args.data, args.threads)
        if "error" in rec or "skipped" in rec:
            return rec
        rec["path"] = str(paths["out"])
        rec["size_bytes"] = paths["out"].stat().st_size
        rec["quality"] = quality(spec, paths["out"], paths["float"], args)
        rec["latency_ratio"] = latency_ratio(spec, paths["float"], paths["out"], args.threads)
        rec["timing_shape"], rec["timing_note"] = list(spec.timing_shape), args.timing_note
    except Exception as exc:
        rec["error"] = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
    return rec


def prepare_model(spec: Spec, args: argparse.Namespace, store: dict[str, Any]) -> tuple[Path, Path]:
    """Float export, calibration feeds and the float quality record (each made once)."""
    work = args.work / spec.name
    work.mkdir(parents=True, exist_ok=True)
    sha = file_sha256(weights_file(spec.name))
    rec = store["models"].get(spec.name) or {}
    if rec.get("weights_sha256", sha) != sha:  # retrained since: every artifact and row of it is stale
        print(f"{spec.name}: weights changed, redoing its rows", flush=True)
        (work / "float.onnx").unlink(missing_ok=True)
        (work / "calib.npz").unlink(missing_ok=True)
        store["rows"] = {k: v for k, v in store["rows"].items() if not k.startswith(spec.name + "|")}
        rec = {}
    float_path = export_float(spec, work)
    npz = calibration_feeds(spec, float_path, args.data, work)
    if "float" not in rec:
        rec = {"spec": {k: getattr(spec, k) for k in spec.__dataclass_fields__}, "weights_sha256": sha,
               "float_path": str(float_path),
               "feeds": {"npz": str(npz), "samples": NUM_SAMPLES, "crop": spec.crop, "seed": SEED},
               "float": quality(spec, float_path, float_path, args)}
        store["models"][spec.name] = rec
    rec.setdefault("weights_sha256", sha)
    save_store(store, args.out.with_suffix(".json"))
    return float_path, npz


def run_model(name: str, args: argparse.Namespace, store: dict[str, Any]) -> None:
    spec = model_spec(name, args.rounds)
    if isinstance(spec, str):
        store["models"][name] = {"skipped": spec}
        print(f"{name}: skipped ({spec})", flush=True)
        return
    float_path, npz = prepare_model(spec, args, store)
    backfill(spec, store["models"][name], args)
    print(f"{name}: float {store['models'][name]['float']}", flush=True)
    for variant in args.variants:
        key = f"{name}|{variant}"
        old = store["rows"].get(key)
        if old is not None and "skipped" not in old and variant not in args.redo:
            if backfill(spec, old, args):
                save_store(store, args.out.with_suffix(".json"))
            continue
        paths = variant_paths(args.work / name, variant, float_path, npz)
        store["rows"][key] = run_row(spec, variant, paths, args)
        save_store(store, args.out.with_suffix(".json"))
        print(f"  {variant}: {row_line(store['rows'][key])}", flush=True)


def backfill(spec: Spec, rec: dict[str, Any], args: argparse.Namespace) -> bool:
    """Add what later versions measure to a row (or float record) made before: plain-Q/DQ PSNR, bicubic."""
    q = rec.get("quality") or rec.get("float")
    path = rec.get("path") or rec.get("float_path")
    if spec.kind != "sr" or q is None or path is None:
        return False
    changed = False
    if "psnr_y_plain" not in q:
        q["psnr_y_plain"] = sr_psnr(spec, Path(path), args.sr / "Set5", args.threads, "disable")
        changed = True
    if "float" in rec and "bicubic_psnr_y" not in q:
        q["bicubic_psnr_y"] = bicubic_psnr(spec, Path(path), args.sr / "Set5")
        changed = True
    return changed


def bicubic_psnr(spec: Spec, float_path: Path, set5: Path) -> float:
    """Set5 Y-PSNR of MATLAB-bicubic upscaling (the sanity baseline ``qdeploy eval sr`` always adds)."""
    from qdeploy.sr.evaluate import SREvalConfig, evaluate_sr

    cfg = SREvalConfig(dataset=set5, scale=spec.scale, value_range=255 if spec.value_range == "0-255" else 1,
                       threads=1, color=spec.color)
    return float(evaluate_sr([float_path], cfg).bicubic.psnr_y)


def row_line(row: dict[str, Any]) -> str:
    if "error" in row or "skipped" in row:
        return f"{'error' if 'error' in row else 'skipped'}: {row.get('error') or row.get('skipped')}"
    return f"{row['quality']} calib {row['calib_s']:.1f}s ratio {row['latency_ratio']:.2f}"


def retime(args: argparse.Namespace, store: dict[str, Any]) -> None:
    """``--timing-only``: re-measure calibration time and latency ratio of the existing rows."""
    for key, row in store["rows"].items():
        name, variant = key.split("|")
        if name not in args.models or variant not in args.variants or "path" not in row:
            continue
        spec = model_spec(name, args.rounds)
        if isinstance(spec, str):
            continue
        work = args.work / name
        paths = variant_paths(work, variant, work / "float.onnx", work / "calib.npz", sub="retime")
        if not args.ratio_only:
            fresh = quantize_variant(spec, variant, paths, args.data, args.threads)
            row |= {k: fresh[k] for k in ("calib_s", "process_s") if k in fresh}
        row["latency_ratio"] = latency_ratio(spec, paths["float"], Path(row["path"]), args.threads)
        row["timing_shape"], row["timing_note"] = list(spec.timing_shape), args.timing_note
        save_store(store, args.out.with_suffix(".json"))
        print(f"{key}: calib {row['calib_s']:.1f}s ratio {row['latency_ratio']:.2f}", flush=True)


# ------------------------------------------------------------------------------------------- report


def score(kind: str, q: dict[str, float]) -> float:
    """The headline metric: Set5 Y-PSNR (dB) for SR, held-out top-1 (%) for the classifier."""
    return q["psnr_y"] if kind == "sr" else 100.0 * q["top1"]


def fmt_quality(kind: str, q: dict[str, float]) -> str:
    if kind == "sr":
        return f"{q['psnr_y']:.3f}"
    return f"{100 * q['top1']:.1f}% (agree {100 * q['agreement']:.1f}%, SQNR {q['sqnr_db']:.1f})"


def verify_note(v: dict[str, Any] | None) -> str:
    """``auto``'s held-out check: before -> after, number of changes, whether the bar was met."""
    if not v:
        return "no verify record"
    def val(d: dict[str, Any]) -> str:
        return f"loss {d['loss_db']:.3f} dB" if d.get("loss_db") is not None else f"SQNR {d['sqnr_db']:.1f} dB"
    skipped = ", repair skipped (over auto's time budget)" if "repair_skipped" in v.get("timings", {}) else ""
    fast = v.get("faster")
    faster = "" if not fast else (f", pair-safe int8 weights on {fast['convs']} convs "
                                  f"{'kept' if fast['kept'] else 'tried, not kept'}")
    return (f"held-out {val(v['before'])} -> {val(v['after'])}, {len(v['changes'])} changes{skipped}{faster}, "
            f"{'met' if v['met'] else 'NOT met'} ({v['bar']})")


def row_note(row: dict[str, Any]) -> str:
    if "error" in row or "skipped" in row:
        return f"{'error' if 'error' in row else 'skipped'}: {row.get('error') or row.get('skipped')}"
    if row["variant"] == "auto":
        return verify_note(row.get("verify"))
    notes = []
    if "pre_process" in row:
        notes.append(f"ORT symbolic shape inference failed on this graph: pre-processed with {row['pre_process']}")
    if "calib_chunk" in row:
        notes.append(f"histograms collected {row['calib_chunk']} samples at a time (ORT's own merge; all 32 at "
                     "once exceeded the machine's memory)")
    return "; ".join(notes)


def best(rows: dict[str, dict[str, Any]], name: str, kind: str, variants: tuple[str, ...]) -> tuple[str, float] | None:
    """The variant among ``variants`` with the best headline metric, and that metric."""
    done = [(v, score(kind, rows[f"{name}|{v}"]["quality"])) for v in variants
            if "quality" in rows.get(f"{name}|{v}", {})]
    return max(done, key=lambda t: t[1]) if done else None


def delta_cell(found: tuple[str, float] | None, ref: float, label: bool) -> str:
    if found is None:
        return "-"
    text = f"{found[1] - ref:+.3f}"
    return f"{text} ({found[0]})" if label else text


def float_cell(kind: str, q: dict[str, float]) -> str:
    """The float score, with the bicubic baseline beside it for SR (a float model below it is under-trained)."""
    text = f"{score(kind, q):.3f}"
    if "bicubic_psnr_y" in q:
        below = " **below bicubic: under-trained**" if q["psnr_y"] < q["bicubic_psnr_y"] else ""
        text += f" (bicubic {q['bicubic_psnr_y']:.2f}{below})"
    return text


def summary_table(store: dict[str, Any]) -> list[str]:
    head = ["model", "metric", "float", "default (auto)", "best single method (picked on Set5)",
            "best ORT quantize_static", "ModelOpt", "auto calib s", "auto INT8/FP32", "auto's own held-out check"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = store["rows"]
    for name, info in store["models"].items():
        if "skipped" in info:
            lines.append(f"| {name} | - | - | - | - | - | - | - | - | skipped: {info['skipped']} |")
            continue
        kind = info["spec"]["kind"]
        ref = score(kind, info["float"])
        auto = rows.get(f"{name}|auto", {})
        cells = [delta_cell(best(rows, name, kind, ("auto",)), ref, False),
                 delta_cell(best(rows, name, kind, SINGLE), ref, True),
                 delta_cell(best(rows, name, kind, tuple(ORT)), ref, True),
                 delta_cell(best(rows, name, kind, ("modelopt",)), ref, False),
                 f"{auto['calib_s']:.1f}" if "quality" in auto else "-",
                 f"{auto['latency_ratio']:.2f}" if "quality" in auto else "-"]
        metric = "Set5 Y-PSNR dB (Δ)" if kind == "sr" else "top-1 % (Δ points)"
        note = verify_note(auto.get("verify")) if "quality" in auto else row_note(auto) if auto else "-"
        lines.append(f"| {name} | {metric} | {float_cell(kind, info['float'])} | " + " | ".join(cells)
                     + f" | {note} |")
    return lines


def timed(row: dict[str, Any]) -> str:
    """Short form of the row's timing note (the full notes are listed above the tables)."""
    note = row.get("timing_note", "")
    return "idle" if note.startswith("idle") else "under load" if note.startswith("under load") else note


def plain_delta(ref: dict[str, float], q: dict[str, float]) -> str:
    if "psnr_y_plain" not in q or "psnr_y_plain" not in ref:
        return "-"
    return f"{q['psnr_y_plain'] - ref['psnr_y_plain']:+.3f}"


def full_table(store: dict[str, Any]) -> list[str]:
    head = ["model", "variant", "quality", "Δ vs float", "Δ plain Q/DQ", "calib s", "INT8/FP32 latency",
            "timing input", "timed", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, info in store["models"].items():
        if "skipped" in info:
            continue
        kind = info["spec"]["kind"]
        ref = score(kind, info["float"])
        lines.append(f"| {name} | float | {fmt_quality(kind, info['float'])} | - | - | - | 1.00 | - | - | |")
        for variant in VARIANTS:
            row = store["rows"].get(f"{name}|{variant}")
            if row is None:
                continue
            if "quality" not in row:
                lines.append(f"| {name} | {variant} | - | - | - | - | - | - | - | {row_note(row)} |")
                continue
            shape = "x".join(str(d) for d in row["timing_shape"])
            lines.append(f"| {name} | {variant} | {fmt_quality(kind, row['quality'])} | "
                         f"{score(kind, row['quality']) - ref:+.3f} | {plain_delta(info['float'], row['quality'])} | "
                         f"{row['calib_s']:.1f} | "
                         f"{row['latency_ratio']:.2f} | {shape} | {timed(row)} | {row_note(row)} |")
    return lines


PROTOCOL = (
    "Calibration: the same 32 crops of `train/BSD200` for every tool (qdeploy's own reader, seed 0, the held-out "
    "fifth that `--method auto` keeps for its check excluded; the photos are fed as model input as the default "
    "command does; SR crops 48x48, the classifier 32x32), saved once to `calib.npz` for ORT and ModelOpt. "
    "Quality through ORT's real kernels (ORT_ENABLE_ALL): SR = Set5 Y-PSNR (`qdeploy eval sr` protocol; Y "
    "models: Y in, Y out), classifier = top-1 on its held-out crops (`scripts/train_cls.py`). Δ = variant "
    "minus float (dB, or top-1 points); 'Δ plain Q/DQ' = the same through ORT_DISABLE_ALL (Q/DQ math in "
    "float, no integer kernels), so the gap between the two Δ columns is what the CPU's integer kernels cost. "
    "calib s = the tool's own call (no interpreter start-up), 1 thread, same feeds; qdeploy's includes auto's "
    "held-out check and repair. INT8/FP32: ORT CPU latency ratio, interleaved A B A B, median of per-round "
    "ratios (1 thread). 'best single method' = best of `--method mse|percentile|minmax|entropy`; "
    "'best ORT' = best of quantize_static MinMax/Percentile/Entropy and MinMax with reduce_range (QDQ, "
    "per-channel int8 weights, uint8 activations; reduce_range = 7-bit weights, ORT's advice for CPUs without "
    "VNNI). 'picked on Set5' = the best measured on the test set itself: an oracle no user has. The classifier's "
    "calibration crops come from all of BSD200 (the default command's data), which holds the 10 photos its "
    "task is drawn from: unlabelled crops that may overlap its held-out region. SwinIR-light is timed at "
    "1x3x128x128 with 5 rounds (slow on a 1-thread CPU), the other SR models at 1xCx256x256, the classifier "
    "at its 1x3x32x32. On this CPU (AVX2 without VNNI) auto's last step measures the pair-safe int8 form of "
    "the group-1 convs (u8s8 kernels, `qdeploy.quant.kernel_forms`) and keeps it only if its check still passes; "
    "the auto rows name it where it was kept (rows calibrated before that step existed do not).")


def modelopt_section(store: dict[str, Any]) -> list[str]:
    """Which ModelOpt ran, with which settings, or why it did not."""
    rows = [r for k, r in store["rows"].items() if k.endswith("|modelopt")]
    ran = next((r for r in rows if "version" in r), None)
    failed = sorted({r.get("error") or r.get("skipped") for r in rows if "quality" not in r} - {None})
    lines = ["## ModelOpt", ""]
    if ran is not None:
        lines.append(f"nvidia-modelopt {ran['version']} (its own venv, onnxruntime-gpu {ran['onnxruntime']}, "
                     f"providers {ran['providers']}), `modelopt.onnx.quantization.quantize` with "
                     f"{ran['settings']}; everything else at its defaults {ran['defaults']} (int8 default "
                     "calibration = entropy; symmetric int8 activations, the TensorRT recipe). `calibration_eps` "
                     "= cpu because the machine has no GPU; `high_precision_dtype` = fp32 because its fp16 "
                     "default would turn the float rest of the graph into FP16 for TensorRT, which ORT CPU runs "
                     "through casts.")
    lines += [f"- not run: {reason}" for reason in failed]
    return [*lines, ""]


def write_report(store: dict[str, Any], out: Path) -> str:
    notes = sorted({r.get("timing_note", "") for r in store["rows"].values() if r.get("timing_note")})
    cmds = "\n".join(f"    {c}" for c in dict.fromkeys(store["meta"]["commands"]))
    text = "\n".join([
        "# Generality: default `qdeploy calibrate` vs single methods, ORT quantize_static and ModelOpt",
        "", "Commands (each run fills in the rows still missing):", "", cmds, "", PROTOCOL, "",
        f"Timings (calib s, INT8/FP32): {'; '.join(notes) or '-'}.", "", "## Summary", "", *summary_table(store),
        "", *modelopt_section(store), "## Every variant", "", *full_table(store), ""])
    out.with_suffix(".md").write_text(text)
    return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS), help="comma list, run in this order")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    ap.add_argument("--redo", default="", help="comma list of variants to re-run even when present")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=20, help="interleaved timing rounds per variant")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/generality"))
    ap.add_argument("--work", type=Path, default=Path("exports/generality"), help="models and feeds (kept)")
    ap.add_argument("--sr", type=Path, default=REPO.parent / "shared" / "data" / "sr")
    ap.add_argument("--timing-only", action="store_true", help="re-measure calib times and ratios of rows")
    ap.add_argument("--ratio-only", action="store_true", help="with --timing-only: latency ratios only")
    ap.add_argument("--timing-note", default=DEFAULT_NOTE)
    ap.add_argument("--report-only", action="store_true", help="rewrite the .md from the .json, run nothing")
    ap.add_argument("--merge", type=Path, nargs="*", default=[],
                    help="fold these JSON files (runs made in parallel with other --out) into --out, run nothing")
    args = ap.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    args.variants = [v for v in args.variants.split(",") if v]
    args.redo = {v for v in args.redo.split(",") if v}
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        ap.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    args.data = args.sr / "train" / "BSD200"
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.data.is_dir():
        sys.exit(f"needs the SR data at {args.sr} (train/BSD200, Set5)")
    import torch

    torch.set_num_threads(args.threads)
    store = load_store(args.out.with_suffix(".json"))
    if args.report_only or args.merge:
        for other in args.merge:
            merge_store(store, load_store(other))
        save_store(store, args.out.with_suffix(".json"))
        print(write_report(store, args.out))
        return
    store["meta"]["commands"].append(shlex.join(["python", "benchmarks/generality.py", *sys.argv[1:]]))
    if args.timing_only:
        retime(args, store)
    else:
        for name in args.models:
            run_model(name, args, store)
    save_store(store, args.out.with_suffix(".json"))
    print(write_report(store, args.out))


if __name__ == "__main__":
    main()
