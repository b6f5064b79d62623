"""What precision a graph runs in, how much of it a backend really runs in INT8, and FP16 copies.

A profile row is ``model x precision x backend``. The precision is read from the graph itself rather
than from the file name, because names lie and graphs do not: Q/DQ nodes mean explicit quantization
(their integer dtype says int8, int16 or fp8), DequantizeLinear over int4 constants means int4 weights,
and the dtype of the float initializers says fp32, fp16 or bf16. A QDQ graph whose grids are narrower
than their 8-bit storage (``--preset lowbit-sim``: Clip + int8 Q/DQ, or weights on a 4-bit grid) is an
*accuracy simulation* of W4A4 & co., not an int8 deployment, and is labelled so: "W4A4 sim (8-bit
storage)"; the bits come from :func:`qdeploy.graph.qdq_inventory.quantized_tensors`.

INT8 *coverage* is the honest companion of "int8-qdq": a QDQ file only permits integer kernels, each
backend fuses only some placements (see :mod:`qdeploy.trt.fusion`), and ONNX Runtime's CUDA provider
has no static-INT8 convolution kernels at all, so there a QDQ model runs as float between its
QuantizeLinear/DequantizeLinear ops.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import onnx_ir as ir

__all__ = [
    "CPU_FP16_NOTE",
    "CUDA_INT8_NOTE",
    "LOWBIT_SIM_NOTE",
    "Coverage",
    "detect_precision",
    "fp16_copy",
    "int8_coverage",
]

#: Why ort-cuda shows 0 INT8 layers for any QDQ model.
CUDA_INT8_NOTE = "CUDA EP has no static INT8 kernels: QDQ runs as float"
#: Why an FP16 row on ort-cpu is not an FP16 speed measurement (ORT's InsertCastTransformer).
CPU_FP16_NOTE = ("ORT's CPU provider runs ops that lack FP16 kernels (Conv on x86, among others) in float32 "
                 "behind inserted Casts: this row shows FP16 rounding, not FP16 speed")
#: Why a "W4A4 sim" row's latency is not that of a W4A4 deployment.
LOWBIT_SIM_NOTE = ("sub-8-bit accuracy simulation (low-bit grids in 8-bit storage, Clip + Q/DQ): the accuracy is "
                   "the low-bit model's, the latency this 8-bit Q/DQ graph's, not a low-bit kernel's (none on CPU)")

_QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
_INT4 = {ir.DataType.INT4, ir.DataType.UINT4}
_QUANT_LABELS = {
    ir.DataType.INT8: "int8", ir.DataType.UINT8: "int8",
    ir.DataType.INT16: "int16", ir.DataType.UINT16: "int16",
}
_FLOAT_LABELS = {
    ir.DataType.FLOAT: "fp32", ir.DataType.FLOAT16: "fp16", ir.DataType.BFLOAT16: "bf16",
    ir.DataType.DOUBLE: "fp64",
}
#: Backend name -> :func:`qdeploy.trt.fusion.check_placement` target.
_FUSION_TARGETS = {"ort-cpu": "ort-cpu", "tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt"}


def _qdq_nodes(model: ir.Model) -> list[ir.Node]:
    return [n for n in model.graph if n.domain == "" and n.op_type in _QDQ_OPS]


def _integer_dtype(node: ir.Node) -> ir.DataType | None:
    """The integer side of a Q/DQ node: DQ's input 0, Q's output (or its zero point when untyped)."""
    candidates = [node.inputs[0]] if node.op_type == "DequantizeLinear" else [node.outputs[0]]
    if node.op_type == "QuantizeLinear" and len(node.inputs) > 2:
        candidates.append(node.inputs[2])
    for value in candidates:
        if value is None:
            continue
        if value.const_value is not None:
            return value.const_value.dtype
        if value.type is not None:
            return value.dtype
    return ir.DataType.UINT8 if node.op_type == "QuantizeLinear" else None  # ONNX's default Q dtype


def _quant_label(model: ir.Model) -> str | None:
    """"int4-weights", "int8-qdq", "int16-qdq", "fp8-qdq" or None for a graph without Q/DQ."""
    nodes = _qdq_nodes(model)
    if not nodes:
        return None
    dtypes = {_integer_dtype(n) for n in nodes} - {None, ir.DataType.INT32}  # int32: quantized biases
    if dtypes & _INT4:
        return "int4-weights"
    labels = sorted({_QUANT_LABELS.get(d, "fp8" if "FLOAT8" in d.name else d.name.lower()) for d in dtypes})
    if labels == ["int8"] and (sim := _lowbit_label(model)) is not None:
        return sim
    return f"{'+'.join(labels) or 'int8'}-qdq"


def _lowbit_label(model: ir.Model) -> str | None:
    """``"W4A4 sim (8-bit storage)"`` when some grid is narrower than its 8-bit storage, else None
    (:func:`qdeploy.graph.qdq_inventory.lowbit_grid`; mixed precision: ``"W4/8A4/8 sim ..."``)."""
    from qdeploy.graph.qdq_inventory import lowbit_grid

    grid = lowbit_grid(model.graph)  # None also for a graph the inventory cannot read: it keeps the dtype label
    return None if grid is None else f"{grid} sim (8-bit storage)"


def _float_label(model: ir.Model) -> str:
    """The dominant float dtype, by elements of float initializers (node output types as fallback).

    Q/DQ scales are skipped: a QDQ-in-fp16 model has fp16 scales, but an fp32 QDQ model's scales must
    not outvote nothing. Graph inputs/outputs are skipped too: FP16 conversion keeps them float32.
    """
    counts: Counter[ir.DataType] = Counter()
    for value in model.graph.initializers.values():
        tensor = value.const_value
        if tensor is not None and tensor.dtype in _FLOAT_LABELS:
            if any(u.node.op_type in _QDQ_OPS and u.idx > 0 for u in value.uses()):
                continue
            counts[tensor.dtype] += max(1, tensor.size)
    if not counts:
        boundary = {id(v) for v in (*model.graph.inputs, *model.graph.outputs)}
        for node in model.graph:
            for out in node.outputs:
                if id(out) not in boundary and out.type is not None and out.dtype in _FLOAT_LABELS:
                    counts[out.dtype] += 1
    if not counts:
        return "fp32"
    return _FLOAT_LABELS[counts.most_common(1)[0][0]]


def detect_precision(model: ir.Model) -> str:
    """The precision label of a graph: "fp32", "fp16", "bf16", "int8-qdq", "int4-weights", ...

    A QDQ graph whose float part is not fp32 gets both, e.g. "int8-qdq+fp16" (TensorRT's "best").
    """
    quant = _quant_label(model)
    floats = _float_label(model)
    if quant is None:
        return floats
    return quant if floats == "fp32" else f"{quant}+{floats}"


@dataclass(frozen=True)
class Coverage:
    """How many quantized layers run as INT8 kernels on one backend, and why not the rest.

    ``target`` is the fusion-check target used (None when no check applies, e.g. ort-cuda); ``note``
    is the check's summary line when something falls back or is flagged, or the reason coverage is 0.
    """

    backend: str
    target: str | None
    int8: int
    quantized: int
    note: str = ""

    @property
    def cell(self) -> str:
        """``"N/M"``: INT8 layers / quantized layers."""
        return f"{self.int8}/{self.quantized}"


def int8_coverage(model: ir.Model, backend: str) -> Coverage | None:
    """INT8 coverage of a QDQ ``model`` on ``backend`` (None for float graphs and unknown backends).

    ort-cpu and TensorRT use :func:`qdeploy.trt.fusion.check_placement` for their target; ort-cuda is 0
    of the quantized layers, with :data:`CUDA_INT8_NOTE`, because its provider has no static-INT8 conv
    or matmul kernels.
    """
    from qdeploy.trt.fusion import check_placement

    if not _qdq_nodes(model):
        return None
    target = _FUSION_TARGETS.get(backend)
    if target is not None:
        report = check_placement(model, target)
        flagged = bool(report.fallbacks or report.warnings)
        return Coverage(backend, target, report.int8, report.quantized,
                        report.summary_line() if flagged else "")
    if backend == "ort-cuda":
        quantized = check_placement(model, "ort-cpu").quantized  # M counts DQ-fed layers: target-free
        return Coverage(backend, None, 0, quantized, CUDA_INT8_NOTE)
    return None


def fp16_copy(src: Path, dest: Path) -> Path:
    """Write an FP16 copy of the float model ``src`` to ``dest``: float math and weights in float16,
    inputs and outputs still float32 (so the same feeds and the same accuracy comparison apply).

    Reuses :func:`qdeploy.trt.fp16.to_float16`, the rewrite TensorRT builds use, so an ORT FP16 row and
    a TensorRT FP16 engine start from the same graph.
    """
    from qdeploy.graph.io import load_model, save_model
    from qdeploy.trt.fp16 import to_float16

    return save_model(to_float16(load_model(src)), dest)
