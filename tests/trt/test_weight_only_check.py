"""check_placement on weight-only (block-wise INT4) models: weight-only verdicts, not INT8 fallbacks.

Ground truth for ORT: the number of ``MatMulNBits`` kernels in ORT CPU's optimized graph must equal the
number of weight-only layers the check says ORT fuses.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
import qdq_models as qm
from click.testing import CliRunner
from qdeploy_cli.main import cli

from qdeploy.graph.io import save_model
from qdeploy.quant.weight_only import WeightOnlyConfig, quantize_weights_only
from qdeploy.trt import check_placement


def _weight_only(symmetric: bool = True) -> ir.Model:
    """qm.mlp_net (Gemm transB=1, MatMul with a constant B, activation x activation MatMul) in INT4."""
    return quantize_weights_only(qm.mlp_net(), WeightOnlyConfig(block_size=16, symmetric=symmetric))


def _ort_matmulnbits(model: ir.Model, tmp_path: Path) -> int:
    optimized = tmp_path / "optimized.onnx"
    qm.run(model, {"x": np.ones((4, 16), np.float32)}, level="all", optimized_path=str(optimized))
    return sum(n.op_type == "MatMulNBits" for n in onnx.load(str(optimized)).graph.node)


def test_int4_weight_only_is_not_reported_as_int8_fallback() -> None:
    report = check_placement(_weight_only(), "tensorrt")
    assert report.quantized == 0 and not report.fallbacks
    assert [v.status for v in report.weight_only] == ["weight-only", "weight-only"]
    assert report.fully_fused
    assert report.summary_line() == "2/2 weight-only layers will use tensorrt's low-bit weight kernels"
    (act_matmul,) = [v for v in report.nodes if not v.weight_only]
    assert act_matmul.status == "float"  # activation x activation MatMul: float on purpose


def test_tensorrt_rejects_uint4_weight_only() -> None:
    """TensorRT has no UINT4 type; RTX's parser refuses such initializers (tests/trt/test_rtx_swinir.py)."""
    report = check_placement(_weight_only(symmetric=False), "tensorrt")
    assert len(report.weight_only_fallbacks) == 2 and not report.fully_fused
    misses = report.weight_only_fallbacks[0].misses
    assert any("no uint4" in m for m in misses) and any("zero point" in m for m in misses)
    assert "0/2 weight-only layers" in report.summary_line()
    assert report.summary()["weight_only_fallback"] == 2


@pytest.mark.parametrize("symmetric", [True, False])
def test_ort_verdicts_match_ort_matmulnbits_fusion(symmetric: bool, tmp_path: Path) -> None:
    model = _weight_only(symmetric)
    report = check_placement(model, "ort-cpu")
    fused = [v for v in report.weight_only if not v.misses]
    (gemm,) = report.weight_only_fallbacks
    assert gemm.op_type == "Gemm" and "transB=1" in gemm.misses[0]
    assert len(fused) == _ort_matmulnbits(model, tmp_path) == 1


def test_block_on_the_wrong_axis_is_a_miss() -> None:
    model = _weight_only()
    dq = next(n for n in model.graph if n.op_type == "DequantizeLinear"
              and n.outputs[0].consumers()[0].op_type == "MatMul")
    dq.attributes["axis"] = ir.AttrInt64("axis", 1)
    (verdict,) = check_placement(model, "tensorrt").weight_only_fallbacks
    assert "reduction axis K (axis 0" in verdict.misses[0]


def test_check_cli_json_counts_weight_only(tmp_path: Path) -> None:
    path = save_model(_weight_only(), tmp_path / "w4.onnx")
    result = CliRunner().invoke(cli, ["check", str(path), "--target", "tensorrt", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert (data["weight_only"], data["weight_only_fallback"], data["fallback"]) == (2, 0, 0)
    assert [n["status"] for n in data["nodes"]].count("weight-only") == 2
