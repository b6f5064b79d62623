"""``mse``: clipping bounds that minimise the expected fake-quantization MSE on the actual grid.

For each candidate ``[lo, hi]`` the error is computed for exactly the grid the QDQ rewrite will build:
bounds widened to include zero, ``scale = (hi - lo) / levels``, integer zero point ``round(-lo / scale)``
(asymmetric) or ``scale = hi / (levels / 2)`` with zero point 0 (symmetric), values rounded half-to-even
and clamped to the codes. So a 4-bit target trades clipping against a 16x coarser step and clips more.

Why not bin centres: with 2048 bins and a strongly clipped 8-bit grid the step can shrink to about one
bin, and centres then alias with grid points (zero error at some candidates, full error at others),
steering the search. Instead each bin is taken as uniformly filled and the squared error is integrated
exactly over it, with the closed form of the integral of the rounding sawtooth (``G`` below) plus the
cubic of the clipped overshoot. The cost is the same as evaluating centres.

Candidates (``num_candidates`` per stage, two stages: a coarse sweep, then the same number between the
best coarse point's neighbours, so resolution is ``range / num_candidates**2`` for two sweeps' cost):
symmetric grids scale ``T = f * max|x|``; a one-sided tensor (all >= 0 or all <= 0) moves only its far
bound; a two-sided tensor on an asymmetric grid shrinks both ends together by equal amounts (as DOBI
does), each end stopping at zero. ``f = 1`` (min/max) is always a candidate, so the result is never
worse than min/max under the histogram model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from qdeploy.calib.base import Bounds, HistogramConfig, HistogramObserver, ObserverConfig, check_int
from qdeploy.types import QuantTarget

__all__ = ["MSEConfig", "MSEObserver", "expected_sq_error"]

Family = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""Maps candidate fractions ``f`` in (0, 1] to ``(lo, hi)`` arrays."""


@dataclass(frozen=True)
class MSEConfig(HistogramConfig):
    """``num_bins`` histogram bins per sign (>= 128); ``num_candidates`` per search stage (>= 100)."""

    num_candidates: int = 200

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("num_candidates", self.num_candidates, 100, 10_000)


def _grid(lo: np.ndarray, hi: np.ndarray, target: QuantTarget) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step, lowest and highest representable value of the QDQ grid built from each ``[lo, hi]``."""
    if target.symmetric:
        half = target.levels // 2
        step = np.maximum(np.abs(hi), np.abs(lo)) / half
        return step, -half * step, half * step
    lo_e, hi_e = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
    step = (hi_e - lo_e) / target.levels
    zp = np.rint(-lo_e / step)
    return step, -zp * step, (target.levels - zp) * step


def _integrated_sq_error(x: np.ndarray, step: np.ndarray, gmin: np.ndarray, gmax: np.ndarray) -> np.ndarray:
    """``F(x) = integral of (t - fakequant(t))**2 dt`` up to ``x`` (up to a constant), per grid row."""
    xc = np.clip(x, gmin, gmax)
    k = np.rint(xc / step)
    u = xc - k * step
    saw = k * step**3 / 12.0 + u**3 / 3.0  # G: exact integral of the rounding sawtooth squared
    over = np.maximum(x - gmax, 0.0) ** 3 / 3.0
    under = np.maximum(gmin - x, 0.0) ** 3 / 3.0
    return saw + over - under


def expected_sq_error(
    edges: np.ndarray, counts: np.ndarray, lo: np.ndarray, hi: np.ndarray, target: QuantTarget
) -> np.ndarray:
    """Total squared fake-quant error of a histogram (uniform inside each bin) for each candidate.

    Args:
        edges: ``M + 1`` increasing bin edges.
        counts: ``M`` bin counts.
        lo, hi: candidate bounds, shape ``(K,)``.
        target: the grid.

    Returns:
        ``(K,)`` sums of squared errors (divide by the count for the mean).
    """
    step, gmin, gmax = (v[:, None] for v in _grid(lo, hi, target))
    f = _integrated_sq_error(edges[None, :], step, gmin, gmax)
    width = np.diff(edges)[None, :]
    return ((f[:, 1:] - f[:, :-1]) / width * counts[None, :]).sum(axis=1)


class MSEObserver(HistogramObserver):
    """Bounds minimising the expected squared quantization error of the observed histogram."""

    method: ClassVar[str] = "mse"
    config_cls: ClassVar[type[ObserverConfig]] = MSEConfig
    config: MSEConfig

    def _family(self, target: QuantTarget) -> tuple[str, Family]:
        """The one-parameter family of candidate bounds; ``f = 1`` is the observed min/max."""
        mn, mx = self.stats.min, self.stats.max
        if target.symmetric:
            amax = self.stats.amax
            return "symmetric", lambda f: (-f * amax, f * amax)
        if mn >= 0:
            return "upper", lambda f: (np.full_like(f, mn), mn + f * (mx - mn))
        if mx <= 0:
            return "lower", lambda f: (mx - f * (mx - mn), np.full_like(f, mx))
        half = (mx - mn) / 2.0
        return "both", lambda f: (np.minimum(mn + (1 - f) * half, 0.0), np.maximum(mx - (1 - f) * half, 0.0))

    def _bounds(self, name: str, target: QuantTarget) -> Bounds:
        hist = self._histogram(name)
        nz = np.flatnonzero(hist.counts)
        first, last = int(nz[0]), int(nz[-1])
        edges = hist.signed_edges()[first : last + 2]
        counts = hist.counts[first : last + 1].astype(np.float64)
        search, family = self._family(target)

        def errors(f: np.ndarray) -> np.ndarray:
            lo, hi = family(f)
            return expected_sq_error(edges, counts, lo, hi, target)

        k = self.config.num_candidates
        coarse = np.arange(1, k + 1, dtype=np.float64) / k
        coarse_err = errors(coarse)
        i = int(np.argmin(coarse_err))
        fine = np.linspace(coarse[max(i - 1, 0)] if i > 0 else coarse[0] / k, coarse[min(i + 1, k - 1)], k)
        fine_err = errors(fine)
        all_f, all_err = np.concatenate([coarse, fine]), np.concatenate([coarse_err, fine_err])
        best = int(np.argmin(all_err))
        lo, hi = family(all_f[best : best + 1])
        total = float(counts.sum())
        details = {
            "num_bins": hist.num_bins,
            "num_candidates": k,
            "search": search,
            "fraction_of_range": float(all_f[best]),
            "mse": float(all_err[best] / total),
            "minmax_mse": float(coarse_err[-1] / total),
        }
        return Bounds(float(lo[0]), float(hi[0]), details)
