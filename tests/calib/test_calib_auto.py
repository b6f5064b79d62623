"""The ``auto`` observer: one histogram, every method's bounds, exactly what each method alone returns."""

from __future__ import annotations

import numpy as np
import pytest

from qdeploy.calib import make_observer
from qdeploy.types import QuantTarget, TensorRange

TARGETS = [QuantTarget(8, symmetric=False), QuantTarget(8, symmetric=True), QuantTarget(4, symmetric=False)]


def run(name: str, x: np.ndarray, target: QuantTarget, **options: object) -> TensorRange:
    obs = make_observer(name, **options)
    for p in range(obs.passes):
        for batch in np.array_split(x, 4):
            obs.observe(batch, p)
    return obs.compute_range("t", target)


def _data(kind: str) -> np.ndarray:
    rng = np.random.default_rng(7)
    if kind == "relu":
        return np.maximum(rng.laplace(0.0, 1.0, 20_000), 0.0).astype(np.float32)
    if kind == "outliers":
        x = rng.normal(0.0, 1.0, 20_000)
        x[:10] = 40.0
        return x.astype(np.float32)
    return rng.laplace(0.3, 0.7, 20_000).astype(np.float32)


@pytest.mark.parametrize("target", TARGETS, ids=str)
@pytest.mark.parametrize("kind", ["relu", "outliers", "bell"])
def test_candidates_equal_each_method_alone(kind: str, target: QuantTarget) -> None:
    x = _data(kind)
    auto = run("auto", x, target)
    cands = auto.details["candidates"]
    assert set(cands) == {"mse", "minmax", "percentile", "entropy"}
    for method, options in (("mse", {}), ("minmax", {}), ("percentile", {}), ("entropy", {"stride": 8})):
        alone = run(method, x, target, **options)
        assert cands[method][:2] == pytest.approx([alone.lo, alone.hi], rel=0, abs=0), method
        assert cands[method][2] == pytest.approx(alone.clipped_fraction, abs=1e-12), method


def test_returns_the_mse_bounds_and_says_so() -> None:
    x = _data("outliers")
    target = QuantTarget(8, symmetric=False)
    auto, mse = run("auto", x, target), run("mse", x, target)
    assert (auto.lo, auto.hi) == (mse.lo, mse.hi)
    assert auto.details["chosen"] == "mse"
    assert auto.method == "auto"


def test_options_are_validated() -> None:
    from qdeploy.errors import InputError

    with pytest.raises(InputError, match="percentile"):
        make_observer("auto", percentile=30.0)
    with pytest.raises(InputError, match="entropy_stride"):
        make_observer("auto", entropy_stride=0)
