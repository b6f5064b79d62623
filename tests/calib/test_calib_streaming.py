"""Observers keep constant-size state: memory does not grow with the number of calibration samples."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from qdeploy.calib import make_observer, observer_names
from qdeploy.calib.histogram import HistogramAccumulator

MAX_STATE_GROWTH_BYTES = 256
"""Allowed difference in pickled observer state between 2 and 200 batches (ints may widen a little)."""


def _state_size(name: str, batches: int) -> int:
    rng = np.random.default_rng(0)
    data = [rng.standard_normal(4096).astype(np.float32) for _ in range(batches)]
    obs = make_observer(name)
    for p in range(obs.passes):
        for x in data:
            obs.observe(x, p)
    return len(pickle.dumps(obs))


@pytest.mark.parametrize("name", observer_names())
def test_observer_state_does_not_grow_with_samples(name: str) -> None:
    small, large = _state_size(name, 2), _state_size(name, 200)
    assert abs(large - small) <= MAX_STATE_GROWTH_BYTES, (name, small, large)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("num_bins", [128, 2048, 1 << 16])
def test_bins_are_those_of_the_textbook_formula(dtype: type, num_bins: int) -> None:
    """abs -> scale -> floor -> clamp -> mirror, on edges, signed zeros, subnormals and values beyond amax."""
    rng = np.random.default_rng(num_bins)
    x = (rng.standard_normal(200_003) * rng.choice([1e-30, 1e-3, 1.0, 1e3], 200_003)).astype(dtype)
    amax = float(np.abs(x).max()) * 0.7  # 30 % of the range lies beyond the edges (data changed after pass 0)
    hist = HistogramAccumulator(num_bins, amax)
    x[:1000] = (np.arange(-500, 500) * dtype(hist.width)).astype(dtype)  # exactly on bin edges
    tiny = np.finfo(dtype).smallest_subnormal
    x[1000:1008] = np.array([-0.0, 0.0, -amax, amax, tiny, -tiny, 3 * amax, -3 * amax], dtype=dtype)
    k = np.minimum((np.abs(x) * x.dtype.type(hist._inv_width)).astype(np.int64), num_bins - 1)
    expected = np.bincount(np.where(x < 0, num_bins - 1 - k, num_bins + k), minlength=2 * num_bins)
    hist.update(x)
    np.testing.assert_array_equal(hist.counts, expected)
