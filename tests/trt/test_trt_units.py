"""Pieces of the TensorRT path that need no TensorRT: shape ranges, the FP16 rewrite, configs, imports."""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import onnx_ir as ir
import pytest
import qdq_models as qm

from qdeploy.errors import BackendUnavailableError, InputError
from qdeploy.quant import quantize, tensors_to_calibrate
from qdeploy.quant.presets import tensorrt_int8
from qdeploy.trt import BuildConfig, ShapeRange, import_trt, parse_shape_range, parse_shape_ranges
from qdeploy.trt.fp16 import QDQ_FP16_OPSET, to_float16

#: FP16 keeps ~3 decimal digits; the 3-conv test net's outputs are O(1).
FP16_MAX_ABS_ERROR = 2e-2
MIN_FP16_SQNR_DB = 40.0


def test_shape_range_forms() -> None:
    full = parse_shape_range("input:1x3x64x64-1x3x360x640-1x3x720x1280")
    assert (full.name, full.min, full.opt, full.max) == (
        "input",
        (1, 3, 64, 64),
        (1, 3, 360, 640),
        (1, 3, 720, 1280),
    )
    single = parse_shape_range("1,3,32,32")
    assert single.name is None and single.is_static
    two = parse_shape_range("x:1x3x8x8-1x3x16x16")
    assert two.opt == two.max == (1, 3, 16, 16)
    assert len(parse_shape_ranges(("a:1x2", "b:1x3-1x4"))) == 2


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("x:1x3x64x64-1x3x32x32", "MIN-OPT-MAX"),
        ("x:1x3xAx4", "not a shape"),
        ("x:1x3-1x3x4", "ranks"),
        ("x:1-2-3-4", "4 shapes"),
    ],
)
def test_bad_shape_ranges_say_how_to_fix(text: str, needle: str) -> None:
    with pytest.raises(InputError) as err:
        parse_shape_range(text)
    assert needle in str(err.value)


def test_duplicate_and_ambiguous_ranges_are_refused() -> None:
    with pytest.raises(InputError, match="two shapes"):
        parse_shape_ranges(("x:1x2", "x:1x3"))
    with pytest.raises(InputError, match="name each"):
        parse_shape_ranges(("1x2", "x:1x3"))


def test_build_config_validates_and_normalises() -> None:
    config = BuildConfig(
        precision="fp16", flavor="tensorrt", shapes={"x": (1, 3, 8, 8)}, timing_cache="t.cache"
    )
    assert config.shapes == (ShapeRange("x", (1, 3, 8, 8), (1, 3, 8, 8), (1, 3, 8, 8)),)
    assert str(config.timing_cache) == "t.cache"
    for bad in (
        {"precision": "int3"},
        {"flavor": "onnx"},
        {"workspace_mb": 0},
        {"flavor": "tensorrt-rtx", "strongly_typed": False},
    ):
        with pytest.raises(ValueError):
            BuildConfig(**bad)


def test_missing_tensorrt_names_the_install_command() -> None:
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("full TensorRT is installed here")
    with pytest.raises(BackendUnavailableError) as err:
        import_trt("tensorrt")
    assert "pip install 'qdeploy[tensorrt]'" in err.value.hint


def _sqnr(ref: np.ndarray, out: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref**2) / max(np.sum((ref - out) ** 2), 1e-30)))


def test_fp16_rewrite_is_valid_onnx_and_numerically_close() -> None:
    model = qm.conv_net()
    half = to_float16(model)
    proto = ir.serde.serialize_model(half)
    onnx.checker.check_model(proto, full_check=True)
    assert [i.type.tensor_type.elem_type for i in proto.graph.input] == [onnx.TensorProto.FLOAT]
    assert [o.type.tensor_type.elem_type for o in proto.graph.output] == [onnx.TensorProto.FLOAT]
    weights = [v for v in half.graph.initializers.values() if v.const_value.dtype == ir.DataType.FLOAT16]
    assert weights, "no initializer was converted to float16"
    x = {"x": np.random.default_rng(0).random((1, 3, 12, 12)).astype(np.float32)}
    ref, out = qm.run(model, x)["y"], qm.run(half, x)["y"]
    assert np.abs(ref - out).max() < FP16_MAX_ABS_ERROR
    assert _sqnr(ref, out) > MIN_FP16_SQNR_DB


def test_fp16_rewrite_of_a_qdq_model_raises_opset_and_uses_half_scales() -> None:
    model = qm.conv_net()
    config = tensorrt_int8()
    feeds = [{"x": np.random.default_rng(0).random((1, 3, 12, 12)).astype(np.float32)}]
    qmodel = quantize(model, qm.minmax_ranges(model, tensors_to_calibrate(model, config), feeds), config)
    half = to_float16(qmodel)
    assert half.opset_imports[""] == QDQ_FP16_OPSET
    onnx.checker.check_model(ir.serde.serialize_model(half), full_check=True)
    scales = [n.inputs[1].const_value.dtype for n in half.graph if n.op_type == "DequantizeLinear"]
    assert scales and all(dtype == ir.DataType.FLOAT16 for dtype in scales)
    ref, out = qm.run(qmodel, feeds[0])["y"], qm.run(half, feeds[0])["y"]
    assert _sqnr(ref, out) > MIN_FP16_SQNR_DB - 15  # float16 scales move some values by one int8 step
