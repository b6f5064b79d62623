"""MSE calibration: never worse than min/max on real fake-quant error, and grid-aware."""

from __future__ import annotations

import time

import numpy as np
import pytest

from qdeploy.calib import make_observer
from qdeploy.calib.mse import expected_sq_error
from qdeploy.types import QuantTarget, TensorRange

MODEL_REL_TOL = 0.02  # histogram error model vs. real fake-quant MSE of the same data
MAX_SEARCH_SECONDS = 2.0  # generous: the vectorised search takes ~0.2 s on one shared core


def fake_quant(x: np.ndarray, lo: float, hi: float, target: QuantTarget) -> np.ndarray:
    """Reference QDQ round trip, written independently of qdeploy (ONNX QuantizeLinear semantics)."""
    if target.symmetric:
        half = target.levels // 2
        scale = max(abs(lo), abs(hi)) / half
        return np.clip(np.rint(x / scale), -half, half) * scale
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / target.levels
    zp = np.rint(-lo / scale)
    return (np.clip(np.rint(x / scale) + zp, 0, target.levels) - zp) * scale


def mse(x: np.ndarray, r: TensorRange, target: QuantTarget) -> float:
    return float(np.mean((x - fake_quant(x, r.lo, r.hi, target)) ** 2))


def run(name: str, x: np.ndarray, target: QuantTarget) -> TensorRange:
    obs = make_observer(name)
    for p in range(obs.passes):
        obs.observe(x, p)
    return obs.compute_range("x", target)


def outliers(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((64, 1024))
    x[rng.random(x.shape) < 0.002] *= 50.0
    return x + 0.2


def laplace(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).laplace(0.0, 1.0, (64, 1024))


@pytest.mark.parametrize("target", [QuantTarget(8, True), QuantTarget(8, False), QuantTarget(4, False)])
@pytest.mark.parametrize("data", [outliers, laplace])
def test_mse_bound_beats_minmax_on_real_error(data, target: QuantTarget) -> None:
    x = data()
    ours, minmax = run("mse", x, target), run("minmax", x, target)
    assert mse(x, ours, target) <= mse(x, minmax, target)
    assert ours.details["mse"] == pytest.approx(mse(x, ours, target), rel=MODEL_REL_TOL)
    assert ours.details["minmax_mse"] == pytest.approx(mse(x, minmax, target), rel=MODEL_REL_TOL)


@pytest.mark.parametrize("symmetric", [True, False])
def test_fewer_bits_clip_more(symmetric: bool) -> None:
    x = laplace(1)
    r8 = run("mse", x, QuantTarget(8, symmetric))
    r4 = run("mse", x, QuantTarget(4, symmetric))
    assert r4.hi < r8.hi < float(x.max())
    assert r4.clipped_fraction > r8.clipped_fraction > 0.0


def test_one_sided_searches_only_the_upper_bound() -> None:
    x = np.maximum(laplace(2), 0.0)
    r = run("mse", x, QuantTarget(8, False))
    assert r.details["search"] == "upper"
    assert r.lo == 0.0 and r.hi < float(x.max())


def test_two_sided_asymmetric_shrinks_both_ends_together() -> None:
    x = laplace(3) * 2.0 + 1.0
    r = run("mse", x, QuantTarget(4, False))
    assert r.details["search"] == "both"
    assert r.lo - r.observed_min == pytest.approx(r.observed_max - r.hi)


def test_error_model_is_exact_for_uniform_bins() -> None:
    """One bin filled uniformly: the closed form equals brute-force integration."""
    edges, counts = np.array([-1.3, 0.9]), np.array([1.0])
    target = QuantTarget(4, False)
    t = np.linspace(edges[0], edges[1], 400_001)
    brute = float(np.mean((t - fake_quant(t, -1.0, 0.7, target)) ** 2))
    model = expected_sq_error(edges, counts, np.array([-1.0]), np.array([0.7]), target)[0]
    assert model == pytest.approx(brute, rel=1e-4)


def test_search_is_fast() -> None:
    obs = make_observer("mse")
    x = outliers(4)
    obs.observe(x, 0)
    obs.observe(x, 1)
    start = time.perf_counter()
    obs.compute_range("x", QuantTarget(8, False))
    assert time.perf_counter() - start < MAX_SEARCH_SECONDS


def dense_sq_error_reference(edges: np.ndarray, counts: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                             target: QuantTarget) -> np.ndarray:
    """The straightforward formulation (every edge, every candidate, temporaries; the code before it was
    made faster): ``F`` at all edges, differences over bins weighted by counts, summed per candidate."""
    if target.symmetric:
        half = target.levels // 2
        step = np.maximum(np.abs(hi), np.abs(lo)) / half
        gmin, gmax = -half * step, half * step
    else:
        lo_e, hi_e = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
        step = (hi_e - lo_e) / target.levels
        zp = np.rint(-lo_e / step)
        gmin, gmax = -zp * step, (target.levels - zp) * step
    step, gmin, gmax, x = step[:, None], gmin[:, None], gmax[:, None], edges[None, :]
    xc = np.clip(x, gmin, gmax)
    k = np.rint(xc / step)
    u = xc - k * step
    f = k * step**3 / 12.0 + u**3 / 3.0 + np.maximum(x - gmax, 0.0) ** 3 / 3.0 - np.maximum(gmin - x, 0.0) ** 3 / 3.0
    return ((f[:, 1:] - f[:, :-1]) / np.diff(edges)[None, :] * counts[None, :]).sum(axis=1)


@pytest.mark.parametrize("seed", range(6))
def test_expected_sq_error_is_bit_identical_to_the_dense_formulation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    m = int(rng.integers(2, 3000))
    a = float(rng.normal(0.0, 3.0))
    edges = np.linspace(a, a + float(rng.uniform(0.5, 6.0)), m + 1)
    counts = rng.integers(0, 50, m).astype(np.float64)
    counts[rng.random(m) < (0.0 if seed == 0 else 0.6)] = 0.0  # seed 0: every bin used; others: sparse
    counts[[0, -1]] = 1.0
    f = np.arange(1, 201) / 200.0
    lo = np.minimum(edges[0] * f, -1e-3) if seed % 2 else np.full_like(f, min(edges[0], -1e-3))
    hi = np.maximum(edges[-1] * f, 1e-3)
    target = QuantTarget(int(rng.integers(2, 9)), bool(seed % 3 == 0))
    np.testing.assert_array_equal(expected_sq_error(edges, counts, lo, hi, target),
                                  dense_sq_error_reference(edges, counts, lo, hi, target))
