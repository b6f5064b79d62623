"""check_placement: hand-built good/bad QDQ placements, real quantize() outputs, and ORT's own verdict.

The ORT rules are checked against ground truth: ORT CPU's optimized graph (integer_kernel_summary) must
contain exactly as many integer layer kernels as the check predicts.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest
import qdq_models as qm
from click.testing import CliRunner
from fusion_models import qdq_conv
from qdeploy_cli.main import cli

from qdeploy.graph.io import save_model
from qdeploy.pipeline import integer_kernel_summary
from qdeploy.quant import quantize, tensors_to_calibrate
from qdeploy.quant.presets import ort_cpu_int8, tensorrt_int8
from qdeploy.trt import check_placement

#: ORT ops that are one integer layer kernel each (QLinearAdd etc. are not Conv/MatMul/Gemm layers).
LAYER_KERNELS = ("QLinearConv", "QLinearMatMul", "QGemm", "MatMulIntegerToFloat")

NETS = {
    "conv": (qm.conv_net, (1, 3, 12, 12)),
    "mlp": (qm.mlp_net, (4, 16)),
    "two_consumers": (qm.two_consumer_net, (1, 3, 8, 8)),
}


def _quantized(net: str, config) -> ir.Model:
    build, shape = NETS[net]
    model = build()
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.random(shape).astype(np.float32)} for _ in range(3)]
    return quantize(model, qm.minmax_ranges(model, tensors_to_calibrate(model, config), feeds), config)


def _ort_layer_kernels(model: ir.Model, tmp_path: Path) -> int:
    path = save_model(model, tmp_path / "m.qdq.onnx")
    return sum(n for op, n in integer_kernel_summary(path)["integer_ops"].items() if op in LAYER_KERNELS)


# --- hand-built placements ------------------------------------------------------------------------------


def test_good_tensorrt_placement_is_fully_fused() -> None:
    report = check_placement(qdq_conv(), "tensorrt")
    assert (report.int8, report.quantized) == (1, 1)
    assert report.fully_fused
    assert report.summary_line().startswith(
        "1/1 quantized layers will run INT8 on tensorrt; 0 will fall back"
    )


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"act_dtype": "uint8", "act_zp": 128, "out": "q"}, "zero point 128"),
        ({"act_dtype": "int8", "act_zp": 5}, "zero point 5"),
        ({"w_zp": 3}, "weight zero point is 3"),
        ({"w_axis": 1}, "axis 1"),
        ({"w_dq": False}, "weight 'w' has no DequantizeLinear"),
    ],
)
def test_tensorrt_misses_name_the_reason(kwargs: dict, needle: str) -> None:
    report = check_placement(qdq_conv(**kwargs), "tensorrt")
    assert (report.int8, report.quantized) == (0, 1)
    (verdict,) = report.fallbacks
    assert verdict.status == "fallback"
    assert any(needle in m for m in verdict.misses), verdict.misses
    assert f"1 will fall back: Conv ({verdict.misses[0]})" in report.summary_line()


def test_a_reason_shared_by_several_fallbacks_is_said_once() -> None:
    # calibrate repeated the same long reason for every layer a repair had left with float outputs
    report = check_placement(qdq_conv(act_dtype="uint8", consumers=3), "ort-cpu")
    falls = report.fallbacks
    assert len(falls) == 3 and len({v.misses[0] for v in falls}) == 1
    line = report.summary_line()
    assert line.count(falls[0].misses[0]) == 1, line
    assert f"3 will fall back: {', '.join(v.node for v in falls)} ({falls[0].misses[0]})" in line


def test_per_tensor_weight_scale_is_accepted_by_tensorrt() -> None:
    assert check_placement(qdq_conv(w_axis=None), "tensorrt").fully_fused


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"out": "qdq_relu"}, "between the Conv output and its Relu"),
        ({"consumers": 2, "dedicated": False}, "shared by 2 consumers"),
        ({"residual": True, "out": "none"}, "residual Add"),
    ],
)
def test_tensorrt_warnings_keep_int8_but_are_flagged(kwargs: dict, needle: str) -> None:
    report = check_placement(qdq_conv(**kwargs), "tensorrt")
    assert report.int8 == report.quantized >= 1
    assert not report.fully_fused
    assert any(needle in w for w in report.warnings), report.warnings
    assert "placement warning" in report.summary_line()


def test_dedicated_pairs_are_not_flagged() -> None:
    assert check_placement(qdq_conv(consumers=2, dedicated=True), "tensorrt").fully_fused


def test_convtranspose_axis_one_fuses_on_tensorrt_not_on_ort_cpu() -> None:
    model = qdq_conv(op="ConvTranspose", w_axis=1, act_dtype="uint8", act_zp=128, out="q")
    assert check_placement(qdq_conv(op="ConvTranspose", w_axis=1), "tensorrt").fully_fused
    ort = check_placement(model, "ort-cpu")
    assert (ort.int8, ort.quantized) == (0, 1)
    assert "no QDQ fusion for ConvTranspose" in ort.fallbacks[0].misses[0]


def test_float_layers_are_not_counted() -> None:
    report = check_placement(qm.conv_net(), "tensorrt")
    assert report.quantized == 0 and all(v.status == "float" for v in report.nodes)
    assert not report.fully_fused


# Hand-built ORT cases: the check's verdict must equal what ORT 1.31 really fuses.
ORT_CASES = {
    "u8_output_q": {"act_dtype": "uint8", "act_zp": 128, "out": "q"},
    "u8_relu_folds": {"act_dtype": "uint8", "act_zp": 0, "out": "relu_q"},
    "u8_relu_cannot_fold": {"act_dtype": "uint8", "act_zp": 10, "out": "relu_q"},
    "no_output_q": {"act_dtype": "uint8", "act_zp": 128, "out": "relu"},
    "float_weight": {"act_dtype": "uint8", "act_zp": 128, "out": "q", "w_dq": False},
    "convtranspose": {"act_dtype": "uint8", "act_zp": 128, "out": "q", "op": "ConvTranspose", "w_axis": 1},
    "shared_dq": {"act_dtype": "uint8", "act_zp": 128, "out": "q", "consumers": 2, "dedicated": False},
}


@pytest.mark.parametrize("case", sorted(ORT_CASES))
def test_ort_cpu_verdict_matches_ort_optimized_graph(case: str, tmp_path: Path) -> None:
    model = qdq_conv(**ORT_CASES[case])
    report = check_placement(model, "ort-cpu")
    assert report.int8 == _ort_layer_kernels(model, tmp_path), report.to_dict()
    for verdict in report.fallbacks:
        assert verdict.misses and all(isinstance(m, str) and m for m in verdict.misses)


def test_ort_cpu_float_weight_is_a_warning_not_a_miss() -> None:
    """ORT >= 1.21 quantizes a float weight between DQ and Q itself (the ORT case above proves it)."""
    report = check_placement(qdq_conv(**ORT_CASES["float_weight"]), "ort-cpu")
    assert report.int8 == 1 and any("is float" in w for w in report.warnings)


def test_ort_cpu_accepts_shared_dq_but_not_int8_activations() -> None:
    shared = check_placement(qdq_conv(**ORT_CASES["shared_dq"]), "ort-cpu")
    assert shared.fully_fused and shared.int8 == 2
    s8 = check_placement(qdq_conv(out="q"), "ort-cpu")
    assert "uint8 activations" in s8.fallbacks[0].misses[0]


# --- real quantize() outputs ----------------------------------------------------------------------------


@pytest.mark.parametrize("net", sorted(NETS))
def test_tensorrt_preset_output_is_fully_fusable_for_tensorrt(net: str) -> None:
    report = check_placement(_quantized(net, tensorrt_int8()), "tensorrt")
    assert report.fully_fused, report.to_dict()
    assert report.int8 == report.quantized == 3


@pytest.mark.parametrize("vnni", [False, True])
@pytest.mark.parametrize("net", sorted(NETS))
def test_ort_preset_output_is_fully_fusable_for_ort_and_ort_agrees(
    net: str, vnni: bool, tmp_path: Path
) -> None:
    model = _quantized(net, ort_cpu_int8(vnni=vnni))
    report = check_placement(model, "ort-cpu")
    assert report.fully_fused, report.to_dict()
    assert report.int8 == _ort_layer_kernels(model, tmp_path) == 3


@pytest.mark.parametrize("net", sorted(NETS))
def test_presets_are_not_interchangeable(net: str, tmp_path: Path) -> None:
    """Each preset's output misses on the other target; on ORT the count still matches ORT's graph."""
    trt_model = _quantized(net, tensorrt_int8())
    on_ort = check_placement(trt_model, "ort-cpu")
    assert on_ort.fallbacks
    assert on_ort.int8 == _ort_layer_kernels(trt_model, tmp_path)
    assert check_placement(_quantized(net, ort_cpu_int8(vnni=False)), "tensorrt").int8 == 0


# --- CLI and calibrate ----------------------------------------------------------------------------------


def test_check_cli_reports_with_exit_zero_and_json(tmp_path: Path) -> None:
    path = save_model(qdq_conv(w_axis=1), tmp_path / "bad.qdq.onnx")
    runner = CliRunner()
    table = runner.invoke(cli, ["check", str(path), "--target", "tensorrt"])
    assert table.exit_code == 0, table.output
    assert "0/1 quantized layers will run INT8 on tensorrt; 1 will fall back" in table.output
    assert "fallback" in table.output
    as_json = runner.invoke(cli, ["check", str(path), "--target", "ort-cpu", "--json"])
    data = json.loads(as_json.output)
    assert as_json.exit_code == 0 and data["target"] == "ort-cpu" and data["fallback"] == 1
    assert data["nodes"][0]["misses"]


def test_check_cli_fails_on_unreadable_model(tmp_path: Path) -> None:
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"not an onnx file")
    result = CliRunner().invoke(cli, ["check", str(path)])
    assert result.exit_code != 0
    assert "error:" in result.output


def test_calibrate_reports_the_fusion_summary(tmp_path: Path) -> None:
    from qdeploy.calib.data import DataConfig
    from qdeploy.pipeline import CalibrateConfig, calibrate_model

    model = save_model(qm.conv_net(), tmp_path / "net.onnx")
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).random((2, 3, 12, 12)).astype(np.float32))
    for preset, target in (("tensorrt-int8", "tensorrt"), ("ort-cpu-int8", "ort-cpu")):
        result = calibrate_model(
            CalibrateConfig(
                model=model,
                output=tmp_path / f"{preset}.onnx",
                method="minmax",
                data=DataConfig(tmp_path / "calib.npz"),
                preset=preset,
                threads=1,
            )
        )
        assert result.fusion["target"] == target
        assert result.fusion["int8"] == result.fusion["quantized"] == 3, result.fusion
        assert result.fusion["line"].startswith(f"3/3 quantized layers will run INT8 on {target}")
