"""The data of a profile: its configuration, per-row measurements, skipped rows and the whole report.

Kept apart from :mod:`qdeploy.evaluate.profile` (which measures) so that renderers and readers of
``profile.json`` need only these plain frozen dataclasses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qdeploy.backends import SessionOptions
from qdeploy.evaluate.inputs import Shapes
from qdeploy.evaluate.precision import Coverage

__all__ = ["INPUT_KINDS", "LatencyStats", "ModelProfile", "ProfileConfig", "ProfileReport", "SkippedRow"]

#: What ``ProfileConfig.inputs`` may say: natural images for image inputs, or uniform random everywhere.
INPUT_KINDS = ("natural", "random")


@dataclass(frozen=True)
class ProfileConfig:
    """How to profile. ``time_budget_s`` (when set) replaces ``iterations``: timing runs until the budget
    is spent (split evenly across models in sequential mode) and at least ``min_iterations`` times.

    ``backends`` lists every backend to profile on, in order; empty means ``(backend,)``. When given,
    ``backend`` is set to its first entry, so single-backend code reading ``backend`` keeps working.
    ``fp16`` adds an FP16 row (float16 math, float32 I/O) for every float32 model.

    ``inputs`` says what the models are fed: ``"natural"`` (the default) gives every image input (float,
    4-D, 1 or 3 channels) natural images from ``data`` (a folder of the user's images) or else bundled
    photos, scaled to ``input_range``; ``"random"`` gives every input seeded uniform values in
    ``input_range``. Inputs that are not images are random either way.
    """

    backend: str = "ort-cpu"
    backends: tuple[str, ...] = ()
    fp16: bool = False
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
    inputs: str = "natural"
    data: Path | None = None

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
        if self.inputs not in INPUT_KINDS:
            raise ValueError(f"inputs must be one of {INPUT_KINDS}, got {self.inputs!r}")
        if self.data is not None and self.inputs != "natural":
            raise ValueError("data (images to feed) needs inputs='natural'")
        self._normalize_backends()
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


    def _normalize_backends(self) -> None:
        given = self.backends
        names = (given,) if isinstance(given, str) else tuple(given or (self.backend,))
        if any(not isinstance(n, str) or not n for n in names):
            raise ValueError(f"backends must be non-empty names, got {self.backends!r}")
        unique = tuple(dict.fromkeys(names))  # a backend named twice is profiled once
        object.__setattr__(self, "backends", unique)
        object.__setattr__(self, "backend", unique[0])


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
    first inference (see :class:`qdeploy.evaluate.machine.PeakRss`); None where RSS is unreadable (host
    memory only: GPU memory is not counted). ``precision`` is read from the graph
    (:func:`qdeploy.evaluate.precision.detect_precision`); ``coverage`` is the INT8 coverage on this
    backend (None for float graphs); ``variant`` is "fp16" for a row made by ``--fp16`` (``path`` is then
    the float32 source and ``size_bytes`` the FP16 copy's size); ``note`` is a caveat for this row.
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
    backend: str = "ort-cpu"
    precision: str = "unknown"
    coverage: Coverage | None = None
    variant: str | None = None
    note: str = ""

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
class SkippedRow:
    """A ``model x backend`` row that could not be measured, and why (the backend's install hint, or the
    runtime's load error for a converted FP16 copy)."""

    name: str
    path: str
    backend: str
    precision: str
    reason: str
    variant: str | None = None


@dataclass(frozen=True)
class ProfileReport:
    """Everything ``qdeploy profile`` measured, with the machine and settings needed to compare runs.

    ``models`` holds the measured rows (backend by backend, in the configured order), ``skipped`` the
    rows that could not run; :meth:`rows` interleaves both in table order. ``reference_backend`` is the
    backend whose first-model outputs every row's accuracy is measured against; ``input_basis`` says
    what every model was fed ("1 bundled photo (scikit-image) at 360x640, scaled to 0..255"), because an
    accuracy number means little without it (:meth:`accuracy_basis`). :meth:`to_dict` is strict JSON
    (see :func:`qdeploy.evaluate.report.report_dict`).
    """

    machine: dict[str, Any]
    config: ProfileConfig
    inputs: dict[str, tuple[int, ...]]
    timing_mode: str
    models: tuple[ModelProfile, ...]
    skipped: tuple[SkippedRow, ...] = ()
    reference_backend: str | None = None
    input_basis: str = ""

    def accuracy_basis(self) -> str:
        """``"accuracy vs model.onnx on ort-cpu on <input_basis>"``: the label every accuracy column needs."""
        ref = self.models[0].name if self.models else "the first model"
        on = f" on {self.reference_backend}" if self.reference_backend else ""
        return f"accuracy vs {ref}{on} on {self.input_basis or 'unrecorded inputs'}"

    def rows(self) -> list[ModelProfile | SkippedRow]:
        """Measured and skipped rows grouped by backend in the configured backend order."""
        out: list[ModelProfile | SkippedRow] = []
        for backend in self.config.backends:
            out += [m for m in self.models if m.backend == backend]
            out += [r for r in self.skipped if r.backend == backend]
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe nested dict (the ``profile.json`` / ``--json`` schema, version 2)."""
        from qdeploy.evaluate.report import report_dict

        return report_dict(self)

    def to_markdown(self) -> str:
        """A GitHub-markdown table of the rows plus the machine line and notes."""
        from qdeploy.evaluate.report import render_markdown

        return render_markdown(self)
