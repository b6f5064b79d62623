"""The collector: pass-0 activations replayed in pass 1 (same ranges, fewer model runs), clip warnings."""

from __future__ import annotations

import logging

import numpy as np
import onnx.parser
import onnx_ir as ir
import pytest

from qdeploy.calib import make_observer
from qdeploy.calib.collect import (
    CLIP_WARN_FRACTION,
    LOW_BIT_CLIP_WARN_FRACTION,
    CollectConfig,
    clip_warning_threshold,
    collect_ranges,
)
from qdeploy.types import QuantTarget

N_SAMPLES = 12
UINT8 = QuantTarget(8, False)
SAMPLE_BYTES = 2 * 4 * 16 * 4  # x and y (two float32 tensors of 4x16) per sample


def relu_model() -> ir.Model:
    """x -> Relu -> Mul 3 -> y: two tensors to calibrate (x is an input, y is computed)."""
    proto = onnx.parser.parse_model(
        """<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4, 16] x) => (float[N, 4, 16] y) <float three = {3.0}> {
            r = Relu (x)
            y = Mul (r, three)
        }"""
    )
    return ir.serde.deserialize_model(proto)


class Data:
    """Seeded samples; counts how often the data was opened (once per pass that is not replayed)."""

    def __init__(self) -> None:
        self.opened = 0
        rng = np.random.default_rng(0)
        self.samples = [{"x": rng.standard_normal((1, 4, 16)).astype(np.float32) * (i + 1)} for i in range(N_SAMPLES)]

    def __call__(self) -> list[dict[str, np.ndarray]]:
        self.opened += 1
        return self.samples


def collect(method: str, replay_bytes: int, batch_size: int = 1, target: QuantTarget = UINT8,
            data: Data | None = None, **options: object) -> dict:
    data = data or Data()
    return collect_ranges(relu_model(), ["x", "y"], data, lambda: make_observer(method, **options), target,
                          CollectConfig(batch_size=batch_size, threads=1, replay_bytes=replay_bytes))


@pytest.mark.parametrize("method", ["percentile", "mse", "entropy", "dobi"])
def test_replayed_passes_give_the_same_ranges(method: str) -> None:
    reference = collect(method, replay_bytes=0)  # both passes run the model
    for budget, batch in ((1 << 30, 1), (5 * SAMPLE_BYTES, 1), (1 << 30, 5), (2 * 5 * SAMPLE_BYTES, 5)):
        got = collect(method, replay_bytes=budget, batch_size=batch)
        assert {k: (r.lo, r.hi, r.clipped_fraction) for k, r in got.items()} == \
               {k: (r.lo, r.hi, r.clipped_fraction) for k, r in reference.items()}, (budget, batch)


def test_replay_skips_the_second_read_only_when_everything_fits() -> None:
    for budget, opened in ((1 << 30, 1), (N_SAMPLES * SAMPLE_BYTES, 1), (N_SAMPLES * SAMPLE_BYTES - 1, 2), (0, 2)):
        data = Data()
        collect("mse", replay_bytes=budget, data=data)
        assert data.opened == opened, budget
    one_pass = Data()
    collect("minmax", replay_bytes=1 << 30, data=one_pass)  # nothing to replay for a one-pass method
    assert one_pass.opened == 1


def test_negative_replay_budget_is_refused() -> None:
    with pytest.raises(ValueError, match="replay_bytes"):
        CollectConfig(replay_bytes=-1)


def test_warning_names_the_tensor_that_is_clipped_too_much(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="qdeploy.calib.collect"):
        ranges = collect("percentile", replay_bytes=0, percentile=95.0)  # clips about 5 % per side
    clipped = {k: r.clipped_fraction for k, r in ranges.items()}
    assert all(c > CLIP_WARN_FRACTION for c in clipped.values()), clipped
    messages = [r.getMessage() for r in caplog.records]
    assert any("tensor 'x'" in m and "percentile" in m and "clip" in m for m in messages), messages
    assert any("tensor 'y'" in m for m in messages), messages
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="qdeploy.calib.collect"):
        collect("minmax", replay_bytes=0)  # clips nothing
    assert not caplog.records


def test_low_bit_grids_allow_more_clipping_before_warning(caplog: pytest.LogCaptureFixture) -> None:
    assert clip_warning_threshold(8) == CLIP_WARN_FRACTION < clip_warning_threshold(4) == LOW_BIT_CLIP_WARN_FRACTION
    with caplog.at_level(logging.WARNING, logger="qdeploy.calib.collect"):
        ranges = collect("percentile", replay_bytes=0, target=QuantTarget(4, False), percentile=97.0)
    assert all(CLIP_WARN_FRACTION < r.clipped_fraction < LOW_BIT_CLIP_WARN_FRACTION for r in ranges.values())
    assert not caplog.records  # 3 % clipped on a 4-bit grid is a choice, not a failure
    with caplog.at_level(logging.WARNING, logger="qdeploy.calib.collect"):
        ranges = collect("percentile", replay_bytes=0, target=QuantTarget(4, False), percentile=60.0)
    assert ranges["x"].clipped_fraction > LOW_BIT_CLIP_WARN_FRACTION > ranges["y"].clipped_fraction  # 80 %, 40 %
    assert [m for m in (r.getMessage() for r in caplog.records) if "tensor 'x'" in m]
    assert not [m for m in (r.getMessage() for r in caplog.records) if "tensor 'y'" in m]
