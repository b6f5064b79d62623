"""What ``calibrate`` says about the model it wrote: the QDQ placement check and ORT's integer kernels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx_ir as ir

__all__ = ["fusion_summary", "integer_kernel_summary"]


def fusion_summary(qmodel: ir.Model, preset: str) -> dict[str, Any]:
    """The QDQ placement check for the preset's target (tensorrt-* -> TensorRT, else ONNX Runtime CPU).

    Why here: calibrate should end by saying how many quantized layers the target will really run in
    INT8, so a placement problem is seen when the model is made, not when it is profiled.
    """
    from qdeploy.trt.fusion import check_placement

    return check_placement(qmodel, "tensorrt" if preset.startswith("tensorrt") else "ort-cpu").summary()


def _integer_ops() -> frozenset[str]:
    from qdeploy.trt.fusion_ops import ORT_QLINEAR_OPS

    return frozenset({"QLinearConv", "QLinearMatMul", "MatMulIntegerToFloat", "MatMulInteger", "ConvInteger",
                      "QGemm", "DynamicQuantizeMatMul", "NhwcMaxPool", *ORT_QLINEAR_OPS.values()})


def integer_kernel_summary(qdq_path: Path) -> dict[str, Any]:
    """Which ops ONNX Runtime CPU really runs as integer kernels, read from its optimized graph.

    Why: a QDQ file only *allows* integer execution; ORT fuses DQ->op->Q into QLinear* kernels only when
    the placement matches its patterns. Counting fused nodes in ``optimized_model_filepath`` is the proof.
    """
    import tempfile

    import onnx

    from qdeploy.backends import SessionOptions, get_backend

    with tempfile.TemporaryDirectory() as tmp:
        opt = Path(tmp) / "optimized.onnx"
        get_backend("ort-cpu").open(qdq_path, SessionOptions(threads=1, optimized_model_path=str(opt)))
        graph = onnx.load(str(opt), load_external_data=False).graph
    counts: dict[str, int] = {}
    for node in graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    ops = _integer_ops()
    integer = {op: n for op, n in counts.items() if op in ops}
    float_compute = {op: n for op, n in counts.items() if op in ("Conv", "ConvTranspose", "MatMul", "Gemm", "FusedConv",
                                                                 "FusedMatMul")}
    return {"integer_ops": integer, "float_compute_ops": float_compute,
            "dequantize_left": counts.get("DequantizeLinear", 0), "quantize_left": counts.get("QuantizeLinear", 0)}
