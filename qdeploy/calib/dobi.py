"""``dobi``: 2DQuant's Distribution-Oriented Bound Initialization, with the shape decided automatically.

DOBI (Liu et al., NeurIPS 2024, Alg. 1) sweeps ``K`` (100) linearly spaced clipping candidates per tensor
and keeps the one with the smallest fake-quantization MSE. It has two candidate families:

- bell-shaped tensors (weights, V, the FC1 input): shrink ``[min, max]`` towards the centre, both ends
  by ``(max - min) / (2K)`` per step;
- one-sided / long-tail tensors (post-softmax, post-GELU, post-ReLU): keep the lower bound at ``min`` and
  move only the upper bound down by ``(max - min) / K`` per step.

The paper picks the family per tensor *by eye* from histograms (its released code never enables the
one-sided mode). Here it is decided from the calibration histogram with one statistic, the relative
position of the median in the observed range, ``r = (median - min) / (max - min)``:

- ``r < 1/4``: one-sided with the long tail upwards (lower bound fixed); ``r > 3/4``: the mirror image
  (upper bound fixed, lower bound moves); otherwise bell.

Why this rule: the bell family moves both ends by the same distance ``d``; once ``d`` exceeds
``median - min`` it clips away the whole lower half of the data. So on a tensor with ``r < 1/4`` it cannot
lower the upper bound by more than a quarter of the range without destroying the dense side, while such
a tail wants about that much or more (measured on synthetic post-softmax / post-GELU tensors: the best
upper bound drops by 25% / 36% of the range at 4 bits, 53% / 56% at 2 bits). Conversely, on a tensor
with ``r`` near 1/2 both tails are comparable and keeping one end at its extreme wastes grid on an empty
tail. Measured ``r`` (10^5 samples): Gaussian 0.49, Laplace 0.54, uniform 0.50; post-softmax over 64
tokens 0.003; post-GELU of a zero-mean input 0.03; post-ReLU 0 (median at zero); exponential 0.06: the
classes sit far from the thresholds. A bell tensor whose outliers all lie on one side is also classified
one-sided; that is the better search for it, since its short side needs no clipping. The median is read
from the streamed histogram, so the decision is batch-size independent like the bounds.

Differences from the paper, forced by the QDQ grid: the MSE is that of the actual integer grid of the
:class:`QuantTarget` (bounds widened to include zero, integer zero point, or a zero-point-free symmetric
grid), computed exactly over the histogram (``qdeploy.calib.mse.expected_sq_error``), so 2-bit targets
clip more than 8-bit ones. An end that crosses zero stops at zero (the grid always contains zero). A
tensor that does not straddle zero only moves its far bound (the grid reaches zero anyway). A symmetric
grid has one free parameter, ``T`` in ``[-T, T]``, so both shapes search ``T = f * max|x|``; the shape is
still recorded. Every decision lands in ``TensorRange.details`` and thus in the calibration cache.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from qdeploy.calib.base import Bounds, HistogramConfig, HistogramObserver, ObserverConfig, check_int
from qdeploy.calib.mse import expected_sq_error
from qdeploy.types import QuantTarget

__all__ = ["ONE_SIDED_MEDIAN_POSITION", "DOBIConfig", "DOBIObserver", "classify_shape"]

ONE_SIDED_MEDIAN_POSITION = 0.25
"""A median in the lowest (highest) quarter of the observed range makes a tensor one-sided (see above)."""

Family = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""Maps candidate fractions ``f`` in (0, 1] (``f = 1``: observed min/max) to ``(lo, hi)`` arrays."""


@dataclass(frozen=True)
class DOBIConfig(HistogramConfig):
    """``num_candidates`` linearly spaced bounds (>= 100, the paper's K); ``num_bins`` per histogram sign."""

    num_candidates: int = 100

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("num_candidates", self.num_candidates, 100, 100_000)


def classify_shape(median_position: float) -> tuple[str, str]:
    """``(shape, tail)`` from the median's relative position in ``[min, max]``.

    Returns:
        ``("one-sided", "upper")`` when the long tail points up (lower bound fixed),
        ``("one-sided", "lower")`` for the mirror image, ``("bell", "both")`` otherwise.
    """
    if median_position < ONE_SIDED_MEDIAN_POSITION:
        return "one-sided", "upper"
    if median_position > 1.0 - ONE_SIDED_MEDIAN_POSITION:
        return "one-sided", "lower"
    return "bell", "both"


def _family(mn: float, mx: float, amax: float, tail: str, target: QuantTarget) -> tuple[str, Family]:
    """The candidate family (search name, ``f -> (lo, hi)``) for this tensor and grid."""
    if target.symmetric:
        return "symmetric", lambda f: (-f * amax, f * amax)
    width = mx - mn
    if mn >= 0 or (tail == "upper" and mn < 0 < mx):
        return "upper", lambda f: (np.full_like(f, mn), np.maximum(mn + f * width, 0.0))
    if mx <= 0 or tail == "lower":
        return "lower", lambda f: (np.minimum(mx - f * width, 0.0), np.full_like(f, mx))
    half = width / 2.0
    return "both", lambda f: (np.minimum(mn + (1 - f) * half, 0.0), np.maximum(mx - (1 - f) * half, 0.0))


class DOBIObserver(HistogramObserver):
    """Linear DOBI search over ``num_candidates`` bounds, family chosen from the histogram's shape."""

    method: ClassVar[str] = "dobi"
    config_cls: ClassVar[type[ObserverConfig]] = DOBIConfig
    config: DOBIConfig

    def _bounds(self, name: str, target: QuantTarget) -> Bounds:
        hist = self._histogram(name)
        mn, mx = self.stats.min, self.stats.max
        median = hist.quantile(0.5, mn, mx)
        position = float((median - mn) / (mx - mn))
        shape, tail = classify_shape(position)
        search, family = _family(mn, mx, self.stats.amax, tail, target)

        nz = np.flatnonzero(hist.counts)
        first, last = int(nz[0]), int(nz[-1])
        edges = hist.signed_edges()[first : last + 2]
        counts = hist.counts[first : last + 1].astype(np.float64)
        k = self.config.num_candidates
        fractions = np.arange(k, 0, -1, dtype=np.float64) / k  # 1 (min/max), 1 - 1/K, ..., 1/K
        lo, hi = family(fractions)
        errors = expected_sq_error(edges, counts, lo, hi, target)
        best = int(np.argmin(errors))  # first minimum: the widest of equally good bounds
        total = float(counts.sum())
        lo_b, hi_b = float(lo[best]), float(hi[best])
        details = {
            "shape": shape,
            "tail": tail,
            "median_position": position,
            "search": search,
            "num_candidates": k,
            "num_bins": hist.num_bins,
            "fraction_of_range": float(fractions[best]),
            "clipped_fraction": hist.clipped_fraction(lo_b, hi_b, mn, mx),
            "mse": float(errors[best] / total),
            "minmax_mse": float(errors[0] / total),
        }
        return Bounds(lo_b, hi_b, details)
