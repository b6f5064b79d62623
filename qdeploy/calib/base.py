"""The observer contract: stream activation batches in, get one :class:`TensorRange` out.

An observer sees a tensor's values in ``passes`` sweeps over the calibration data (the collector calls
``observe(x, pass_index)`` for every batch of every pass) and then chooses clipping bounds *for a given
integer grid* (:class:`QuantTarget`), because the best clipping point of a 4-bit grid is not the best one
of an 8-bit grid. Methods differ only in how they pick the bounds; NaN/Inf handling, the
never-observed error, constant tensors and the result record are shared here so they cannot drift apart.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from qdeploy.calib.histogram import HistogramAccumulator, RunningMinMax
from qdeploy.errors import CalibrationError, InputError
from qdeploy.registry import Registry
from qdeploy.types import QuantTarget, TensorRange

__all__ = [
    "OBSERVERS",
    "Bounds",
    "HistogramConfig",
    "HistogramObserver",
    "Observer",
    "ObserverConfig",
    "check_int",
    "make_observer",
    "observer_names",
]

MIN_BINS, MAX_BINS = 128, 1 << 16
"""Histogram size limits (per sign): fewer bins cannot resolve an 8-bit grid; more only costs time."""

CONSTANT_ZERO_HALF_WIDTH = 1.0
"""Bound used for an all-zero tensor: any non-zero width represents 0 exactly; 1.0 keeps the scale sane."""


@dataclass(frozen=True)
class ObserverConfig:
    """Base of every observer's frozen config; subclasses add validated fields."""

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (stored in the calibration cache)."""
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        """Names accepted as ``make_observer`` keyword arguments."""
        return [f.name for f in dataclasses.fields(cls)]


def check_int(name: str, value: object, low: int, high: int) -> None:
    """Raise ValueError unless ``value`` is an int (not bool) in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")


@dataclass(frozen=True)
class Bounds:
    """A method's decision: clipping bounds plus facts worth recording (JSON-safe values only)."""

    lo: float
    hi: float
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


class Observer(abc.ABC):
    """Streams one tensor's values and picks its clipping bounds for a :class:`QuantTarget`.

    Subclasses set ``method``, ``config_cls`` and ``passes`` and implement :meth:`_observe_pass` (for
    passes >= 1; pass 0 always tracks min/max/count here) and :meth:`_bounds`.
    """

    method: ClassVar[str]
    config_cls: ClassVar[type[ObserverConfig]]
    passes: ClassVar[int] = 1

    def __init__(self, config: ObserverConfig | None = None) -> None:
        self.config = config if config is not None else self.config_cls()
        if not isinstance(self.config, self.config_cls):
            raise TypeError(f"{type(self).__name__} needs a {self.config_cls.__name__}, got {self.config!r}")
        self.stats = RunningMinMax()
        self._current_pass = 0

    def observe(self, x: np.ndarray, pass_index: int) -> None:
        """Feed one activation batch (any shape) for pass ``pass_index``; passes must run in order."""
        if not 0 <= pass_index < self.passes:
            raise ValueError(f"{self.method} has {self.passes} pass(es), got pass_index={pass_index}")
        if pass_index < self._current_pass:
            raise ValueError(f"pass {pass_index} observed after pass {self._current_pass} started")
        if pass_index > 0 and self.stats.count == 0:
            self._raise_never_observed()
        if pass_index > self._current_pass:
            self._start_pass(pass_index)
            self._current_pass = pass_index
        if pass_index == 0:
            self.stats.update(x)
        else:
            self._observe_pass(x, pass_index)

    def compute_range(self, name: str, target: QuantTarget) -> TensorRange:
        """Choose clipping bounds for ``target`` from everything observed."""
        if self.stats.count == 0:
            self._raise_never_observed(name)
        if self.passes > 1 and self._current_pass < self.passes - 1:
            raise CalibrationError(
                f"tensor {name!r}: {self.method} needs {self.passes} passes over the data, only "
                f"{self._current_pass + 1} ran",
                "feed the same calibration data once per pass (range(observer.passes))",
            )
        lo_obs, hi_obs = self.stats.min, self.stats.max
        if lo_obs == hi_obs:
            bounds = self._constant_bounds(lo_obs, target)
            clipped = 0.0
        else:
            bounds = self._bounds(name, target)
            clipped = self._clipped_fraction(bounds.lo, bounds.hi)
        return TensorRange(
            name=name,
            observed_min=float(lo_obs),
            observed_max=float(hi_obs),
            lo=float(bounds.lo),
            hi=float(bounds.hi),
            clipped_fraction=float(clipped),
            method=self.method,
            count=int(self.stats.count),
            details=bounds.details,
        )

    def _raise_never_observed(self, name: str = "") -> None:
        where = f"tensor {name!r}: " if name else ""
        raise CalibrationError(
            f"{where}no values were observed, so no range can be computed",
            "check that the calibration data is not empty and that the tensor is computed for it "
            "(e.g. a branch that never runs, or a zero-sized shape)",
        )

    @staticmethod
    def _constant_bounds(value: float, target: QuantTarget) -> Bounds:
        """A constant tensor gets the smallest non-degenerate range holding it (and zero)."""
        half = abs(value) if value != 0 else CONSTANT_ZERO_HALF_WIDTH
        if target.symmetric:
            return Bounds(-half, half, {"constant": float(value)})
        if value == 0:
            return Bounds(0.0, half, {"constant": 0.0})
        return Bounds(min(value, 0.0), max(value, 0.0), {"constant": float(value)})

    def _start_pass(self, pass_index: int) -> None:  # noqa: B027 - optional hook
        """Called once when the first batch of ``pass_index`` (>= 1) arrives."""

    def _observe_pass(self, x: np.ndarray, pass_index: int) -> None:
        """Consume a batch of pass ``pass_index`` >= 1 (only multi-pass observers override)."""
        raise NotImplementedError

    def _clipped_fraction(self, lo: float, hi: float) -> float:
        """Share of values outside [lo, hi]; min/max-only observers can only say 0 or unknown."""
        return 0.0

    @abc.abstractmethod
    def _bounds(self, name: str, target: QuantTarget) -> Bounds:
        """Pick bounds for non-constant data (``stats.min < stats.max``)."""


@dataclass(frozen=True)
class HistogramConfig(ObserverConfig):
    """Options shared by histogram methods: ``num_bins`` bins per sign of the histogram.

    Why 2048 by default: a search can only place a threshold on a bin edge and needs several bins per
    grid step to see rounding error; ORT's default of 128 leaves its entropy search a single candidate.
    """

    num_bins: int = 2048

    def __post_init__(self) -> None:
        check_int("num_bins", self.num_bins, MIN_BINS, MAX_BINS)


class HistogramObserver(Observer):
    """Two passes: global min/max, then a fixed-edge histogram (``config.num_bins`` bins per side)."""

    passes: ClassVar[int] = 2
    config: HistogramConfig

    def __init__(self, config: ObserverConfig | None = None) -> None:
        super().__init__(config)
        self.hist: HistogramAccumulator | None = None

    def _start_pass(self, pass_index: int) -> None:
        self.hist = HistogramAccumulator(self.config.num_bins, self.stats.amax)

    def _observe_pass(self, x: np.ndarray, pass_index: int) -> None:
        if self.hist is None:  # _start_pass creates it before the first pass-1 batch
            raise RuntimeError("histogram pass started without pass-0 statistics")
        self.hist.update(x)

    def _histogram(self, name: str) -> HistogramAccumulator:
        """The pass-1 histogram, after checking pass 1 saw the same number of values as pass 0."""
        hist = self.hist
        if hist is None or hist.total != self.stats.count:
            seen = 0 if hist is None else hist.total
            raise CalibrationError(
                f"tensor {name!r}: pass 1 binned {seen} values but pass 0 saw {self.stats.count}",
                "feed exactly the same calibration data in every pass (fixed seed, same order)",
            )
        return hist

    def _clipped_fraction(self, lo: float, hi: float) -> float:
        hist = self.hist
        if hist is None:
            return 0.0
        return hist.clipped_fraction(lo, hi, self.stats.min, self.stats.max)


OBSERVERS: Registry[type[Observer]] = Registry("calibration method")


def observer_names() -> list[str]:
    """Registered calibration methods (what the CLI offers)."""
    return OBSERVERS.names()


def make_observer(name: str, **kwargs: Any) -> Observer:
    """A fresh observer for method ``name``; ``kwargs`` override fields of its config dataclass.

    Raises:
        InputError: unknown method, unknown config field, or a field value that fails validation.
    """
    cls = OBSERVERS.get(name)
    valid = cls.config_cls.field_names()
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise InputError(
            f"calibration method {name!r} has no option(s) {', '.join(unknown)}",
            f"valid options for {name!r}: {', '.join(valid) if valid else '(none)'}",
        )
    try:
        config = cls.config_cls(**kwargs)
    except ValueError as exc:
        raise InputError(f"bad option for calibration method {name!r}: {exc}", "fix the value") from None
    return cls(config)
