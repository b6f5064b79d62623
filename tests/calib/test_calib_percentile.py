"""Percentile calibration agrees with numpy's exact percentiles to within one histogram bin."""

from __future__ import annotations

import numpy as np
import pytest

from qdeploy.calib import make_observer
from qdeploy.types import QuantTarget, TensorRange

BINS = 2048
CLIPPED_REL_TOL = 0.05  # clipped share from the interpolated histogram vs the requested tail share


def run(x: np.ndarray, target: QuantTarget, **config: object) -> TensorRange:
    obs = make_observer("percentile", num_bins=BINS, **config)
    for p in range(obs.passes):
        for i in range(0, len(x), 5):
            obs.observe(x[i : i + 5], p)
    return obs.compute_range("x", target)


def assert_matches_percentile(value: float, x: np.ndarray, p: float, width: float) -> None:
    """Within one bin of np.percentile, widened to the neighbouring order statistics where the tail is
    sparse (np.percentile interpolates between samples that may be several bins apart there)."""
    xs = np.sort(x, axis=None)
    k = (xs.size - 1) * p / 100.0
    lo_stat = xs[max(int(np.floor(k)) - 1, 0)]
    hi_stat = xs[min(int(np.ceil(k)) + 1, xs.size - 1)]
    exact = float(np.percentile(x, p))
    assert min(exact, lo_stat) - width <= value <= max(exact, hi_stat) + width


def data(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.standard_normal((40, 500)), rng.laplace(0.5, 3.0, (40, 500))])


@pytest.mark.parametrize("p", [99.0, 99.9, 99.99])
def test_symmetric_matches_numpy_percentile_of_abs(p: float) -> None:
    x = data()
    width = float(np.abs(x).max()) / BINS
    r = run(x, QuantTarget(8, True), percentile=p)
    assert_matches_percentile(r.hi, np.abs(x), p, width)
    assert r.lo == -r.hi
    assert r.clipped_fraction == pytest.approx(1.0 - p / 100.0, rel=CLIPPED_REL_TOL, abs=1e-5)


@pytest.mark.parametrize("p", [99.0, 99.99])
def test_two_sided_asymmetric_uses_lower_and_upper_percentiles(p: float) -> None:
    x = data(1)
    width = float(np.abs(x).max()) / BINS
    r = run(x, QuantTarget(8, False), percentile=p)
    assert_matches_percentile(r.lo, x, 100.0 - p, width)
    assert_matches_percentile(r.hi, x, p, width)
    assert r.details["sides"] == "both"


def test_one_sided_clips_only_the_far_side() -> None:
    x = np.abs(data(2))
    width = float(x.max()) / BINS
    r = run(x, QuantTarget(8, False), percentile=99.9)
    assert r.lo == float(x.min())
    assert_matches_percentile(r.hi, x, 99.9, width)
    neg = run(-x, QuantTarget(8, False), percentile=99.9)
    assert neg.hi == float((-x).max())
    assert_matches_percentile(neg.lo, -x, 0.1, width)


def test_percentile_100_is_minmax() -> None:
    x = data(3)
    r = run(x, QuantTarget(8, False), percentile=100.0)
    assert (r.lo, r.hi) == (float(x.min()), float(x.max()))
    assert r.clipped_fraction == 0.0
