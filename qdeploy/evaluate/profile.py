"""Latency, memory and accuracy of several ONNX models on one backend, measured side by side.

The first model is the reference (normally the float export); every other model is judged against it on
the *same* seeded random inputs: how much faster (median per-round latency ratio) and how far its outputs
are from the reference's (SQNR, PSNR, cosine, max abs error per output).

Why interleave: on a shared or thermally throttled machine, latency drifts by tens of percent over
seconds. Timing model A for 10 s and then model B for 10 s folds that drift into the A/B comparison. With
``interleave=True`` all sessions are open at once and each round runs every model once (A B, then B A,
...: the start rotates so no model always runs on a cache warmed by the same neighbour); drift hits all
models alike and the per-round ratio B/A cancels it. The median of those ratios is the robust speed-up.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qdeploy.backends import Session, SessionOptions, get_backend
from qdeploy.errors import InputError
from qdeploy.evaluate.inputs import Shapes, make_inputs, megapixels
from qdeploy.evaluate.machine import PeakRss, machine_info
from qdeploy.evaluate.metrics import compare

__all__ = [
    "LatencyStats",
    "ModelProfile",
    "ProfileConfig",
    "ProfileReport",
    "ProgressFn",
    "profile_models",
]

ProgressFn = Callable[[str, int, int | None], None]
"""``progress(stage, done, total)``; total is None when unknown (time-budget mode)."""

@dataclass(frozen=True)
class ProfileConfig:
    """How to profile. ``time_budget_s`` (when set) replaces ``iterations``: timing runs until the budget
    is spent (split evenly across models in sequential mode) and at least ``min_iterations`` times."""

    backend: str = "ort-cpu"
    input_shapes: Shapes = None
    warmup: int = 5
    iterations: int = 50
    time_budget_s: float | None = None
    min_iterations: int = 5
    threads: int | None = None
    seed: int = 0
    input_range: tuple[float, float] = (0.0, 1.0)
    graph_optimization: str = "all"
    interleave: bool = True

    def __post_init__(self) -> None:
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if self.iterations < 1 or self.min_iterations < 1:
            raise ValueError(f"iterations and min_iterations must be >= 1, got {self.iterations}, "
                             f"{self.min_iterations}")
        budget = self.time_budget_s
        if budget is not None and not (math.isfinite(budget) and budget > 0):
            raise ValueError(f"time_budget_s must be a positive number of seconds, got {self.time_budget_s}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {self.threads}")
        lo, hi = self.input_range
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"input_range must be finite (low, high) with low < high, got {lo, hi}")
        SessionOptions(graph_optimization=self.graph_optimization)  # validates the level name
        given = self.input_shapes
        if isinstance(given, list):  # a list shape is a common slip; store the documented tuple
            given = tuple(given)
        elif isinstance(given, dict):
            given = {name: tuple(shape) for name, shape in given.items()}
        object.__setattr__(self, "input_shapes", given)
        shapes = list(given.values()) if isinstance(given, dict) else [given] if given is not None else []
        for shape in shapes:
            if not shape or any(not isinstance(d, int) or d <= 0 for d in shape):
                raise ValueError(f"input shapes need positive int dims, got {self.input_shapes}")


@dataclass(frozen=True)
class LatencyStats:
    """Per-inference wall time in milliseconds after warm-up (percentiles by linear interpolation)."""

    p50: float
    p90: float
    p99: float
    mean: float
    min: float
    max: float
    std: float
    count: int

    @classmethod
    def from_ms(cls, samples_ms: list[float]) -> LatencyStats:
        """Summarize raw per-run times."""
        a = np.asarray(samples_ms, np.float64)
        p50, p90, p99 = (float(v) for v in np.percentile(a, [50, 90, 99]))
        return cls(p50, p90, p99, float(a.mean()), float(a.min()), float(a.max()), float(a.std()),
                   int(a.size))


@dataclass(frozen=True)
class ModelProfile:
    """One model's row: size, load time, latency, speed vs the reference, memory and accuracy.

    ``accuracy`` maps each reference output name to :func:`qdeploy.evaluate.metrics.compare` of this
    model's matching output against it (the reference against itself: SQNR/PSNR inf, cosine 1, error 0).
    ``peak_rss_increase_bytes``: growth of this *process's* RSS while the session was created and ran its
    first inference (see :class:`qdeploy.evaluate.machine.PeakRss`); None where RSS is unreadable.
    """

    name: str
    path: str
    size_bytes: int
    session_create_s: float
    latency_ms: LatencyStats
    ratio_vs_first: float
    throughput_per_s: float
    megapixels_per_s: float | None
    peak_rss_increase_bytes: int | None
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)

    def worst_accuracy(self) -> dict[str, float]:
        """The worst value of each metric over all outputs (what a one-line table shows)."""
        if not self.accuracy:
            return {}
        rows = list(self.accuracy.values())
        return {
            "sqnr_db": min(r["sqnr_db"] for r in rows),
            "psnr_db": min(r["psnr_db"] for r in rows),
            "cosine": min(r["cosine"] for r in rows),
            "max_abs_error": max(r["max_abs_error"] for r in rows),
        }


@dataclass(frozen=True)
class ProfileReport:
    """Everything ``qdeploy profile`` measured, with the machine and settings needed to compare runs.

    :meth:`to_dict` is strict JSON: non-finite floats (SQNR of identical outputs is inf) become the strings
    "inf", "-inf", "nan" rather than null, so "identical" stays distinct from "not measured".
    """

    machine: dict[str, Any]
    config: ProfileConfig
    inputs: dict[str, tuple[int, ...]]
    timing_mode: str
    models: tuple[ModelProfile, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe nested dict (the ``profile.json`` / ``--json`` schema)."""
        from qdeploy.evaluate.report import json_safe

        config = asdict(self.config)
        models = []
        for m in self.models:
            row = asdict(m)
            row["accuracy_worst"] = m.worst_accuracy()
            models.append(row)
        return json_safe({
            "format": "qdeploy-profile",
            "version": 1,
            "reference": self.models[0].name if self.models else None,
            "timing_mode": self.timing_mode,
            "machine": self.machine,
            "config": config,
            "inputs": {k: list(v) for k, v in self.inputs.items()},
            "models": models,
        })

    def to_markdown(self) -> str:
        """A GitHub-markdown table of the per-model rows plus the machine line."""
        from qdeploy.evaluate.report import render_markdown

        return render_markdown(self)


def _match_outputs(ref: dict[str, np.ndarray], out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Map reference output names to this model's outputs: by name if all exist, else by position."""
    if set(ref) <= set(out):
        return {k: out[k] for k in ref}
    if len(ref) == len(out):
        return dict(zip(ref, out.values()))
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
class _Loaded:
    """What the first (memory-sampled) run of one model produced."""

    path: Path
    create_s: float
    rss_increase: int | None
    accuracy: dict[str, dict[str, float]]


def profile_models(models: list[Path], config: ProfileConfig,
                   progress: ProgressFn | None = None) -> ProfileReport:
    """Profile ``models`` on ``config.backend``; the first model is the speed and accuracy reference.

    An unmeasured run of the first model makes the shared inputs and pays the runtime's one-time start-up
    costs (which would otherwise be charged to whichever model loads first). Models are then loaded one at a time (session creation time, peak RSS growth, one inference whose
    outputs are compared with the first model's; the session is then deleted so the next model's memory
    is measured alone). Timing follows: interleaved over all open sessions when ``config.interleave`` and
    there are several models (see the module docstring), else model by model. Raises
    :class:`InputError` for missing files, unusable shapes and mismatched outputs, and
    :class:`BackendUnavailableError` when the backend cannot run here.
    """
    if not models:
        raise InputError("no models to profile", "pass one or more .onnx files; the first is the reference")
    backend = get_backend(config.backend)
    paths = [_check_file(Path(m)) for m in models]
    options = SessionOptions(threads=config.threads, graph_optimization=config.graph_optimization)
    notify = progress or (lambda stage, done, total: None)
    interleave = config.interleave and len(paths) > 1
    notify(f"preparing {paths[0].name}", 0, len(paths))
    feeds = _prime_runtime(backend, paths[0], options, config)
    ref: dict[str, np.ndarray] | None = None
    loaded: list[_Loaded] = []
    sequential_times: list[np.ndarray] = []
    for i, path in enumerate(paths):
        notify(f"loading {path.name}", i, len(paths))
        session, outputs, create_s, rss = _first_run(backend, path, options, feeds)
        try:
            ref = outputs if ref is None else ref
            loaded.append(_Loaded(path, create_s, rss, _accuracy(ref, outputs)))
            if not interleave:
                times = _time_sequential(session, feeds, config, len(paths), notify, path.name)
                sequential_times.append(times)
        finally:
            session.close()
            del session, outputs
            gc.collect()
    if interleave:
        times = _time_interleaved(backend, paths, options, feeds, config, notify)
        columns = [times[:, i] for i in range(times.shape[1])]
    else:
        columns = [t[:, 0] for t in sequential_times]
    rows = _rows(loaded, columns, feeds, interleave)
    return ProfileReport(
        machine=machine_info(config.backend, config.threads),
        config=config,
        inputs={k: tuple(int(d) for d in v.shape) for k, v in feeds.items()},
        timing_mode="interleaved" if interleave else "sequential",
        models=tuple(rows),
    )


def _check_file(path: Path) -> Path:
    if not path.is_file():
        what = "a directory" if path.is_dir() else "not found"
        raise InputError(f"model file {what}: {path}",
                         "pass .onnx files (relative paths are from the current directory)")
    return path


def _prime_runtime(backend: Any, path: Path, options: SessionOptions,
                   config: ProfileConfig) -> dict[str, np.ndarray]:
    """Make the shared feeds from the reference's inputs and run it once, unmeasured.

    The first session in a process pays one-time runtime costs (library init, thread pools, allocator
    arenas); without this run they would be charged to the reference's load time and memory only.
    Bad shapes fail here, before anything is timed.
    """
    session = backend.open(path, options)
    try:
        feeds = make_inputs(session.inputs, config.input_shapes, config.seed, config.input_range)
        session.run(feeds)
    finally:
        session.close()
        del session
        gc.collect()
    return feeds


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


def _timed_run(session: Session, feeds: dict[str, np.ndarray]) -> float:
    start = time.perf_counter_ns()
    session.run(feeds)
    return (time.perf_counter_ns() - start) / 1e6


def _run_rounds(round_fn: Callable[[int], list[float]], config: ProfileConfig, budget_s: float | None,
                notify: ProgressFn, stage: str) -> np.ndarray:
    """Call ``round_fn(r)`` (one timed run per model) for the configured count or budget -> (rounds, models).

    The garbage collector is paused while timing so a collection does not land inside one model's run.
    """
    total = None if budget_s is not None else config.iterations
    rounds: list[list[float]] = []
    gc_enabled = gc.isenabled()
    gc.disable()
    start = time.perf_counter()
    try:
        while True:
            rounds.append(round_fn(len(rounds)))
            done = len(rounds)
            notify(stage, done, total)
            if budget_s is None:
                if done >= config.iterations:
                    break
            elif done >= config.min_iterations and time.perf_counter() - start >= budget_s:
                break
    finally:
        if gc_enabled:
            gc.enable()
    return np.asarray(rounds, np.float64)


def _time_sequential(session: Session, feeds: dict[str, np.ndarray], config: ProfileConfig, n_models: int,
                     notify: ProgressFn, name: str) -> np.ndarray:
    """Warm up and time one open session alone; a time budget is shared evenly by the models."""
    for _ in range(config.warmup):
        session.run(feeds)
    budget = None if config.time_budget_s is None else config.time_budget_s / n_models
    return _run_rounds(lambda r: [_timed_run(session, feeds)], config, budget, notify, f"timing {name}")


def _time_interleaved(backend: Any, paths: list[Path], options: SessionOptions, feeds: dict[str, np.ndarray],
                      config: ProfileConfig, notify: ProgressFn) -> np.ndarray:
    """Open every model, warm each up, then time rounds that run each model once in rotating order."""
    sessions: list[Session] = []
    try:
        for path in paths:
            sessions.append(backend.open(path, options))
        for _ in range(config.warmup):
            for session in sessions:
                session.run(feeds)
        n = len(sessions)

        def one_round(r: int) -> list[float]:
            times = [0.0] * n
            for k in range(n):
                i = (r + k) % n
                times[i] = _timed_run(sessions[i], feeds)
            return times

        return _run_rounds(one_round, config, config.time_budget_s, notify, "timing (interleaved)")
    finally:
        for session in sessions:
            session.close()
        sessions.clear()
        gc.collect()


def _rows(loaded: list[_Loaded], columns: list[np.ndarray], feeds: dict[str, np.ndarray],
          interleaved: bool) -> list[ModelProfile]:
    """Per-model rows from per-model run times (ms). Ratio vs the first model: the median of per-round
    ratios when interleaved (rounds are paired), else the ratio of the medians."""
    stats = [LatencyStats.from_ms(list(c)) for c in columns]
    mpix = megapixels(feeds)
    rows = []
    for i, item in enumerate(loaded):
        if interleaved:
            ratio = float(np.median(columns[i] / columns[0]))
        else:
            ratio = stats[i].p50 / stats[0].p50
        per_s = 1000.0 / stats[i].mean
        rows.append(ModelProfile(
            name=item.path.name,
            path=str(item.path),
            size_bytes=item.path.stat().st_size,
            session_create_s=item.create_s,
            latency_ms=stats[i],
            ratio_vs_first=ratio,
            throughput_per_s=per_s,
            megapixels_per_s=None if mpix is None else mpix * per_s,
            peak_rss_increase_bytes=item.rss_increase,
            accuracy=item.accuracy,
        ))
    return rows
