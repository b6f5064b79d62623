"""Streaming statistics shared by all observers: running min/max and a fixed-edge histogram.

Why two passes: a histogram whose edges move while data streams in (ORT re-bins when a larger value
arrives) makes the result depend on batch order and size. Here pass 0 only tracks the global min/max,
and pass 1 bins every value against edges fixed from that global range, so the integer counts -- and
every range computed from them -- are identical however the data is batched. Memory is constant: two
floats and a count, then ``2 * num_bins`` integers.

The histogram is laid out symmetrically around zero over ``[-amax, amax]`` (``amax = max |x|``) with
``num_bins`` bins per side and zero on a bin edge. That one layout serves every target: the |x|
histogram needed by symmetric grids and the TensorRT entropy search is an exact fold of the two halves,
and the signed histogram used by asymmetric searches is the array itself.
"""

from __future__ import annotations

import math

import numpy as np

from qdeploy.errors import CalibrationError

__all__ = [
    "CHUNK_ELEMENTS",
    "HistogramAccumulator",
    "RunningMinMax",
    "check_finite_extremes",
    "counts_quantile",
]

CHUNK_ELEMENTS = 1 << 22
"""Values binned per step in pass 1: bounds temporary memory for very large activations."""

_DATA_HINT = (
    "check the calibration data / preprocessing (value range, normalisation, corrupt files) and the float "
    "model itself: run it on one calibration sample and look for NaN/Inf in its outputs"
)


def _as_float(x: np.ndarray) -> np.ndarray:
    """Flatten to a float array; float16/ints become float32, float64 stays float64."""
    arr = np.asarray(x)
    if arr.dtype != np.float64:
        arr = arr.astype(np.float32, copy=False)
    return arr.reshape(-1)


def check_finite_extremes(flat: np.ndarray, lo: float, hi: float) -> None:
    """Raise :class:`CalibrationError` when the batch extremes show NaN/Inf (counted only then).

    ``min``/``max`` already propagate NaN and expose Inf, so the common all-finite case costs no extra
    pass over the data.
    """
    if math.isfinite(lo) and math.isfinite(hi):
        return
    n_nan = int(np.count_nonzero(np.isnan(flat)))
    n_inf = int(np.count_nonzero(np.isinf(flat)))
    raise CalibrationError(
        f"calibration activations contain {n_nan} NaN and {n_inf} Inf values (of {flat.size} in this batch)",
        _DATA_HINT,
    )


class RunningMinMax:
    """Global min, max and value count of everything observed (pass 0 of every observer)."""

    def __init__(self) -> None:
        self.min = math.inf
        self.max = -math.inf
        self.count = 0

    def update(self, x: np.ndarray) -> None:
        """Fold one batch (any shape) into the running statistics; empty batches are ignored."""
        flat = _as_float(x)
        if flat.size == 0:
            return
        lo, hi = float(flat.min()), float(flat.max())
        check_finite_extremes(flat, lo, hi)
        self.min = min(self.min, lo)
        self.max = max(self.max, hi)
        self.count += int(flat.size)

    @property
    def amax(self) -> float:
        """Largest magnitude seen (0.0 before any data)."""
        return max(abs(self.min), abs(self.max)) if self.count else 0.0


class HistogramAccumulator:
    """Fixed-edge histogram of values over ``[-amax, amax]``, ``num_bins`` bins per side.

    Bin ``num_bins + k`` holds ``x`` in ``[k w, (k+1) w)`` and bin ``num_bins - 1 - k`` holds ``x`` in
    ``(-(k+1) w, -k w]`` with ``w = amax / num_bins``; ``|x| = amax`` goes to the outermost bins. Each
    value's bin depends only on the value and the fixed edges, which is what makes results independent
    of batching.
    """

    def __init__(self, num_bins: int, amax: float) -> None:
        self.num_bins = num_bins
        self.amax = float(amax)
        self.width = self.amax / num_bins if self.amax > 0 else 0.0
        self.counts = np.zeros(2 * num_bins, dtype=np.int64)
        self._inv_width = num_bins / self.amax if self.amax > 0 else 0.0

    @property
    def total(self) -> int:
        """Number of values binned so far."""
        return int(self.counts.sum())

    def update(self, x: np.ndarray) -> None:
        """Bin one batch; values beyond ``amax`` (data that changed since pass 0) land in the edge bins."""
        flat = _as_float(x)
        for start in range(0, flat.size, CHUNK_ELEMENTS):
            chunk = flat[start : start + CHUNK_ELEMENTS]
            check_finite_extremes(chunk, float(chunk.min()), float(chunk.max()))
            self.counts += np.bincount(self._bin_indices(chunk), minlength=2 * self.num_bins)

    def _bin_indices(self, chunk: np.ndarray) -> np.ndarray:
        """Bin of each (finite) value: ``nb + k`` for ``x >= 0``, ``nb - 1 - k`` for ``x < 0``.

        ``k = min(floor(|x| / w), nb - 1)``. Computed on the signed product in place, in int32 (a
        float -> int64 conversion costs five times a float -> int32 one) and widened once for
        ``bincount``: IEEE multiplication is sign-symmetric, so ``|x * c| == |x| * c`` bit for bit,
        truncation towards zero of ``x * c`` is ``-k`` for negatives, and clamping before truncating
        equals clamping after (``nb - 1`` is an integer). The bins are therefore exactly those of the
        textbook ``abs -> floor -> clamp -> mirror`` formula (tested against it).
        """
        nb = self.num_bins
        v = np.multiply(chunk, chunk.dtype.type(self._inv_width))
        np.clip(v, 1 - nb, nb - 1, out=v)
        idx = v.astype(np.int32)
        idx += nb
        np.subtract(idx, chunk < 0, out=idx, casting="unsafe")
        return idx.astype(np.intp)

    def abs_counts(self) -> np.ndarray:
        """Histogram of ``|x|`` over ``[0, amax]`` (``num_bins`` bins): the two halves folded."""
        nb = self.num_bins
        return self.counts[nb:] + self.counts[:nb][::-1]

    def signed_edges(self) -> np.ndarray:
        """The ``2 * num_bins + 1`` bin edges of :attr:`counts`."""
        return np.linspace(-self.amax, self.amax, 2 * self.num_bins + 1)

    def mass_below(self, v: float) -> float:
        """Number of values below ``v``, assuming values spread uniformly inside each bin."""
        edges = self.signed_edges()
        if v <= edges[0]:
            return 0.0
        if v >= edges[-1]:
            return float(self.total)
        pos = (v - edges[0]) / self.width if self.width > 0 else 0.0
        k = min(int(pos), 2 * self.num_bins - 1)
        return float(self.counts[:k].sum() + self.counts[k] * (pos - k))

    def clipped_fraction(self, lo: float, hi: float, observed_min: float, observed_max: float) -> float:
        """Share of values outside ``[lo, hi]`` (exactly 0 on a side whose bound covers the extreme)."""
        total = self.total
        if total == 0:
            return 0.0
        below = self.mass_below(lo) if lo > observed_min else 0.0
        above = total - self.mass_below(hi) if hi < observed_max else 0.0
        return float(min(max((below + above) / total, 0.0), 1.0))

    def quantile(self, q: float, observed_min: float, observed_max: float) -> float:
        """Value below which a share ``q`` of the data lies (linear inside a bin), clamped to the data."""
        value = counts_quantile(self.counts, -self.amax, self.width, q)
        return float(min(max(value, observed_min), observed_max))

    def abs_quantile(self, q: float) -> float:
        """Value below which a share ``q`` of ``|x|`` lies (linear inside a bin), at most ``amax``."""
        return float(min(counts_quantile(self.abs_counts(), 0.0, self.width, q), self.amax))


def counts_quantile(counts: np.ndarray, start: float, width: float, q: float) -> float:
    """Quantile ``q`` of a histogram with equal bins from ``start``, interpolating linearly in a bin."""
    cdf = np.cumsum(counts.astype(np.float64))
    target = q * cdf[-1]
    k = min(int(np.searchsorted(cdf, target, side="left")), counts.size - 1)
    before = cdf[k] - counts[k]
    frac = (target - before) / counts[k] if counts[k] > 0 else 0.0
    return float(start + (k + frac) * width)
