"""AvoidPairSaturationPass: int8 weights that saturate AVX2's vpmaddubsw pairs are made safe, exactly."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from qdq_models import check_onnx, export, minmax_ranges, run

from qdeploy.evaluate.metrics import sqnr_db
from qdeploy.graph.passes import AvoidPairSaturationPass
from qdeploy.graph.passes.pair_saturation import MAX_PAIR_SUM, limit_pair_sums, max_pair_sums
from qdeploy.quant.presets import get_preset
from qdeploy.quant.quantize import quantize, tensors_to_calibrate

#: Fused kernels vs the QDQ reference math once no pair can overflow (only requantize rounding differs).
MIN_FUSED_VS_QDQ_SQNR_DB = 40.0
#: Halving weights (shrink 128/254) costs about one bit: still close to float on this tiny net.
MIN_SQNR_VS_FLOAT_DB = 30.0


@pytest.fixture(scope="module")
def hot_model() -> ir.Model:
    """One 3x3 conv, 6 -> 4 channels, all weights positive and equal: every pair sums to 254 codes."""
    import torch

    conv = torch.nn.Conv2d(6, 4, 3, padding=1)
    with torch.no_grad():
        conv.weight.fill_(0.01)
        conv.bias.zero_()
    return export(conv, torch.rand(1, 6, 8, 8) * 255)


@pytest.fixture(scope="module")
def hot_feeds() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [{"x": rng.uniform(200, 255, (1, 6, 8, 8)).astype(np.float32)} for _ in range(3)]


def _quantized(model: ir.Model, feeds, guard: bool, weight_dtype: str = "int8") -> ir.Model:
    config = get_preset("ort-cpu-int8", weight_dtype=weight_dtype, avoid_pair_saturation=guard or None)
    names = tensors_to_calibrate(model, config)
    return quantize(model, minmax_ranges(model, names, feeds), config)


def _fused_vs_qdq(model: ir.Model, feeds) -> float:
    return min(sqnr_db(run(model, f, "disable")["y"], run(model, f, "all")["y"]) for f in feeds)


def test_guard_removes_saturation(hot_model, hot_feeds) -> None:
    unguarded = _quantized(hot_model, hot_feeds, guard=False)
    guarded = _quantized(hot_model, hot_feeds, guard=True)
    check_onnx(guarded)
    assert _fused_vs_qdq(guarded, hot_feeds) >= MIN_FUSED_VS_QDQ_SQNR_DB
    for feeds in hot_feeds:
        assert sqnr_db(run(hot_model, feeds)["y"], run(guarded, feeds, "all")["y"]) >= MIN_SQNR_VS_FLOAT_DB
    weight = next(n.inputs[0].const_value for n in guarded.graph if n.op_type == "DequantizeLinear"
                  and n.inputs[0].const_value is not None and len(n.inputs[0].const_value.shape) == 4)
    q = weight.numpy()
    assert q.dtype == np.int8
    assert max_pair_sums(np.moveaxis(q, 1, -1).reshape(q.shape[0], -1)).max() <= MAX_PAIR_SUM
    # Only meaningful where ORT's AVX2 u8s8 kernel saturates (no VNNI): the unguarded model must be off.
    from qdeploy.quant.presets import cpu_has_vnni

    if not cpu_has_vnni():
        assert _fused_vs_qdq(unguarded, hot_feeds) < MIN_FUSED_VS_QDQ_SQNR_DB


def test_uint8_weights_untouched(hot_model, hot_feeds) -> None:
    model = _quantized(hot_model, hot_feeds, guard=False, weight_dtype="uint8")
    result = AvoidPairSaturationPass()(model)
    assert not result.modified


def test_limit_pair_sums_projects_only_bad_pairs() -> None:
    flat = np.array([[127, 127, -100, -60, 127, -127, 5, 120, 90]], np.int8)
    fixed, changed = limit_pair_sums(flat)
    assert changed == 2
    np.testing.assert_array_equal(fixed[0, :2], [64, 64])
    np.testing.assert_array_equal(fixed[0, 2:4], [-84, -44])  # both lowered by 16
    np.testing.assert_array_equal(fixed[0, 4:6], [127, -127])  # opposite signs cannot saturate
    np.testing.assert_array_equal(fixed[0, 6:8], [5, 120])
    np.testing.assert_array_equal(fixed[0, 8], 90)  # odd tail pairs with an implicit zero
    assert max_pair_sums(fixed).max() <= MAX_PAIR_SUM


def test_config_rejects_guard_for_uint8_weights() -> None:
    from qdeploy.errors import InputError

    with pytest.raises(InputError, match="avoid_pair_saturation"):
        get_preset("ort-cpu-int8", weight_dtype="uint8", avoid_pair_saturation=True)
