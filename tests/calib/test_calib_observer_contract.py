"""The contract every registered observer keeps, whatever its method (the collector relies on it)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qdeploy.calib import OBSERVERS, make_observer, observer_names
from qdeploy.errors import CalibrationError, InputError
from qdeploy.types import QuantTarget, TensorRange

TARGETS = [QuantTarget(8, True), QuantTarget(8, False), QuantTarget(4, False)]
TARGET_IDS = ["int8-sym", "uint8-asym", "uint4-asym"]
BOUND_EPS = 1e-6  # bounds may not leave the observed range by more than float noise
N_SAMPLES = 64


def heavy_tailed(seed: int = 0, shape: tuple[int, ...] = (N_SAMPLES, 4, 32)) -> np.ndarray:
    """Normal activations with 0.2% outliers scaled by 50, shifted so the two tails differ."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    x[rng.random(shape) < 0.002] *= 50.0
    return x + np.float32(0.3)


def run(name: str, batches: list[np.ndarray], target: QuantTarget, **config: object) -> TensorRange:
    obs = make_observer(name, **config)
    for pass_index in range(obs.passes):
        for batch in batches:
            obs.observe(batch, pass_index)
    return obs.compute_range("t", target)


def split(x: np.ndarray, size: int) -> list[np.ndarray]:
    return [x[i : i + size] for i in range(0, len(x), size)]


def test_builtin_methods_are_registered() -> None:
    assert observer_names() == ["auto", "dobi", "entropy", "minmax", "mse", "percentile"]
    for name in observer_names():
        assert OBSERVERS.get(name).config_cls is type(make_observer(name).config)


@pytest.mark.parametrize("target", TARGETS, ids=TARGET_IDS)
@pytest.mark.parametrize("name", observer_names())
def test_batch_size_invariant_and_deterministic(name: str, target: QuantTarget) -> None:
    x = heavy_tailed()
    whole = run(name, [x], target)
    assert run(name, [x], target) == whole
    assert run(name, split(x, 1), target) == whole
    assert run(name, split(x, 7), target) == whole


def offset_positive() -> np.ndarray:
    """All values in [5, 6]: zero is far outside the data."""
    return np.random.default_rng(7).uniform(5.0, 6.0, (N_SAMPLES, 16)).astype(np.float32)


DATA = {
    "heavy-tailed": lambda: heavy_tailed(1),
    "offset-positive": offset_positive,
    "all-negative": lambda: -np.abs(heavy_tailed(8)),
}


@pytest.mark.parametrize("data", DATA)
@pytest.mark.parametrize("target", TARGETS, ids=TARGET_IDS)
@pytest.mark.parametrize("name", observer_names())
def test_bounds_lie_in_observed_range(name: str, target: QuantTarget, data: str) -> None:
    x = DATA[data]()
    r = run(name, split(x, 16), target)
    assert r.method == name
    assert r.count == x.size
    assert (r.observed_min, r.observed_max) == (float(x.min()), float(x.max()))
    assert r.lo < r.hi
    assert 0.0 <= r.clipped_fraction <= 1.0
    if target.symmetric:
        assert r.lo == -r.hi
        assert r.hi <= float(np.abs(x).max()) + BOUND_EPS
    else:
        assert r.lo >= r.observed_min - BOUND_EPS
        assert r.hi <= r.observed_max + BOUND_EPS
    json.dumps(r.to_dict(), allow_nan=False)  # cache-ready: plain, finite JSON


@pytest.mark.parametrize("name", observer_names())
def test_one_sided_tensor_keeps_zero_side(name: str) -> None:
    x = np.maximum(heavy_tailed(2), 0.0)  # post-ReLU
    r = run(name, [x], QuantTarget(8, False))
    assert r.lo == 0.0
    assert 0.0 < r.hi <= float(x.max())


@pytest.mark.parametrize("value", [0.0, 3.0, -2.5])
@pytest.mark.parametrize("target", TARGETS, ids=TARGET_IDS)
@pytest.mark.parametrize("name", observer_names())
def test_constant_input_gives_valid_range(name: str, target: QuantTarget, value: float) -> None:
    r = run(name, [np.full((8, 5), value, dtype=np.float32)], target)
    assert np.isfinite([r.lo, r.hi]).all()
    assert r.lo < r.hi
    assert r.lo <= value <= r.hi
    assert r.clipped_fraction == 0.0
    if target.symmetric:
        assert r.lo == -r.hi


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("name", observer_names())
def test_non_finite_values_raise(name: str, bad: float) -> None:
    x = heavy_tailed(3)
    x[0, 0, :3] = bad
    obs = make_observer(name)
    with pytest.raises(CalibrationError) as err:
        obs.observe(x, 0)
    assert "3 " in err.value.message
    assert "calibration data" in err.value.hint


@pytest.mark.parametrize("name", observer_names())
def test_never_observed_raises(name: str) -> None:
    obs = make_observer(name)
    with pytest.raises(CalibrationError, match="no values"):
        obs.compute_range("t", QuantTarget())
    obs.observe(np.zeros((0, 4), dtype=np.float32), 0)  # empty batches do not count
    with pytest.raises(CalibrationError, match="no values"):
        obs.compute_range("t", QuantTarget())


@pytest.mark.parametrize("name", [n for n in observer_names() if make_observer(n).passes > 1])
def test_missing_or_different_second_pass_raises(name: str) -> None:
    x = heavy_tailed(4)
    obs = make_observer(name)
    obs.observe(x, 0)
    with pytest.raises(CalibrationError, match="passes"):
        obs.compute_range("t", QuantTarget())
    obs.observe(x[:10], 1)  # pass 1 saw fewer values than pass 0
    with pytest.raises(CalibrationError, match="same calibration data"):
        obs.compute_range("t", QuantTarget())


@pytest.mark.parametrize("name", observer_names())
def test_config_round_trips_through_dict(name: str) -> None:
    obs = make_observer(name)
    data = json.loads(json.dumps(obs.config.to_dict()))
    again = make_observer(name, **data)
    assert again.config == obs.config
    assert type(again) is type(obs)


@pytest.mark.parametrize("name", observer_names())
def test_unknown_option_names_valid_fields(name: str) -> None:
    with pytest.raises(InputError) as err:
        make_observer(name, no_such_option=1)
    assert "no_such_option" in err.value.message
    for field in make_observer(name).config.to_dict():
        assert field in err.value.hint


def test_bad_option_values_and_unknown_method_raise_input_error() -> None:
    with pytest.raises(InputError, match="num_bins"):
        make_observer("entropy", num_bins=64)
    with pytest.raises(InputError, match="num_candidates"):
        make_observer("mse", num_candidates=10)
    with pytest.raises(InputError, match="percentile"):
        make_observer("percentile", percentile=101.0)
    with pytest.raises(InputError, match="minmax"):
        make_observer("kl-magic")


def test_pass_order_is_enforced() -> None:
    obs = make_observer("entropy")
    x = heavy_tailed(5)
    with pytest.raises(CalibrationError):
        obs.observe(x, 1)  # pass 1 before any pass-0 data
    obs.observe(x, 0)
    obs.observe(x, 1)
    with pytest.raises(ValueError, match="after pass"):
        obs.observe(x, 0)
    with pytest.raises(ValueError, match="pass_index"):
        obs.observe(x, 2)
