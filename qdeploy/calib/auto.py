"""``auto``: every method's bounds from one histogram, the grid-aware MSE choice first.

Why a method of its own: no single global method is safe on models we have never seen. ``entropy``
collapses on gates and pooled statistics (measured by a user on gated SR nets: -8.98 dB Set5 where
``mse`` lost 0.44), ``minmax`` wastes the grid on rare outliers, ``percentile`` ignores the bit width.
This observer fills one two-pass histogram and derives the bounds of ``mse``, ``minmax``, ``percentile``
and ``entropy`` from it (``details["candidates"]``), for the cost of one histogram plus the searches.

The bounds it returns are ``mse``'s: the smallest expected quantization error *of the tensor itself* on
the actual grid. Whether that also serves the *output* is a property of the network, not of one
histogram, so it is checked end to end afterwards: :mod:`qdeploy.analyze.verify` measures the quantized
model against the float one on held-out data and, for the tensors that carry the output error, switches
to whichever candidate measures best at the output (then leaves float what no candidate can fix).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from qdeploy.calib.base import Bounds, HistogramConfig, HistogramObserver, Observer, ObserverConfig, check_int
from qdeploy.calib.entropy import EntropyConfig, EntropyObserver
from qdeploy.calib.minmax import MinMaxConfig, MinMaxObserver
from qdeploy.calib.mse import MSEConfig, MSEObserver
from qdeploy.calib.percentile import PercentileConfig, PercentileObserver
from qdeploy.types import QuantTarget

__all__ = ["AutoConfig", "AutoObserver"]

PRIMARY = "mse"
"""The candidate returned before any output check (least error of the tensor itself)."""


@dataclass(frozen=True)
class AutoConfig(HistogramConfig):
    """``num_bins`` per sign; ``percentile`` of the percentile candidate; ``entropy_stride`` between KL
    candidates (8: one threshold per 8 of 2048 bins, ~8x cheaper than the entropy method's full search,
    still finer than an 8-bit grid step at the thresholds it picks)."""

    percentile: float = 99.99
    entropy_stride: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        PercentileConfig(num_bins=self.num_bins, percentile=self.percentile)  # same validation
        check_int("entropy_stride", self.entropy_stride, 1, 1 << 16)


class AutoObserver(HistogramObserver):
    """Candidates from every histogram method; returns ``mse``'s bounds (see the module docstring)."""

    method: ClassVar[str] = "auto"
    config_cls: ClassVar[type[ObserverConfig]] = AutoConfig
    config: AutoConfig

    def _delegates(self) -> dict[str, Observer]:
        """The other methods' observers, sharing this observer's statistics and histogram."""
        c = self.config
        made: dict[str, Observer] = {
            "mse": MSEObserver(MSEConfig(num_bins=c.num_bins)),
            "minmax": MinMaxObserver(MinMaxConfig()),
            "percentile": PercentileObserver(PercentileConfig(num_bins=c.num_bins, percentile=c.percentile)),
            "entropy": EntropyObserver(EntropyConfig(num_bins=c.num_bins, stride=c.entropy_stride)),
        }
        for obs in made.values():
            obs.stats = self.stats
            if isinstance(obs, HistogramObserver):
                obs.hist = self.hist
        return made

    def _bounds(self, name: str, target: QuantTarget) -> Bounds:
        self._histogram(name)  # checks pass 1 saw every value
        candidates: dict[str, list[float]] = {}
        chosen: Bounds | None = None
        for method, obs in self._delegates().items():
            b = obs._bounds(name, target)
            candidates[method] = [float(b.lo), float(b.hi), float(self._clipped_fraction(b.lo, b.hi))]
            if method == PRIMARY:
                chosen = b
        assert chosen is not None
        return Bounds(chosen.lo, chosen.hi, {**chosen.details, "chosen": PRIMARY, "candidates": candidates})
