"""Real TensorRT-RTX engine builds on this (CPU-only) machine: ahead-of-time parse + compile.

TensorRT-RTX cannot *run* engines without a supported GPU, so these tests prove that qdeploy's QDQ
outputs (a small conv net and the real ABPN x3) parse and compile, and that the build machinery (errors,
timing cache, engine cache, shape profiles) works. The ABPN INT8 build stays in the default suite.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import qdq_models as qm

pytest.importorskip("tensorrt_rtx_libs")
pytest.importorskip("tensorrt_rtx_bindings")

from qdeploy.errors import BackendUnavailableError, InputError, UnsupportedModelError
from qdeploy.graph.io import load_model, save_model
from qdeploy.quant import quantize, tensors_to_calibrate
from qdeploy.quant.presets import tensorrt_int8
from qdeploy.trt import BuildConfig, build_engine, check_placement, gpu_name, parse_shape_ranges

#: A real engine for these nets is hundreds of KB; anything below this is not an engine.
MIN_ENGINE_BYTES = 10_000
ABPN_SHAPES = "input:1x3x16x16-1x3x32x32-1x3x48x48"


@pytest.fixture(scope="module")
def conv_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The 3-conv residual test net as float ONNX and as tensorrt-int8 QDQ ONNX."""
    root = tmp_path_factory.mktemp("conv")
    model = qm.conv_net()
    config = tensorrt_int8()
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.random((1, 3, 12, 12)).astype(np.float32)} for _ in range(3)]
    qmodel = quantize(model, qm.minmax_ranges(model, tensors_to_calibrate(model, config), feeds), config)
    return {"float": save_model(model, root / "net.onnx"), "qdq": save_model(qmodel, root / "net.qdq.onnx")}


@pytest.fixture(scope="module")
def abpn_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """ABPN x3 exported with dynamic H/W and calibrated (tensorrt-int8, minmax) on 0..255 random images."""
    from qdeploy.calib.data import DataConfig
    from qdeploy.export import ExportConfig, export_model
    from qdeploy.pipeline import CalibrateConfig, calibrate_model

    root = tmp_path_factory.mktemp("abpn")
    onnx_path = root / "abpn.onnx"
    export_model(
        ExportConfig(
            spec="abpn-x3", output=onnx_path, input_shapes=((1, 3, 64, 64),), dynamic_hw=True, threads=1
        )
    )
    rng = np.random.default_rng(0)
    # smooth-ish "images": low-frequency noise upsampled, in 0..255 like the model's training inputs
    low = rng.random((4, 3, 8, 8)).astype(np.float32) * 255
    images = np.clip(
        np.repeat(np.repeat(low, 4, axis=2), 4, axis=3) + rng.normal(0, 8, (4, 3, 32, 32)), 0, 255
    )
    np.savez(root / "calib.npz", input=images.astype(np.float32))
    result = calibrate_model(
        CalibrateConfig(
            model=onnx_path,
            output=root / "abpn.trt.qdq.onnx",
            method="minmax",
            data=DataConfig(root / "calib.npz"),
            preset="tensorrt-int8",
            threads=1,
        )
    )
    return {"float": onnx_path, "qdq": result.output, "fusion": result.fusion}  # type: ignore[dict-item]


def _assert_engine(result, precision: str) -> None:
    assert len(result.engine) > MIN_ENGINE_BYTES
    assert result.parser_errors == 0
    assert result.strongly_typed and result.flavor == "tensorrt-rtx" and result.precision == precision
    assert result.device == (gpu_name() or "cpu-aot")
    assert result.layers, "the parsed network has no layers"


def test_conv_net_int8_engine(conv_paths: dict[str, Path], tmp_path: Path) -> None:
    result = build_engine(conv_paths["qdq"], BuildConfig(precision="int8"), output=tmp_path / "net.plan")
    _assert_engine(result, "int8")
    assert (tmp_path / "net.plan").read_bytes() == result.engine
    types = {layer["type"] for layer in result.layers}
    assert {"QUANTIZE", "DEQUANTIZE", "CONVOLUTION"} <= types
    assert not result.fp16_rewrite


def test_conv_net_fp16_engine_uses_half_tensors(conv_paths: dict[str, Path]) -> None:
    result = build_engine(conv_paths["float"], BuildConfig(precision="fp16"))
    _assert_engine(result, "fp16")
    assert result.fp16_rewrite
    convs = [layer for layer in result.layers if layer["type"] == "CONVOLUTION"]
    assert convs and all(layer["dtype"] == "HALF" for layer in convs)


def test_conv_net_best_engine_mixes_int8_and_fp16(conv_paths: dict[str, Path]) -> None:
    result = build_engine(conv_paths["qdq"], BuildConfig(precision="best"))
    _assert_engine(result, "best")
    assert "DEQUANTIZE" in {layer["type"] for layer in result.layers}
    assert "HALF" in {layer["dtype"] for layer in result.layers}


def test_abpn_x3_int8_engine_with_dynamic_shapes(abpn_paths: dict, tmp_path: Path) -> None:
    """CI's proof that the real zoo model's TensorRT QDQ output parses and compiles."""
    assert abpn_paths["fusion"]["int8"] == abpn_paths["fusion"]["quantized"] == 7, abpn_paths["fusion"]
    assert check_placement(load_model(abpn_paths["qdq"]), "tensorrt").fully_fused
    config = BuildConfig(precision="int8", shapes=parse_shape_ranges(ABPN_SHAPES))
    result = build_engine(abpn_paths["qdq"], config, output=tmp_path / "abpn.plan")
    _assert_engine(result, "int8")
    types = [layer["type"] for layer in result.layers]
    assert types.count("CONVOLUTION") == 7 and types.count("DEQUANTIZE") >= 14


def test_abpn_x3_fp16_engine(abpn_paths: dict) -> None:
    result = build_engine(
        abpn_paths["float"], BuildConfig(precision="fp16", shapes=parse_shape_ranges(ABPN_SHAPES))
    )
    _assert_engine(result, "fp16")


def test_unsupported_graph_lists_every_parser_error(tmp_path: Path) -> None:
    model = qm.from_text("""
        <ir_version: 8, opset_import: ["" : 17, "qdeploy.test" : 1]>
        g (float[1,4] x) => (float[1,4] y) {
          h = qdeploy.test.Frobnicate(x)
          y = Relu(h)
        }""")
    path = save_model(model, tmp_path / "bad.onnx")
    with pytest.raises(UnsupportedModelError) as err:
        build_engine(path, BuildConfig(precision="fp32"))
    text = err.value.message
    assert "cannot parse" in text and "Frobnicate" in text and "error(s)" in text
    assert err.value.hint


def test_precision_and_model_must_fit(conv_paths: dict[str, Path]) -> None:
    with pytest.raises(InputError, match="needs a QDQ model"):
        build_engine(conv_paths["float"], BuildConfig(precision="int8"))
    with pytest.raises(InputError, match="takes a float model"):
        build_engine(conv_paths["qdq"], BuildConfig(precision="fp16"))
    with pytest.raises(UnsupportedModelError, match="INT4"):
        build_engine(conv_paths["qdq"], BuildConfig(precision="int4-weights"))


def test_dynamic_input_without_shapes_is_refused(abpn_paths: dict) -> None:
    with pytest.raises(InputError, match="dynamic shape") as err:
        build_engine(abpn_paths["float"], BuildConfig(precision="fp32"))
    assert "--input-shape input:" in err.value.hint


def test_timing_cache_written_and_reused(conv_paths: dict[str, Path], tmp_path: Path) -> None:
    cache = tmp_path / "timing.cache"
    build_engine(conv_paths["qdq"], BuildConfig(precision="int8", timing_cache=cache))
    first = cache.read_bytes()
    assert first, "timing cache file is empty"
    again = build_engine(conv_paths["qdq"], BuildConfig(precision="int8", timing_cache=cache))
    assert not again.cached and len(again.engine) > MIN_ENGINE_BYTES
    assert cache.read_bytes(), "the reused cache was not written back"


def test_engine_cache_hit_on_second_identical_build(conv_paths: dict[str, Path], tmp_path: Path) -> None:
    config = BuildConfig(precision="int8", engine_cache_dir=tmp_path / "engines")
    first = build_engine(conv_paths["qdq"], config)
    start = time.perf_counter()
    second = build_engine(conv_paths["qdq"], config, output=tmp_path / "out.plan")
    hit_seconds = time.perf_counter() - start
    assert not first.cached and second.cached
    assert second.key == first.key and second.engine == first.engine
    assert (tmp_path / "engines" / f"{first.key}.plan").is_file()
    assert (tmp_path / "out.plan").read_bytes() == first.engine
    assert hit_seconds < first.seconds
    other = build_engine(
        conv_paths["qdq"], BuildConfig(precision="best", engine_cache_dir=tmp_path / "engines")
    )
    assert not other.cached and other.key != first.key


def test_rtx_backend_is_honest_about_the_gpu() -> None:
    from qdeploy.backends import get_backend

    backend = get_backend("tensorrt-rtx", require=False)
    ok, why = backend.available()
    if gpu_name() is None:
        assert not ok and "can build engines here" in why
        with pytest.raises(BackendUnavailableError):
            get_backend("tensorrt-rtx")
    else:
        assert ok, why


def test_build_cli_json_and_errors(conv_paths: dict[str, Path], tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner
    from qdeploy_cli.main import cli

    runner = CliRunner()
    out = tmp_path / "cli.plan"
    result = runner.invoke(
        cli, ["build", str(conv_paths["qdq"]), "--precision", "int8", "-o", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["bytes"] == out.stat().st_size > MIN_ENGINE_BYTES and data["flavor"] == "tensorrt-rtx"
    bad = runner.invoke(
        cli, ["build", str(conv_paths["float"]), "--precision", "int8", "-o", str(tmp_path / "x")]
    )
    assert bad.exit_code == 2 and "needs a QDQ model" in bad.output
    assert not (tmp_path / "x").exists()


def test_rtx_capability_gate_rejects_h100_class_gpus() -> None:
    """RTX lists consumer/workstation GPUs only; the H100 (9.0) must not count as able to run engines."""
    from qdeploy.trt.loader import import_trt, rtx_supports

    trt = import_trt("tensorrt-rtx")
    assert rtx_supports(trt, (8, 9)) and rtx_supports(trt, (12, 0))
    assert not rtx_supports(trt, (9, 0))
