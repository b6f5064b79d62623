"""ShiftOneSidedActivationsPass: exact in float (padding too), only on quantized branches, and worth it."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir
import pytest
from qdq_models import check_onnx, export, minmax_ranges, run

from qdeploy.evaluate.metrics import sqnr_db
from qdeploy.graph.passes import CleanupGraphPass, ShiftOneSidedActivationsPass
from qdeploy.graph.passes.shift_activations import one_sided_bounds
from qdeploy.graph.select import NodeFilter, activation_tensors, constant_array
from qdeploy.quant import QuantConfig, get_preset, quantize, tensors_to_calibrate
from qdeploy.types import TensorRange

Feeds = list[dict[str, np.ndarray]]
Anchor = tuple[ir.Model, Feeds]

#: Float graph before vs after the shift: |difference| / max|output| (float32 rounding of c * sum(W)).
MAX_FLOAT_REL_ERROR = 1e-4
#: Without the explicit Pad the border pixels are off by c * (padded taps); must be far above rounding.
MIN_NAIVE_PADDING_REL_ERROR = 1e-2
#: tensorrt-int8 output SQNR gain from the shift on the 3-conv ReLU anchor net, [0, 255] inputs, min/max
#: ranges (measured 2.1-2.5 dB over 3 inputs: 59.0-59.7 -> 61.4-62.2 dB; weight rounding, which the shift
#: does not touch, keeps it below the ~6 dB of one activation bit).
MIN_SHIFT_GAIN_DB = 1.5

RNG_SEED = 0


def _value(name: str, array: np.ndarray) -> ir.Value:
    return ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(ir.DataType.FLOAT),
                    const_value=ir.tensor(np.asarray(array, np.float32), name=name))


def _single_op(op: str, attrs: dict, x_shape: tuple[int, ...], weight: np.ndarray,
               bias: np.ndarray | None) -> ir.Model:
    """``y = op(x, W[, B])`` plus a float consumer ``z = x * 2`` of the same input (like ABPN's anchor)."""
    x = ir.Value(name="x", shape=ir.Shape(x_shape), type=ir.TensorType(ir.DataType.FLOAT))
    inits = [_value("w", weight), _value("two", np.array(2.0))]
    if bias is not None:
        inits.append(_value("b", bias))
    y_node = ir.node(op, [x, inits[0], *inits[2:]], attrs, name="op")
    z_node = ir.node("Mul", [x, inits[1]], name="anchor")
    for node, name in ((y_node, "y"), (z_node, "z")):
        node.outputs[0].name, node.outputs[0].type = name, ir.TensorType(ir.DataType.FLOAT)
        node.outputs[0].shape = ir.Shape([None] * len(x_shape))  # rank only; ORT infers the rest
    graph = ir.Graph([x], [y_node.outputs[0], z_node.outputs[0]], nodes=[y_node, z_node],
                     initializers=inits, opset_imports={"": 17}, name="single")
    return ir.Model(graph, ir_version=8)


def _conv(pads: tuple[int, ...] | None, strides: int = 1, group: int = 1, bias: bool = True,
          auto_pad: str | None = None) -> tuple[ir.Model, tuple[int, ...]]:
    rng = np.random.default_rng(RNG_SEED)
    attrs: dict = {"strides": [strides, strides], "group": group, "kernel_shape": [3, 3]}
    if pads is not None:
        attrs["pads"] = list(pads)
    if auto_pad is not None:
        attrs["auto_pad"] = auto_pad
    w = rng.laplace(0, 0.1, (6, 4 // group, 3, 3))
    return _single_op("Conv", attrs, (1, 4, 11, 10), w, rng.normal(0, 1, 6) if bias else None), (1, 4, 11, 10)


def _gemm(trans_b: int, beta: float = 1.0, bias: bool = True) -> tuple[ir.Model, tuple[int, ...]]:
    rng = np.random.default_rng(RNG_SEED)
    w = rng.normal(0, 0.2, (5, 7) if trans_b else (7, 5))
    attrs = {"transB": trans_b, "alpha": 0.5, "beta": beta}
    return _single_op("Gemm", attrs, (3, 7), w, rng.normal(0, 1, 5) if bias else None), (3, 7)


def _matmul() -> tuple[ir.Model, tuple[int, ...]]:
    rng = np.random.default_rng(RNG_SEED)
    return _single_op("MatMul", {}, (2, 3, 7), rng.normal(0, 0.2, (7, 5)), None), (2, 3, 7)


CASES = {
    "conv_same_pad": lambda: _conv((1, 1, 1, 1)),
    "conv_asymmetric_pad": lambda: _conv((0, 2, 1, 0)),
    "conv_valid": lambda: _conv(None),
    "conv_stride2_pad": lambda: _conv((1, 1, 1, 1), strides=2),
    "conv_auto_same_upper": lambda: _conv(None, auto_pad="SAME_UPPER"),
    "conv_no_bias": lambda: _conv((1, 1, 1, 1), bias=False),
    "conv_groups2": lambda: _conv((1, 1, 1, 1), group=2),
    "gemm_transB0": lambda: _gemm(0),
    "gemm_transB1": lambda: _gemm(1),
    "gemm_no_C_beta0": lambda: _gemm(1, beta=0.0, bias=False),
    "matmul": _matmul,
}

UNPADDED = {"conv_valid", "gemm_transB0", "gemm_transB1", "gemm_no_C_beta0", "matmul"}


def _feeds(shape: tuple[int, ...], n: int = 2, low: float = 0.0) -> Feeds:
    rng = np.random.default_rng(1)
    return [{"x": rng.uniform(low, 255.0, shape).astype(np.float32)} for _ in range(n)]


def _shifted(model: ir.Model, ranges: dict[str, TensorRange]
             ) -> tuple[ir.Model, ShiftOneSidedActivationsPass]:
    shifted = model.clone()
    shift = ShiftOneSidedActivationsPass(ranges, NodeFilter().matches)
    assert shift(shifted).modified
    CleanupGraphPass()(shifted)
    return shifted, shift


def _rel_error(model: ir.Model, other: ir.Model, feeds: Feeds) -> float:
    worst = 0.0
    for f in feeds:
        ref, out = run(model, f), run(other, f)
        np.testing.assert_array_equal(ref["z"], out["z"])  # the float consumer still reads the raw x
        worst = max(worst, float(np.abs(ref["y"] - out["y"]).max() / np.abs(ref["y"]).max()))
    return worst


@pytest.mark.parametrize("case", sorted(CASES))
def test_float_graph_is_unchanged(case: str) -> None:
    model, shape = CASES[case]()
    feeds = _feeds(shape)
    shifted, shift = _shifted(model, minmax_ranges(model, ["x"], feeds))
    check_onnx(shifted)
    assert _rel_error(model, shifted, feeds) <= MAX_FLOAT_REL_ERROR
    types = [n.op_type for n in shifted.graph]
    assert types.count("Sub") == 1 and types.count("Pad") == (0 if case in UNPADDED else 1)
    sub = next(n for n in shifted.graph if n.op_type == "Sub")
    c = float(constant_array(sub.inputs[1]))
    for name, r in shift.shifted_ranges.items():
        assert r.lo == pytest.approx(-r.hi) and r.details["source"] == "x", name
        assert r.details["shift"] == pytest.approx(c, rel=1e-6)  # the Sub's constant is its float32 copy


def test_padding_needs_the_explicit_pad() -> None:
    """Bias compensation alone is wrong at the border: undo the Pad and the error must show."""
    model, shape = CASES["conv_same_pad"]()
    feeds = _feeds(shape)
    shifted, _ = _shifted(model, minmax_ranges(model, ["x"], feeds))
    pad = next(n for n in shifted.graph if n.op_type == "Pad")
    conv = next(n for n in shifted.graph if n.op_type == "Conv")
    conv.replace_input_with(0, pad.inputs[0])
    conv.attributes["pads"] = ir.AttrInt64s("pads", [1, 1, 1, 1])
    CleanupGraphPass()(shifted)
    assert _rel_error(model, shifted, feeds) >= MIN_NAIVE_PADDING_REL_ERROR


def test_padding_widens_range_to_zero() -> None:
    """A padded conv reads the padding zeros: c comes from [0, hi] even when x >= 50; unpadded: [lo, hi]."""
    for case, expected_lo in (("conv_same_pad", 0.0), ("conv_valid", 50.0)):
        model, shape = CASES[case]()
        feeds = _feeds(shape, low=50.0)
        ranges = minmax_ranges(model, ["x"], feeds)
        _, shift = _shifted(model, ranges)
        lo, hi = one_sided_bounds(ranges["x"])
        assert lo > 50.0
        lo = min(lo, expected_lo) if expected_lo == 0.0 else lo
        for r in shift.shifted_ranges.values():
            assert r.details["shift"] == pytest.approx((lo + hi) / 2)
            assert r.hi - r.lo == pytest.approx(hi - lo)


def _anchor_net() -> ir.Model:
    """ABPN in miniature: [0, 255] input -> conv/ReLU/conv/ReLU/conv, plus the input added back (anchor)."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.c2 = torch.nn.Conv2d(8, 8, 3, padding=1)
            self.head = torch.nn.Conv2d(8, 3, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.c2(torch.relu(self.c1(x))))
            return self.head(h) + x

    torch.manual_seed(5)
    net = Net()
    with torch.no_grad():  # trained-like heavy-tailed weights, small enough to keep outputs in range
        for conv in (net.c1, net.c2, net.head):
            conv.weight.copy_(torch.distributions.Laplace(0.0, 0.05).sample(conv.weight.shape))
    return export(net, torch.rand(1, 3, 12, 12) * 255)


@pytest.fixture(scope="module")
def anchor() -> Anchor:
    return _anchor_net(), _feeds((1, 3, 12, 12), n=3)


def _trt(model: ir.Model, feeds: Feeds, shift: bool, **overrides: object) -> ir.Model:
    config = get_preset("tensorrt-int8", shift_one_sided=shift, **overrides)
    return quantize(model, minmax_ranges(model, tensors_to_calibrate(model, config), feeds), config)


def test_quantized_structure(anchor: Anchor) -> None:
    model, feeds = anchor
    qmodel = _trt(model, feeds, shift=True)
    check_onnx(qmodel)
    graph = qmodel.graph
    subs = [n for n in graph if n.op_type == "Sub"]
    assert sorted(n.inputs[0].name for n in subs) == sorted(activation_tensors(model.graph, NodeFilter()))
    for node in graph:
        if node.op_type == "Sub":  # t - c only feeds the Pad of the (quantized) conv
            assert [u.node.op_type for u in node.outputs[0].uses()] == ["Pad"]
        if node.op_type == "Conv":
            dq = node.inputs[0].producer()
            q = dq.inputs[0].producer()
            assert dq.op_type == "DequantizeLinear" and q.op_type == "QuantizeLinear"
            assert q.inputs[0].producer().op_type == "Pad"
            assert list(node.attributes.get_ints("pads")) == [0] * 4
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zp = constant_array(node.inputs[2])
            assert zp.dtype == np.int8 and not zp.any()
    add = next(n for n in graph if n.op_type == "Add")
    assert "x" in [v.name for v in add.inputs]  # the anchor reads the raw input, not x - c


def test_compensation_uses_rounded_weights(anchor: Anchor) -> None:
    """b' - b == c * sum(DQ(W_int8)) per channel: float weights would leave a constant error per channel."""
    model, feeds = anchor
    qmodel = _trt(model, feeds, shift=True)
    biases = {v.name: constant_array(v) for v in model.graph.initializers.values() if v.name.endswith("bias")}
    for conv in (n for n in qmodel.graph if n.op_type == "Conv"):
        pad = conv.inputs[0].producer().inputs[0].producer().inputs[0].producer()
        c = float(-constant_array(pad.inputs[2]))
        wdq = conv.inputs[1].producer()
        scale = constant_array(wdq.inputs[1])[:, None, None, None]
        w = constant_array(wdq.inputs[0]).astype(np.float64) * scale
        original = biases[conv.inputs[2].name.removesuffix("_shift_compensated")]
        np.testing.assert_allclose(constant_array(conv.inputs[2]) - original, c * w.sum(axis=(1, 2, 3)),
                                   rtol=1e-5, atol=1e-3)


def test_excluded_and_two_sided_tensors_are_not_shifted(anchor: Anchor) -> None:
    model, feeds = anchor
    qmodel = _trt(model, feeds, shift=True, exclude_nodes=("c2",))
    assert sorted(n.inputs[0].name for n in qmodel.graph if n.op_type == "Sub") == ["/Relu_1_output_0", "x"]
    two_sided = dataclasses.replace(minmax_ranges(model, ["x"], feeds)["x"], observed_min=-1.0)
    shifted = model.clone()
    assert not ShiftOneSidedActivationsPass({"x": two_sided}, NodeFilter().matches)(shifted).modified


def test_shift_improves_tensorrt_sqnr(anchor: Anchor) -> None:
    model, feeds = anchor
    plain, shifted = _trt(model, feeds, shift=False), _trt(model, feeds, shift=True)
    for f in feeds:
        ref = run(model, f)["y"]
        gain = sqnr_db(ref, run(shifted, f)["y"]) - sqnr_db(ref, run(plain, f)["y"])
        assert gain >= MIN_SHIFT_GAIN_DB


def test_preset_default_and_validation() -> None:
    assert get_preset("tensorrt-int8").shift_one_sided
    assert not get_preset("ort-cpu-int8").shift_one_sided
    with pytest.raises(ValueError, match="symmetric"):
        QuantConfig(shift_one_sided=True)  # default asymmetric activations
