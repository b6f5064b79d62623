"""quantize(): both presets end to end on real ORT sessions, including the integer-kernel proof."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from qdq_models import (
    check_onnx,
    conv_net,
    float_op_net,
    from_text,
    minmax_ranges,
    mlp_net,
    op_types,
    run,
    two_consumer_net,
)

from qdeploy.errors import CalibrationError, UnsupportedModelError
from qdeploy.evaluate.metrics import sqnr_db
from qdeploy.graph.select import constant_array
from qdeploy.quant import QuantConfig, get_preset, quantization_summary, quantize, tensors_to_calibrate
from qdeploy.quant.presets import cpu_has_vnni, ort_cpu_int8
from qdeploy.types import TensorRange

#: 8-bit QDQ of these tiny nets with min/max ranges of the evaluated inputs.
MIN_SQNR_DB = 30.0
#: On a non-VNNI CPU, int8 weights must lose at least this much to int16 saturation vs uint8 weights
#: (measured 15.7 dB on the conv net; if ORT ever stops saturating, this test says the preset can change).
MIN_SATURATION_GAP_DB = 6.0
MATMUL_OPS = {"QLinearMatMul", "MatMulIntegerToFloat", "MatMulInteger", "DynamicQuantizeMatMul"}

MODELS = {
    "conv": (conv_net, lambda r: r.uniform(0, 1, (1, 3, 12, 12))),
    "mlp": (mlp_net, lambda r: r.standard_normal((4, 16))),
    "float_ops": (float_op_net, lambda r: r.uniform(0, 1, (1, 3, 8, 8))),
    "two_consumers": (two_consumer_net, lambda r: r.uniform(0, 1, (1, 3, 8, 8))),
}
_CACHE: dict[str, tuple[ir.Model, list[dict[str, np.ndarray]]]] = {}


def _model(key: str) -> tuple[ir.Model, list[dict[str, np.ndarray]]]:
    if key not in _CACHE:
        build, sample = MODELS[key]
        rng = np.random.default_rng(0)
        _CACHE[key] = (build(), [{"x": sample(rng).astype(np.float32)} for _ in range(3)])
    return _CACHE[key]


def _quantized(key: str, config: QuantConfig) -> tuple[ir.Model, ir.Model, list[dict[str, np.ndarray]]]:
    model, feeds = _model(key)
    ranges = minmax_ranges(model, tensors_to_calibrate(model, config), feeds)
    return model, quantize(model, ranges, config), feeds


def _sqnr(model: ir.Model, qmodel: ir.Model, feeds, level: str,
          path: str | None = None) -> float:
    return min(sqnr_db(run(model, f)["y"], run(qmodel, f, level, path)["y"]) for f in feeds)


def test_tensors_to_calibrate_per_preset() -> None:
    model, _ = _model("conv")
    assert tensors_to_calibrate(model, get_preset("ort-cpu-int8")) == [
        "x", "/Relu_output_0", "/c2/Conv_output_0", "/Relu_1_output_0", "y"]
    trt = tensors_to_calibrate(model, get_preset("tensorrt-int8"))
    assert trt == ["x", "/Relu_output_0", "/Relu_1_output_0"]


@pytest.mark.parametrize("key", ["conv", "mlp", "float_ops"])
def test_ort_preset_runs_on_integer_kernels(key: str, tmp_path: Path) -> None:
    model, qmodel, feeds = _quantized(key, get_preset("ort-cpu-int8"))
    check_onnx(qmodel)
    assert _sqnr(model, qmodel, feeds, "disable") >= MIN_SQNR_DB
    opt = tmp_path / "opt.onnx"
    assert _sqnr(model, qmodel, feeds, "all", str(opt)) >= MIN_SQNR_DB
    fused = Counter(op_types(onnx.load(str(opt))))
    float_convs = sum(n.op_type == "Conv" for n in model.graph)
    assert fused["QLinearConv"] == float_convs and fused["Conv"] == 0 and fused["FusedConv"] == 0
    float_matmuls = sum(n.op_type in ("MatMul", "Gemm") for n in model.graph)
    assert sum(fused[op] for op in MATMUL_OPS) + fused["QGemm"] == float_matmuls
    assert fused["MatMul"] == 0 and fused["Gemm"] == 0 and fused["FusedGemm"] == 0


@pytest.mark.skipif(cpu_has_vnni(), reason="saturation only happens without VNNI/AMX/dotprod")
def test_non_vnni_choice_avoids_saturation() -> None:
    model, feeds = _model("conv")
    results = {}
    for vnni in (False, True):
        config = ort_cpu_int8(vnni=vnni)
        qmodel = quantize(model, minmax_ranges(model, tensors_to_calibrate(model, config), feeds), config)
        results[vnni] = (_sqnr(model, qmodel, feeds, "disable"), _sqnr(model, qmodel, feeds, "all"))
    (qdq_u8, fused_u8), (_, fused_s8) = results[False], results[True]
    assert fused_u8 == pytest.approx(qdq_u8, abs=0.5)  # the u8u8 kernel is as good as the QDQ math
    assert fused_u8 - fused_s8 >= MIN_SATURATION_GAP_DB


@pytest.mark.parametrize("key", ["conv", "mlp", "two_consumers"])
def test_tensorrt_preset_zero_points_and_dedicated_pairs(key: str) -> None:
    model, qmodel, feeds = _quantized(key, get_preset("tensorrt-int8"))
    check_onnx(qmodel)
    assert _sqnr(model, qmodel, feeds, "disable") >= MIN_SQNR_DB
    for node in qmodel.graph:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zp = constant_array(node.inputs[2])
            assert zp.dtype == np.int8 and not zp.any(), node.name
            if node.op_type == "DequantizeLinear":
                assert len(node.outputs[0].uses()) == 1  # one pair (or weight DQ) per consumer
    summary = quantization_summary(qmodel)
    assert summary["biases_quantized"] == 0  # TensorRT keeps the bias float
    if key == "two_consumers":
        relu_q = [n for n in qmodel.graph
                  if n.op_type == "QuantizeLinear" and n.inputs[0].name.startswith("/Relu")]
        assert len(relu_q) == 2


def test_exclude_by_name_keeps_head_float() -> None:
    config = get_preset("ort-cpu-int8", exclude_nodes=("head",))
    model, qmodel, feeds = _quantized("conv", config)
    head = next(n for n in qmodel.graph if n.name == "/head/Conv")
    assert head.inputs[1].const_value is not None and head.inputs[1].const_value.dtype == ir.DataType.FLOAT
    summary = quantization_summary(qmodel)
    assert summary["quantized_nodes"]["Conv"] == 2 and summary["weights_quantized"] == 2
    assert summary["float_nodes"]["Conv"] == 1  # its input has no quantized consumer, so it stays float too
    assert head.inputs[0].producer().op_type == "Relu"
    assert _sqnr(model, qmodel, feeds, "all") >= MIN_SQNR_DB


def test_op_type_and_include_filters() -> None:
    model, _, feeds = _quantized("mlp", get_preset("ort-cpu-int8"))
    _, only_gemm, _ = _quantized("mlp", get_preset("ort-cpu-int8", op_types=("Gemm",)))
    assert quantization_summary(only_gemm)["weights_quantized"] == 1
    matmuls = [n for n in only_gemm.graph if n.op_type == "MatMul"]
    assert all(n.inputs[1].producer() is None or n.inputs[1].producer().op_type != "DequantizeLinear"
               for n in matmuls[:1])
    _, included, _ = _quantized("conv", get_preset("tensorrt-int8", include_nodes=(r"^/c1/",)))
    assert quantization_summary(included)["weights_quantized"] == 1
    assert _sqnr(model, only_gemm, feeds, "all") >= MIN_SQNR_DB


def test_float_ops_stay_float_and_summary() -> None:
    _, qmodel, _ = _quantized("float_ops", get_preset("ort-cpu-int8", integer_region=False))
    summary = quantization_summary(qmodel)
    assert summary["quantized_nodes"] == {"Conv": 2}
    assert summary["weights_quantized"] == 2 and summary["biases_quantized"] == 2
    assert summary["qdq_pairs"] == 4  # x, c1 out, resize out, y
    assert {"Sigmoid", "Resize"} <= set(summary["float_nodes"])


def test_integer_region_takes_the_ops_between_layers() -> None:
    """The preset default: Sigmoid gets Q/DQ on [0, 1], the nearest Resize runs on its uint8 codes."""
    _, qmodel, _ = _quantized("float_ops", get_preset("ort-cpu-int8"))
    summary = quantization_summary(qmodel)
    assert summary["quantized_nodes"] == {"Conv": 2}
    assert summary["qdq_pairs"] == 3  # x, c1 out, y; the sigmoid's Q feeds the Resize, whose DQ follows it
    (resize,) = [n for n in qmodel.graph if n.op_type == "Resize"]
    assert resize.inputs[0].producer().op_type == "QuantizeLinear"
    assert [u.node.op_type for u in resize.outputs[0].uses()] == ["DequantizeLinear"]


def test_quantize_is_functional_and_records_config() -> None:
    model, feeds = _model("conv")
    before = op_types(model)
    config = get_preset("ort-cpu-int8")
    qmodel = quantize(model, minmax_ranges(model, tensors_to_calibrate(model, config), feeds), config)
    assert op_types(model) == before and qmodel is not model
    assert json.loads(qmodel.metadata_props["qdeploy.quant_config"])["name"] == "ort-cpu-int8"


def test_missing_and_bad_ranges_are_calibration_errors() -> None:
    model, feeds = _model("conv")
    config = get_preset("tensorrt-int8")
    ranges = minmax_ranges(model, tensors_to_calibrate(model, config), feeds)
    partial = {k: v for k, v in ranges.items() if k != "/Relu_output_0"}
    with pytest.raises(CalibrationError, match="/Relu_output_0"):
        quantize(model, partial, config)
    bad = dict(ranges, x=dataclasses.replace(ranges["x"], hi=float("inf")))
    with pytest.raises(CalibrationError, match="'x'"):
        quantize(model, bad, config)


OLD_OPSET = """
<ir_version: 6, opset_import: ["" : 11]>
g (float[1, 2, 4, 4] x) => (float[1, 2, 4, 4] y) <float[2, 2, 1, 1] w = {1.0, 0.0, 0.0, 1.0}> {
  y = Conv (x, w)
}
"""


def test_old_opset_is_unsupported() -> None:
    model = from_text(OLD_OPSET)
    with pytest.raises(UnsupportedModelError) as info:
        tensors_to_calibrate(model, get_preset("tensorrt-int8"))
    assert "opset 17" in info.value.hint
    with pytest.raises(UnsupportedModelError):
        quantize(model, {"x": TensorRange("x", 0, 1, 0, 1, 0.0, "minmax", 1)}, get_preset("tensorrt-int8"))
