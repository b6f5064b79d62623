"""IntegerTailPass: an anchor-residual SR net (ABPN-like) becomes integer from the input Q to one final DQ."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from qdq_models import check_onnx, export, minmax_ranges, run

from qdeploy.evaluate.metrics import sqnr_db
from qdeploy.graph.passes import IntegerTailPass
from qdeploy.quant.presets import get_preset
from qdeploy.quant.quantize import quantize, tensors_to_calibrate

#: The full-integer tail only adds rounding to integer pixels (|err| <= 0.5) and QLinearAdd's requantize.
MIN_SQNR_VS_FLOAT_DB = 30.0
#: Plain QDQ vs full-integer model: both outputs are on the same pixels, the tail only rounds once more.
MAX_ABS_VS_PLAIN_QDQ = 1.0
#: Ops ORT may keep between the input Q and the final DQ: all on uint8 (or shape int64) tensors.
INTEGER_OPS = {"QLinearConv", "QLinearAdd", "Transpose", "DepthToSpace", "Expand", "Tile", "Reshape",
               "Unsqueeze", "Shape", "Concat", "Slice", "Gather", "Constant"}
FLOAT_TAIL_OPS = {"Add", "Clip", "Conv", "FusedConv"}


@pytest.fixture(scope="module")
def sr_model() -> ir.Model:
    """ABPN x3 with 8 features (anchor, residual Add, DepthToSpace, Clip(0, 255)), input 1x3x10x12."""
    import torch
    from qdeploy_models.abpn import ABPN

    torch.manual_seed(0)
    return export(ABPN(scale=3, features=8), torch.rand(1, 3, 10, 12) * 255)


@pytest.fixture(scope="module")
def sr_feeds() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [{"x": np.round(rng.uniform(0, 255, (1, 3, 10, 12))).astype(np.float32)} for _ in range(4)]


def _quantized(model: ir.Model, feeds, full_integer: bool) -> ir.Model:
    config = get_preset("ort-cpu-int8", full_integer=full_integer, weight_dtype="uint8")
    names = tensors_to_calibrate(model, config)
    return quantize(model, minmax_ranges(model, names, feeds), config)


def _ops(model: ir.Model) -> list[str]:
    return [n.op_type for n in model.graph]


def test_structure_is_integer_until_one_final_dq(sr_model, sr_feeds) -> None:
    plain = _quantized(sr_model, sr_feeds, full_integer=False)
    full = _quantized(sr_model, sr_feeds, full_integer=True)
    check_onnx(full)
    assert "Clip" in _ops(plain) and "Clip" not in _ops(full)
    out = full.graph.outputs[0]
    assert out.name == "y" and out.producer().op_type == "DequantizeLinear"
    (add,) = [n for n in full.graph if n.op_type == "Add"]
    assert [u.node.op_type for u in add.outputs[0].uses()] == ["QuantizeLinear"]
    assert all(v.producer().op_type == "DequantizeLinear" for v in add.inputs)
    shuffle = next(n for n in full.graph if n.op_type == "DepthToSpace")
    assert shuffle.inputs[0].type.dtype == ir.DataType.UINT8
    for node in full.graph:  # the anchor path (Tile/Reshape/Slice...) copies uint8, not float
        if node.op_type in ("Tile", "Expand", "Reshape", "Unsqueeze"):
            assert node.inputs[0].type.dtype == ir.DataType.UINT8, node.name


def test_output_grid_is_the_clip(sr_model, sr_feeds) -> None:
    full = _quantized(sr_model, sr_feeds, full_integer=True)
    dq = full.graph.outputs[0].producer()
    assert dq.inputs[1].const_value.numpy() == pytest.approx(1.0)
    assert int(dq.inputs[2].const_value.numpy()) == 0


def test_numerics_match_float_and_plain_qdq(sr_model, sr_feeds) -> None:
    plain = _quantized(sr_model, sr_feeds, full_integer=False)
    full = _quantized(sr_model, sr_feeds, full_integer=True)
    for feeds in sr_feeds:
        ref = run(sr_model, feeds)["y"]
        for level in ("disable", "all"):
            out = run(full, feeds, level)["y"]
            assert out.min() >= 0.0 and out.max() <= 255.0
            np.testing.assert_array_equal(out, np.round(out))  # integer pixels
            assert sqnr_db(ref, out) >= MIN_SQNR_VS_FLOAT_DB
            assert np.abs(out - run(plain, feeds, level)["y"]).max() <= MAX_ABS_VS_PLAIN_QDQ


def test_ort_optimized_graph_has_no_float_tail(sr_model, sr_feeds, tmp_path) -> None:
    optimized = tmp_path / "opt.onnx"
    full = _quantized(sr_model, sr_feeds, full_integer=True)
    run(full, sr_feeds[0], "all", optimized_path=str(optimized))
    graph = onnx.load(str(optimized)).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("QuantizeLinear") == 1 and ops.count("DequantizeLinear") == 1, ops
    assert graph.node[-1].op_type == "DequantizeLinear" and graph.node[-1].output[0] == "y"
    assert "QLinearAdd" in ops
    assert set(ops) - {"QuantizeLinear", "DequantizeLinear"} <= INTEGER_OPS, ops
    assert not FLOAT_TAIL_OPS & set(ops)
    plain_path = tmp_path / "plain.onnx"
    run(_quantized(sr_model, sr_feeds, False), sr_feeds[0], "all", optimized_path=str(plain_path))
    assert FLOAT_TAIL_OPS & {n.op_type for n in onnx.load(str(plain_path)).graph.node}  # the test can fail


def test_add_without_clip_stays_float() -> None:
    model = _from_text("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 4] a, float[1, 4] b) => (float[1, 4] y) {
            sa = Constant <value = float {0.5}> ()
            za = Constant <value = uint8 {0}> ()
            qa = QuantizeLinear(a, sa, za)
            da = DequantizeLinear(qa, sa, za)
            qb = QuantizeLinear(b, sa, za)
            db = DequantizeLinear(qb, sa, za)
            y = Add(da, db)
        }""")
    assert not IntegerTailPass()(model).modified


def test_sink_through_reshape_is_exact_and_keeps_output_name() -> None:
    model = _from_text("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 4] a) => (float[2, 2] y) {
            sa = Constant <value = float {0.5}> ()
            za = Constant <value = uint8 {10}> ()
            shape = Constant <value = int64[2] {2, 2}> ()
            qa = QuantizeLinear(a, sa, za)
            da = DequantizeLinear(qa, sa, za)
            y = Reshape(da, shape)
        }""")
    feeds = {"a": np.array([[-3.0, 0.2, 7.0, 100.0]], np.float32)}
    before = run(model, feeds)["y"]
    assert IntegerTailPass()(model).modified
    check_onnx(model)
    reshape = next(n for n in model.graph if n.op_type == "Reshape")
    assert reshape.inputs[0].producer().op_type == "QuantizeLinear"
    assert reshape.outputs[0].type.dtype == ir.DataType.UINT8
    assert model.graph.outputs[0].name == "y"
    np.testing.assert_array_equal(run(model, feeds)["y"], before)


def test_rejects_bad_dtype() -> None:
    with pytest.raises(ValueError, match="qdtype"):
        IntegerTailPass("int16")


def _from_text(text: str) -> ir.Model:
    from qdq_models import from_text

    return from_text(text)
