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
from qdeploy.calib.histogram import HistogramAccumulator, RunningMinMax
from qdeploy.types import QuantTarget

__all__ = ["MSEConfig", "MSEObserver", "expected_sq_error", "mse_bounds"]

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


ROW_BLOCK = 32
"""Candidates evaluated together: keeps the (candidates x edges) float64 temporaries small enough to stay
in the CPU cache. Results do not depend on it: each candidate's row is computed and summed on its own."""


def _integrated_sq_error(x: np.ndarray, step: np.ndarray, gmin: np.ndarray, gmax: np.ndarray) -> np.ndarray:
    """``F(x) = integral of (t - fakequant(t))**2 dt`` up to ``x`` (up to a constant), per grid row.

    In place, operation for operation the closed form ``k step^3 / 12 + u^3 / 3 + over^3 / 3 - under^3 / 3``
    (so results are bit-identical to evaluating it with temporaries). ``pow`` costs ten times any other
    step, so cubes are taken only where they differ: ``u^3`` inside the grid (an edge beyond it has
    ``xc`` equal to the grid end, whose cube is computed once per row), overshoots only where non-zero.
    """
    xc = np.clip(x, gmin, gmax)
    k = xc / step
    np.rint(k, out=k)
    u = k * step
    np.subtract(xc, u, out=u)
    saw = k
    saw *= step**3
    saw /= 12.0  # G: exact integral of the rounding sawtooth squared
    above, below = x >= gmax, x <= gmin
    np.power(u, 3, out=u, where=~(above | below))
    for end, beyond in ((gmax, above), (gmin, below)):
        np.copyto(u, (end - np.rint(end / step) * step) ** 3, where=beyond)  # same ops as for xc == end
    u /= 3.0
    saw += u
    for excess, sign in ((x - gmax, 1.0), (gmin - x, -1.0)):  # overshoot above / below the grid
        np.maximum(excess, 0.0, out=excess)
        np.power(excess, 3, out=excess, where=excess > 0.0)
        excess /= 3.0
        if sign > 0:
            saw += excess
        else:
            saw -= excess
    return saw


def expected_sq_error(
    edges: np.ndarray, counts: np.ndarray, lo: np.ndarray, hi: np.ndarray, target: QuantTarget
) -> np.ndarray:
    """Total squared fake-quant error of a histogram (uniform inside each bin) for each candidate.

    Only the edges of non-empty bins are evaluated (an empty bin's term is exactly zero); the terms are
    laid out over all bins before each row is summed, so the sums are those of the dense formula.

    Args:
        edges: ``M + 1`` increasing bin edges.
        counts: ``M`` bin counts.
        lo, hi: candidate bounds, shape ``(K,)``.
        target: the grid.

    Returns:
        ``(K,)`` sums of squared errors (divide by the count for the mean).
    """
    step, gmin, gmax = _grid(lo, hi, target)
    used = np.flatnonzero(counts)
    need = np.union1d(used, used + 1)  # edges touched by a non-empty bin
    left, right = np.searchsorted(need, used), np.searchsorted(need, used + 1)
    x = edges[need][None, :]
    width, weight = np.diff(edges)[used], counts[used]
    terms = np.zeros((min(ROW_BLOCK, step.size), counts.size))  # empty bins' columns stay zero
    out = np.empty(step.size)
    for s in range(0, step.size, ROW_BLOCK):
        e = min(s + ROW_BLOCK, step.size)
        f = _integrated_sq_error(x, step[s:e, None], gmin[s:e, None], gmax[s:e, None])
        if used.size == counts.size:  # every bin used: no scatter needed
            out[s:e] = ((f[:, 1:] - f[:, :-1]) / width * weight).sum(axis=1)
            continue
        block = terms[: e - s]
        block[:, used] = (f[:, right] - f[:, left]) / width * weight
        out[s:e] = block.sum(axis=1)
    return out


def _family(stats: RunningMinMax, target: QuantTarget) -> tuple[str, Family]:
    """The one-parameter family of candidate bounds; ``f = 1`` is the observed min/max."""
    mn, mx = stats.min, stats.max
    if target.symmetric:
        amax = stats.amax
        return "symmetric", lambda f: (-f * amax, f * amax)
    if mn >= 0:
        return "upper", lambda f: (np.full_like(f, mn), mn + f * (mx - mn))
    if mx <= 0:
        return "lower", lambda f: (mx - f * (mx - mn), np.full_like(f, mx))
    half = (mx - mn) / 2.0
    return "both", lambda f: (np.minimum(mn + (1 - f) * half, 0.0), np.maximum(mx - (1 - f) * half, 0.0))


def mse_bounds(hist: HistogramAccumulator, stats: RunningMinMax, target: QuantTarget,
               num_candidates: int = MSEConfig.num_candidates) -> Bounds:
    """The two-stage MSE search (see the module docstring) on a filled histogram of non-constant data.

    A function rather than only a method so that ``entropy`` can fall back to it on a sparse histogram.
    """
    nz = np.flatnonzero(hist.counts)
    first, last = int(nz[0]), int(nz[-1])
    edges = hist.signed_edges()[first : last + 2]
    counts = hist.counts[first : last + 1].astype(np.float64)
    search, family = _family(stats, target)

    def errors(f: np.ndarray) -> np.ndarray:
        lo, hi = family(f)
        return expected_sq_error(edges, counts, lo, hi, target)

    k = num_candidates
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


class MSEObserver(HistogramObserver):
    """Bounds minimising the expected squared quantization error of the observed histogram."""

    method: ClassVar[str] = "mse"
    config_cls: ClassVar[type[ObserverConfig]] = MSEConfig
    config: MSEConfig

    def _bounds(self, name: str, target: QuantTarget) -> Bounds:
        return mse_bounds(self._histogram(name), self.stats, target, self.config.num_candidates)
