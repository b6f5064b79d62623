"""Latency, memory and accuracy of several ONNX models on one or more backends, in one report.

Rows are ``model x precision x backend``. The first model, run on the first backend that works, is the
accuracy reference: every row's outputs are compared with it on the *same* inputs (SQNR, PSNR, cosine,
max abs error per output): natural images for image inputs by default, else seeded uniform random
values (see :mod:`qdeploy.evaluate.inputs`); the report says which (``ProfileReport.input_basis``).
Speed is compared within a backend: ``ratio_vs_first`` is a row's latency relative to the first model
on the same backend (the median per-round ratio when the models are timed interleaved; see
:mod:`qdeploy.evaluate.timing` for why).

A backend that cannot run here becomes *skipped* rows that say why, as long as one backend works; when
none works the backend's :class:`BackendUnavailableError` is raised as before. With ``fp16`` every
float32 model also gets an FP16 row: a copy rewritten by :func:`qdeploy.evaluate.precision.fp16_copy`
(float16 math, float32 inputs/outputs). A backend that cannot load that copy gets a skipped row too.
"""

from __future__ import annotations

import dataclasses
import gc
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from qdeploy.backends import BACKENDS, Session, SessionOptions
from qdeploy.errors import BackendUnavailableError, InputError, QDeployError
from qdeploy.evaluate.inputs import make_inputs, megapixels, natural_inputs, random_basis
from qdeploy.evaluate.machine import PeakRss, machine_info
from qdeploy.evaluate.metrics import compare
from qdeploy.evaluate.precision import (
    CPU_FP16_NOTE,
    LOWBIT_SIM_NOTE,
    Coverage,
    detect_precision,
    fp16_copy,
    int8_coverage,
)
from qdeploy.evaluate.profile_types import (
    LatencyStats,
    ModelProfile,
    ProfileConfig,
    ProfileReport,
    SkippedRow,
)
from qdeploy.evaluate.timing import ProgressFn, time_interleaved, time_sequential

__all__ = [
    "LatencyStats",
    "ModelProfile",
    "ProfileConfig",
    "ProfileReport",
    "ProgressFn",
    "SkippedRow",
    "profile_models",
]


def _match_outputs(ref: dict[str, np.ndarray], out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Map reference output names to this model's outputs: by name if all exist, else by position."""
    if set(ref) <= set(out):
        return {k: out[k] for k in ref}
    if len(ref) == len(out):
        return dict(zip(ref, out.values(), strict=True))
    raise InputError(f"outputs {sorted(out)} cannot be matched to the reference outputs {sorted(ref)}",
                     "profile models of the same network: the first model is the accuracy reference")


def _accuracy(ref: dict[str, np.ndarray], out: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    result = {}
    for name, value in _match_outputs(ref, out).items():
        if value.shape != ref[name].shape:
            raise InputError(f"output {name!r} has shape {value.shape}, the reference's is {ref[name].shape}",
                             "the first model is the accuracy reference; profile models of the same network")
        result[name] = compare(ref[name], value)
    return result


@dataclass(frozen=True)
class _Entry:
    """One model to profile: a file given by the user, or the FP16 copy of one (``variant="fp16"``)."""

    name: str
    source: Path
    run_path: Path
    precision: str
    coverage: dict[str, Coverage | None]
    variant: str | None = None

    def skipped(self, backend: str, reason: str) -> SkippedRow:
        return SkippedRow(self.name, str(self.source), backend, self.precision, reason, self.variant)


@dataclass(frozen=True)
class _Loaded:
    """What the first (memory-sampled) run of one model produced."""

    entry: _Entry
    create_s: float
    rss_increase: int | None
    accuracy: dict[str, dict[str, float]]


@dataclass(frozen=True)
class _Reference:
    """The accuracy reference: the first model's outputs on the first backend that ran, the feeds, and
    what the feeds are in words."""

    backend: str
    feeds: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    basis: str


def profile_models(models: list[Path], config: ProfileConfig,
                   progress: ProgressFn | None = None) -> ProfileReport:
    """Profile ``models`` on every backend of ``config.backends``; the first model is the reference.

    Per backend: an unmeasured run of the first model pays the runtime's one-time start-up costs (and,
    on the first backend, makes the shared inputs). Models are then loaded one at a time (session
    creation time, peak RSS growth, one inference compared with the reference outputs; the session is
    then deleted so the next model's memory is measured alone). Timing follows: interleaved over all
    open sessions when ``config.interleave`` and there are several models, else model by model.

    Raises :class:`InputError` for missing files, unknown backends, unusable shapes and mismatched
    outputs, and :class:`BackendUnavailableError` when none of the backends can run here.
    """
    if not models:
        raise InputError("no models to profile", "pass one or more .onnx files; the first is the reference")
    unavailable = _unavailable_backends(config.backends)
    paths = [_check_file(Path(m)) for m in models]
    notify = progress or (lambda stage, done, total: None)
    rows: list[ModelProfile] = []
    skipped: list[SkippedRow] = []
    ref: _Reference | None = None
    with tempfile.TemporaryDirectory(prefix="qdeploy-profile-") as tmp:
        entries = _entries(paths, config, Path(tmp))
        for name in config.backends:
            if name in unavailable:
                skipped += [e.skipped(name, unavailable[name]) for e in entries]
                continue
            measured, missed, ref = _profile_backend(name, entries, config, ref, notify)
            rows += measured
            skipped += missed
    if ref is None:  # unreachable: _unavailable_backends raised unless one backend could run
        raise BackendUnavailableError("no backend ran", "check `qdeploy profile --backend`")
    return ProfileReport(
        machine={**machine_info(ref.backend, config.threads), "backends": list(config.backends)},
        config=config,
        inputs={k: tuple(int(d) for d in v.shape) for k, v in ref.feeds.items()},
        timing_mode="interleaved" if config.interleave and len(entries) > 1 else "sequential",
        models=tuple(rows),
        skipped=tuple(skipped),
        reference_backend=ref.backend,
        input_basis=ref.basis,
    )


def _unavailable_backends(names: tuple[str, ...]) -> dict[str, str]:
    """``{name: why}`` for backends that cannot run here; raise when none can (unknown names: InputError)."""
    backends = {name: BACKENDS.get(name) for name in names}
    missing = {}
    for name, backend in backends.items():
        ok, why = backend.available()
        if not ok:
            missing[name] = why
    if len(missing) == len(names):
        first = names[0]
        if len(names) == 1:
            raise BackendUnavailableError(f"backend {first!r} is not available on this machine",
                                          missing[first])
        raise BackendUnavailableError(f"none of the backends {list(names)} is available on this machine",
                                      "; ".join(f"{n}: {why}" for n, why in missing.items()))
    return missing


def _check_file(path: Path) -> Path:
    if not path.is_file():
        what = "a directory" if path.is_dir() else "not found"
        raise InputError(f"model file {what}: {path}",
                         "pass .onnx files (relative paths are from the current directory)")
    return path


def _entries(paths: list[Path], config: ProfileConfig, tmp: Path) -> list[_Entry]:
    """The rows to measure per backend: each model, followed by its FP16 copy when ``config.fp16`` and
    the model is float32. Precision and INT8 coverage are read from the graph once, here."""
    from qdeploy.graph.io import load_model

    entries = []
    for i, path in enumerate(paths):
        try:
            model = load_model(path)
        except QDeployError:  # let the runtime report what is wrong with the file when it loads it
            entries.append(_Entry(path.name, path, path, "unknown", {}))
            continue
        precision = detect_precision(model)
        coverage = {b: int8_coverage(model, b) for b in config.backends}
        entries.append(_Entry(path.name, path, path, precision, coverage))
        if config.fp16 and precision == "fp32":
            copy = fp16_copy(path, tmp / f"{i}_{path.stem}.fp16.onnx")
            entries.append(_Entry(f"{path.name} (fp16)", path, copy, "fp16", {}, variant="fp16"))
        del model
    return entries


def _profile_backend(name: str, entries: list[_Entry], config: ProfileConfig, ref: _Reference | None,
                     notify: ProgressFn) -> tuple[list[ModelProfile], list[SkippedRow], _Reference]:
    """Load, check and time every entry on one backend -> (rows, skipped rows, the reference)."""
    backend = BACKENDS.get(name)
    base = SessionOptions(threads=config.threads, graph_optimization=config.graph_optimization)
    options = {e.name: dataclasses.replace(base, fp16=e.variant == "fp16") for e in entries}
    notify(f"preparing {entries[0].name} on {name}", 0, len(entries))
    feeds, basis = _prime_runtime(backend, entries[0].run_path, base, config, ref)
    interleave = config.interleave and len(entries) > 1
    loaded: list[_Loaded] = []
    skipped: list[SkippedRow] = []
    sequential_times: list[np.ndarray] = []
    for i, entry in enumerate(entries):
        notify(f"loading {entry.name} on {name}", i, len(entries))
        try:
            session, outputs, create_s, rss = _first_run(backend, entry.run_path, options[entry.name], feeds)
        except InputError as exc:
            if entry.variant is None:
                raise
            skipped.append(entry.skipped(name, f"{exc.message}"))
            continue
        try:
            ref = ref or _Reference(name, feeds, outputs, basis)
            loaded.append(_Loaded(entry, create_s, rss, _accuracy(ref.outputs, outputs)))
            if not interleave:
                sequential_times.append(time_sequential(session, feeds, config, len(entries), notify,
                                                        f"{entry.name} on {name}"))
        finally:
            session.close()
            del session, outputs
            gc.collect()
    if interleave:
        opens = [partial(backend.open, item.entry.run_path, options[item.entry.name]) for item in loaded]
        times = time_interleaved(opens, feeds, config, notify, f"timing on {name} (interleaved)")
        columns = [times[:, i] for i in range(times.shape[1])]
    else:
        columns = [t[:, 0] for t in sequential_times]
    return _rows(loaded, columns, feeds, interleave, name), skipped, ref


def _prime_runtime(backend: Any, path: Path, options: SessionOptions, config: ProfileConfig,
                   ref: _Reference | None) -> tuple[dict[str, np.ndarray], str]:
    """Make the shared feeds from the reference's inputs (unless ``ref`` has them) and run it once,
    unmeasured -> (feeds, what they are in words).

    The first session in a process pays one-time runtime costs (library init, thread pools, allocator
    arenas); without this run they would be charged to the reference's load time and memory only.
    Bad shapes and an unreadable ``--data`` fail here, before anything is timed.
    """
    session = backend.open(path, options)
    try:
        if ref is None:
            feeds, basis = _make_feeds(session.inputs, config)
        else:
            feeds, basis = ref.feeds, ref.basis
        session.run(feeds)
    finally:
        session.close()
        del session
        gc.collect()
    return feeds, basis


def _make_feeds(specs: list[Any], config: ProfileConfig) -> tuple[dict[str, np.ndarray], str]:
    """Seeded random feeds, with natural images on the image inputs unless ``config.inputs == "random"``."""
    feeds = make_inputs(specs, config.input_shapes, config.seed, config.input_range)
    if config.inputs == "random":
        return feeds, random_basis(config.input_range, config.seed)
    return natural_inputs(feeds, config.input_range, config.seed, config.data)


def _first_run(backend: Any, path: Path, options: SessionOptions,
               feeds: dict[str, np.ndarray]) -> tuple[Session, dict[str, np.ndarray], float, int | None]:
    """Open ``path`` and run it once under the RSS sampler -> (session, outputs, create_s, rss growth)."""
    with PeakRss() as rss:
        start = time.perf_counter()
        session = backend.open(path, options)
        create_s = time.perf_counter() - start
        try:
            outputs = session.run(feeds)
        except BaseException:
            session.close()
            raise
    return session, outputs, create_s, rss.increase_bytes


def _rows(loaded: list[_Loaded], columns: list[np.ndarray], feeds: dict[str, np.ndarray],
          interleaved: bool, backend: str) -> list[ModelProfile]:
    """Per-model rows from per-model run times (ms). Ratio vs the first model: the median of per-round
    ratios when interleaved (rounds are paired), else the ratio of the medians."""
    stats = [LatencyStats.from_ms(list(c)) for c in columns]
    mpix = megapixels(feeds)
    rows = []
    for i, item in enumerate(loaded):
        entry = item.entry
        ratio = float(np.median(columns[i] / columns[0])) if interleaved else stats[i].p50 / stats[0].p50
        per_s = 1000.0 / stats[i].mean
        cpu_fp16 = backend == "ort-cpu" and "fp16" in entry.precision
        notes = [CPU_FP16_NOTE] if cpu_fp16 else []
        notes += [LOWBIT_SIM_NOTE] if " sim" in entry.precision else []
        rows.append(ModelProfile(
            name=entry.name,
            path=str(entry.source),
            size_bytes=entry.run_path.stat().st_size,
            session_create_s=item.create_s,
            latency_ms=stats[i],
            ratio_vs_first=ratio,
            throughput_per_s=per_s,
            megapixels_per_s=None if mpix is None else mpix * per_s,
            peak_rss_increase_bytes=item.rss_increase,
            accuracy=item.accuracy,
            backend=backend,
            precision=entry.precision,
            coverage=entry.coverage.get(backend),
            variant=entry.variant,
            note="; ".join(notes),
        ))
    return rows
