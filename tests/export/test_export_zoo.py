"""The model zoo: names, deterministic builds, shipped weights and the missing-weights warning."""

from __future__ import annotations

import logging
from importlib import resources

import pytest
import torch
from qdeploy_models import ZooEntry, build, zoo_names
from qdeploy_models.zoo import _load_weights, get_entry

from qdeploy.errors import InputError


def test_zoo_names() -> None:
    assert {"abpn-x3", "tiny-sr"} <= set(zoo_names())


def test_tiny_sr_is_deterministic_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    m1, x1 = build("tiny-sr")
    after = torch.rand(1)
    m2, x2 = build("tiny-sr")
    assert torch.equal(before, after)  # building did not consume the caller's random stream
    torch.testing.assert_close(m1(x1[0]), m2(x2[0]), rtol=0, atol=0)
    assert tuple(m1(x1[0]).shape) == (1, 3, 32, 32)


def test_abpn_inputs_use_pixel_range() -> None:
    module, (x,) = build("abpn-x3")
    assert tuple(x.shape) == get_entry("abpn-x3").default_input_shape
    assert float(x.max()) > 1.5  # [0, 255] data, not [0, 1]
    assert not module.training


def test_abpn_loads_shipped_weights() -> None:
    weights = resources.files("qdeploy_models") / "weights" / "abpn_x3.pt"
    if not weights.is_file():
        pytest.skip("abpn_x3.pt not trained yet")
    module, _ = build("abpn-x3")
    with resources.as_file(weights) as path:
        state = torch.load(path, map_location="cpu", weights_only=True)
    torch.testing.assert_close(module.state_dict()["body.0.weight"], state["body.0.weight"], rtol=0, atol=0)


def test_missing_weights_warn_and_keep_random_init(caplog: pytest.LogCaptureFixture) -> None:
    entry = ZooEntry("ghost", lambda: torch.nn.Conv2d(1, 1, 1), "test", (1, 1, 4, 4),
                     weights="no_such_file.pt")
    module = entry.builder()
    before = module.weight.detach().clone()
    with caplog.at_level(logging.WARNING, logger="qdeploy_models.zoo"):
        _load_weights(module, entry)
    assert "weights file weights/no_such_file.pt is missing" in caplog.text
    assert "RANDOM" in caplog.text
    assert torch.equal(module.weight, before)


def test_unknown_zoo_name_lists_names() -> None:
    with pytest.raises(InputError) as info:
        build("abpn-x5")
    assert "abpn-x3" in info.value.hint


@pytest.mark.parametrize(("shape", "value_range"),
                         [((), (0.0, 1.0)), ((1, 0, 4), (0.0, 1.0)), ((1, 3), (1.0, 1.0))])
def test_zoo_entry_validation(shape: tuple[int, ...], value_range: tuple[float, float]) -> None:
    with pytest.raises(ValueError):
        ZooEntry("bad", lambda: torch.nn.Identity(), "bad", shape, input_range=value_range)
