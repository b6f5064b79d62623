"""Observers keep constant-size state: memory does not grow with the number of calibration samples."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from qdeploy.calib import make_observer, observer_names

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
