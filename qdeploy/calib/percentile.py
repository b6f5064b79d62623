"""``percentile``: clip a fixed share of the most extreme values.

Cheap and predictable (the clipped share is what you ask for), but blind to the grid: it clips the same
values for 4 and 8 bits. Use ``mse``/``entropy`` when the bit width should decide the clipping.

Sides: a symmetric grid clips ``|x|`` at the ``p``-th percentile. An asymmetric grid on a one-sided tensor
(all values >= 0, e.g. after ReLU, or all <= 0) keeps the observed extreme on the zero side and clips only
the far side at ``p``; a two-sided tensor gets ``lo`` at the ``(100 - p)``-th and ``hi`` at the ``p``-th
percentile, i.e. each tail loses up to ``100 - p`` percent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from qdeploy.calib.base import Bounds, HistogramConfig, HistogramObserver, ObserverConfig
from qdeploy.types import QuantTarget

__all__ = ["PercentileConfig", "PercentileObserver"]


@dataclass(frozen=True)
class PercentileConfig(HistogramConfig):
    """``percentile`` in [50, 100] (100 = min/max); ``num_bins`` per sign of the histogram."""

    percentile: float = 99.99

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.percentile, bool) or not isinstance(self.percentile, (int, float)):
            raise ValueError(f"percentile must be a number, got {self.percentile!r}")
        if not 50.0 <= float(self.percentile) <= 100.0:
            raise ValueError(f"percentile must be in [50, 100], got {self.percentile}")


class PercentileObserver(HistogramObserver):
    """Bounds at histogram percentiles (interpolated inside a bin, so accurate to well below one bin)."""

    method: ClassVar[str] = "percentile"
    config_cls: ClassVar[type[ObserverConfig]] = PercentileConfig
    config: PercentileConfig

    def _bounds(self, name: str, target: QuantTarget) -> Bounds:
        hist = self._histogram(name)
        p = float(self.config.percentile) / 100.0
        lo_obs, hi_obs = self.stats.min, self.stats.max
        details = {"percentile": float(self.config.percentile), "num_bins": hist.num_bins}
        if target.symmetric:
            t = hist.abs_quantile(p)
            return Bounds(-t, t, {**details, "sides": "abs"})
        if lo_obs >= 0:
            return Bounds(lo_obs, hist.quantile(p, lo_obs, hi_obs), {**details, "sides": "upper"})
        if hi_obs <= 0:
            return Bounds(hist.quantile(1.0 - p, lo_obs, hi_obs), hi_obs, {**details, "sides": "lower"})
        lo = hist.quantile(1.0 - p, lo_obs, hi_obs)
        hi = hist.quantile(p, lo_obs, hi_obs)
        return Bounds(lo, hi, {**details, "sides": "both"})
