"""TensorRT-RTX builds of SwinIR-light x2 (a transformer SR model): INT8 QDQ and INT4 weight-only.

CI's proof that qdeploy's outputs for a transformer (MatMul of two activations, Softmax, LayerNorm,
window attention with dynamic padding) parse and compile with TensorRT-RTX (ahead of time, no GPU).
The export uses the TorchScript exporter: the same graph semantics as dynamo in ~1/5 of the time, which
keeps the INT8 and INT4 block-32 builds in the default suite; other block sizes and dynamic profiles
are ``slow``.

Documented behaviour: RTX's parser refuses UINT4 initializers (TensorRT has no unsigned 4-bit type), so
INT4 weight-only for TensorRT must be symmetric (``WeightOnlyConfig(symmetric=True)``, the default).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import qdq_models as qm

pytest.importorskip("tensorrt_rtx_libs")
pytest.importorskip("tensorrt_rtx_bindings")

from qdeploy.errors import UnsupportedModelError
from qdeploy.graph.io import load_model, save_model
from qdeploy.quant.weight_only import WeightOnlyConfig, quantize_weights_only
from qdeploy.trt import BuildConfig, build_engine, check_placement, parse_shape_ranges

#: A real SwinIR-light engine is megabytes; anything below this is not an engine.
MIN_ENGINE_BYTES = 1_000_000
STATIC_SHAPE = "input:1x3x32x32"
DYNAMIC_SHAPES = "input:1x3x32x32-1x3x48x48-1x3x64x64"
#: SwinIR-light's Linear weights are ~48% of its file (convs, position-bias tables and masks stay
#: float), so INT4 at block 32 shrinks the whole file ~1.6x; 1.4x is the floor.
MIN_SWINIR_SIZE_RATIO = 1.4


@pytest.fixture(scope="module")
def swin_paths(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """swinir-light-x2 exported with dynamic H/W, calibrated (tensorrt-int8, minmax) on 4 demo-photo
    crops, and weight-only INT4 (block 32)."""
    from qdeploy_calib_data.demo import demo_calibration_dir

    from qdeploy.calib.data import DataConfig
    from qdeploy.export import ExportConfig, export_model
    from qdeploy.pipeline import CalibrateConfig, calibrate_model

    root = tmp_path_factory.mktemp("swinir")
    onnx_path = root / "swinir.onnx"
    export_model(ExportConfig(spec="swinir-light-x2", output=onnx_path, input_shapes=((1, 3, 32, 32),),
                              dynamic_hw=True, exporter="torchscript", threads=1))
    photos = demo_calibration_dir(root / "calib", max_side=128)
    result = calibrate_model(CalibrateConfig(
        model=onnx_path, output=root / "swinir.trt.qdq.onnx", method="minmax",
        data=DataConfig(photos, crop=32, num_samples=4), preset="tensorrt-int8", threads=1,
    ))
    int4 = save_model(quantize_weights_only(load_model(onnx_path), WeightOnlyConfig(block_size=32)),
                      root / "swinir.int4.onnx")
    return {"float": onnx_path, "qdq": result.output, "fusion": result.fusion, "int4": int4, "root": root}


def _layers(path: Path) -> int:
    return sum(n.op_type in ("MatMul", "Gemm", "Conv") for n in load_model(path).graph)


def _assert_engine(result, precision: str) -> Counter:
    assert len(result.engine) > MIN_ENGINE_BYTES and result.parser_errors == 0
    assert result.flavor == "tensorrt-rtx" and result.precision == precision and result.strongly_typed
    return Counter((layer["type"], layer["dtype"]) for layer in result.layers)


def test_swinir_int8_engine_builds(swin_paths: dict) -> None:
    """Every MatMul (weights and attention), Gemm and Conv carries Q/DQ and the check says INT8."""
    layers = _layers(swin_paths["float"])
    fusion = swin_paths["fusion"]
    assert fusion["int8"] == fusion["quantized"] == layers and fusion["fallback"] == 0, fusion
    assert check_placement(load_model(swin_paths["qdq"]), "tensorrt").fully_fused
    result = build_engine(swin_paths["qdq"], BuildConfig(precision="int8",
                                                         shapes=parse_shape_ranges((STATIC_SHAPE,))))
    types = _assert_engine(result, "int8")
    dequantize = sum(n for (kind, _), n in types.items() if kind == "DEQUANTIZE")
    assert dequantize >= 2 * layers, types  # each layer has both inputs dequantized


def test_swinir_int4_weight_only_engine_builds(swin_paths: dict) -> None:
    model = load_model(swin_paths["int4"])
    weights = sum(n.op_type == "DequantizeLinear" for n in model.graph)
    report = check_placement(model, "tensorrt")
    assert len(report.weight_only) == weights > 0 and report.fully_fused, report.summary_line()
    ratio = swin_paths["float"].stat().st_size / swin_paths["int4"].stat().st_size
    assert ratio > MIN_SWINIR_SIZE_RATIO, ratio
    result = build_engine(swin_paths["int4"], BuildConfig(precision="int4-weights",
                                                          shapes=parse_shape_ranges((STATIC_SHAPE,))))
    types = _assert_engine(result, "int4-weights")
    assert types[("CONSTANT", "INT4")] == weights and types[("DEQUANTIZE", "HALF")] == weights, types


@pytest.mark.slow
@pytest.mark.parametrize("block_size", [64, 128])
def test_swinir_int4_other_block_sizes_with_dynamic_shapes(swin_paths: dict, block_size: int) -> None:
    """K is 60 or 120 here: one partial block per column, which RTX accepts."""
    model = quantize_weights_only(load_model(swin_paths["float"]), WeightOnlyConfig(block_size=block_size))
    path = save_model(model, swin_paths["root"] / f"swinir.int4.b{block_size}.onnx")
    result = build_engine(path, BuildConfig(precision="int4-weights",
                                            shapes=parse_shape_ranges((DYNAMIC_SHAPES,))))
    _assert_engine(result, "int4-weights")


@pytest.mark.slow
def test_swinir_int8_engine_with_dynamic_shapes(swin_paths: dict) -> None:
    result = build_engine(swin_paths["qdq"], BuildConfig(precision="int8",
                                                         shapes=parse_shape_ranges((DYNAMIC_SHAPES,))))
    _assert_engine(result, "int8")


def test_rtx_parser_rejects_uint4_weights(tmp_path: Path) -> None:
    """The documented limit: asymmetric (UINT4) weight-only models cannot be parsed by RTX."""
    model = quantize_weights_only(qm.mlp_net(), WeightOnlyConfig(block_size=16, symmetric=False))
    path = save_model(model, tmp_path / "uint4.onnx")
    with pytest.raises(UnsupportedModelError, match="Failed to import initializer"):
        build_engine(path, BuildConfig(precision="int4-weights"))
    symmetric = save_model(quantize_weights_only(qm.mlp_net(), WeightOnlyConfig(block_size=16)),
                           tmp_path / "int4.onnx")
    result = build_engine(symmetric, BuildConfig(precision="int4-weights"))
    assert len(result.engine) > 10_000  # Gemm(transB=1) with axis-1 blocks and MatMul both parse
