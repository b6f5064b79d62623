"""Sub-8-bit QDQ: activations saturate on their grid (not the uint8/int8 storage), weights sit on it, and
attention MatMuls get QDQ on both activation inputs. Real ORT sessions throughout.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from qdq_models import export, from_text, minmax_ranges, run

from qdeploy.errors import InputError
from qdeploy.graph.passes import CleanupGraphPass, InsertActivationQDQPass, QuantizeWeightsPass
from qdeploy.graph.passes._qdq import grid_clip_bounds
from qdeploy.graph.select import NodeFilter, constant_array, select_nodes
from qdeploy.quant import get_preset, quantize, tensors_to_calibrate
from qdeploy.quant.params import (
    QParams,
    activation_qparams,
    dequantize_array,
    int_range,
    quantize_array,
    quantize_weight,
)
from qdeploy.types import QuantTarget

CALIBRATED = (-1.0, 2.0)  # range the tensor is calibrated to; the test input goes 3x beyond it
GRID_ATOL = 1e-4  # codes recovered from float outputs: float32 rounding only
IDENTITY_TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
net (float[1, 64] x) => (float[1, 64] y)
{
    y = Identity (x)
}
"""


def _quantized_identity(qp: QParams) -> ir.Model:
    model = from_text(IDENTITY_TEXT)
    InsertActivationQDQPass({"x": qp})(model)
    CleanupGraphPass()(model)
    return model


def _beyond_range() -> np.ndarray:
    return np.linspace(3 * CALIBRATED[0], 3 * CALIBRATED[1], 64, dtype=np.float32)[None, :]


GRIDS = [(b, s, d) for b in (2, 3, 4, 8) for s, d in ((False, "uint8"), (True, "int8"), (True, "uint8"))]


@pytest.mark.parametrize("level", ["disable", "all"])
@pytest.mark.parametrize(("bits", "symmetric", "dtype"), GRIDS)
def test_out_of_range_values_saturate_on_the_grid(bits: int, symmetric: bool, dtype: str, level: str) -> None:
    qp = activation_qparams(*CALIBRATED, QuantTarget(bits, symmetric), dtype)
    x = _beyond_range()
    y = run(_quantized_identity(qp), {"x": x}, level)["y"]
    np.testing.assert_allclose(y, dequantize_array(quantize_array(x, qp), qp), atol=GRID_ATOL)  # numpy model
    codes = y / float(qp.scale) + int(qp.zero_point)
    qmin, qmax = int_range(bits, dtype, symmetric)
    np.testing.assert_allclose(codes, np.rint(codes), atol=GRID_ATOL)
    if bits < 8:  # both ends of the grid are reached, nothing beyond
        assert round(float(codes.min())) == qmin and round(float(codes.max())) == qmax
    else:  # 8-bit grids are saturated by the dtype itself (symmetric int8 may use -128)
        info = np.iinfo(dtype)
        assert info.min <= codes.min() and codes.max() <= info.max


@pytest.mark.parametrize(("bits", "clips"), [(2, 1), (3, 1), (4, 1), (7, 1), (8, 0)])
def test_clip_only_below_8_bits(bits: int, clips: int) -> None:
    model = _quantized_identity(activation_qparams(*CALIBRATED, QuantTarget(bits), "uint8"))
    types = [n.op_type for n in model.graph]
    assert types.count("Clip") == clips
    assert types[: clips + 2] == ["Clip"] * clips + ["QuantizeLinear", "DequantizeLinear"]
    ir.serde.serialize_model(model)  # a valid proto


def test_8_bit_grids_keep_storage_saturation() -> None:
    assert grid_clip_bounds(activation_qparams(-1.0, 1.0, QuantTarget(8, True), "int8")) is None
    assert grid_clip_bounds(QParams(np.array(0.1, np.float32), np.array(0, np.uint8))) is None  # no grid
    full = QParams(np.array(0.1, np.float32), np.array(0, np.uint8), qmin=0, qmax=255)
    assert grid_clip_bounds(full) is None


def test_per_channel_narrow_grid_is_rejected() -> None:
    qp = QParams(np.array([0.1, 0.2], np.float32), np.array([0, 0], np.uint8), 1, qmin=0, qmax=15)
    with pytest.raises(InputError, match="per-tensor"):
        _quantized_identity(qp)


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize(("symmetric", "dtype"), [(True, "int8"), (True, "uint8"), (False, "uint8")])
def test_low_bit_weights_are_stored_on_the_grid(conv_model, bits: int, symmetric: bool, dtype: str) -> None:
    model = conv_model.clone()
    QuantizeWeightsPass(NodeFilter(), lambda w, axis: quantize_weight(w, axis, bits, symmetric, dtype))(model)
    qmin, qmax = int_range(bits, dtype, symmetric)
    weights = [constant_array(n.inputs[0]) for n in model.graph if n.op_type == "DequantizeLinear"]
    assert len(weights) == 3
    for w in weights:
        assert w.dtype == np.dtype(dtype) and qmin <= w.min() and w.max() <= qmax
        assert w.min() == qmin or w.max() == qmax  # the grid is used to its edge, not a narrower one


@pytest.fixture(scope="module")
def attention_model() -> ir.Model:
    """A one-RSTB SwinIR (2 blocks, window 4): two batched activation x activation MatMuls per block."""
    import torch
    from qdeploy_models.swinir import SwinIR

    torch.manual_seed(0)
    return export(SwinIR(scale=2, dim=12, depths=(2,), heads=2, window=4).eval(), torch.rand(1, 3, 16, 16))


@pytest.mark.parametrize("preset", ["ort-cpu-int8", "tensorrt-int8"])
def test_attention_matmuls_get_qdq_on_both_inputs(attention_model: ir.Model, preset: str) -> None:
    config = get_preset(preset, bits=4)
    feeds = [{"x": np.random.default_rng(i).random((1, 3, 16, 16), dtype=np.float32)} for i in range(2)]
    names = tensors_to_calibrate(attention_model, config)
    qmodel = quantize(attention_model, minmax_ranges(attention_model, names, feeds), config)
    matmuls = select_nodes(qmodel.graph, NodeFilter(op_types=("MatMul",)))
    batched = [n for n in matmuls if not n.name.endswith(("qkv/MatMul", "proj/MatMul"))
               and "mlp" not in n.name]
    assert len(batched) == 4  # q @ k^T and attn @ v in each of the 2 blocks
    for node in matmuls:
        producers = [v.producer() for v in node.inputs[:2]]
        assert [p.op_type if p else None for p in producers] == ["DequantizeLinear"] * 2, node.name
    for node in batched:  # both operands are run-time tensors with a grid Clip before their Q
        for dq in (v.producer() for v in node.inputs[:2]):
            q = dq.inputs[0].producer()
            assert q.op_type == "QuantizeLinear" and q.inputs[0].producer().op_type == "Clip", node.name
    y = run(qmodel, feeds[0])["y"]
    assert np.isfinite(y).all() and y.shape == (1, 3, 32, 32)
