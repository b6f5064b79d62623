"""The per-target QDQ placement rules behind :func:`qdeploy.trt.fusion.check_placement`.

Each rule takes one Conv/ConvTranspose/MatMul/Gemm node, the roles of its two main inputs and the
DequantizeLinear feeding each, and returns ``(misses, warnings)`` as one-line reasons that say what the
target needs, so a user can fix the placement without reading vendor documentation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from qdeploy.graph.select import constant_array

__all__ = [
    "FUSABLE_ACTIVATIONS",
    "DQInfo",
    "dq_info",
    "expected_axis",
    "is_weight_only",
    "ort_cpu_node",
    "ort_cpu_weight_only",
    "producer",
    "reduction_axis",
    "roles",
    "tensorrt_adds",
    "tensorrt_node",
    "tensorrt_weight_only",
]

#: Activations TensorRT fuses into the preceding conv / GEMM kernel's epilogue.
FUSABLE_ACTIVATIONS = (
    "Relu",
    "LeakyRelu",
    "Clip",
    "Sigmoid",
    "Tanh",
    "HardSigmoid",
    "Elu",
    "Selu",
    "Softplus",
)

Reasons = tuple[list[str], list[str]]


def producer(value: ir.Value | None, op_type: str) -> ir.Node | None:
    """The standard-domain ``op_type`` node producing ``value``, or None."""
    node = value.producer() if value is not None else None
    return node if node is not None and node.op_type == op_type and node.domain == "" else None


@dataclass(frozen=True)
class DQInfo:
    """What matters about one DequantizeLinear: integer dtype, zero point, scale axis, sharing."""

    name: str
    dtype: str
    zero_point: np.ndarray
    per_channel: bool
    axis: int | None
    constant: bool
    uses: int
    block_size: int = 0

    @property
    def symmetric(self) -> bool:
        """Zero point 0 everywhere (absent counts as 0)."""
        return not np.any(self.zero_point)


def dq_info(dq: ir.Node) -> DQInfo:
    """Read a DequantizeLinear's parameters (constants only; unknown dtypes read as "?")."""
    x = dq.inputs[0]
    array = constant_array(x)
    scale = constant_array(dq.inputs[1]) if len(dq.inputs) > 1 else None
    zp = constant_array(dq.inputs[2]) if len(dq.inputs) > 2 and dq.inputs[2] is not None else None
    if (
        x is not None
        and x.const_value is not None
        and x.const_value.dtype in (ir.DataType.INT4, ir.DataType.UINT4)
    ):
        dtype = x.const_value.dtype.name.lower()
    elif array is not None:
        dtype = array.dtype.name
    elif zp is not None:
        dtype = zp.dtype.name
    else:
        dtype = x.dtype.name.lower() if x is not None and x.type is not None else "?"
    per_channel = scale is not None and scale.size > 1
    axis = None
    if per_channel:
        rank = (
            array.ndim
            if array is not None
            else (len(x.shape) if x is not None and x.shape is not None else 0)
        )
        axis = dq.attributes.get_int("axis", 1)
        axis = axis + rank if axis < 0 else axis
    return DQInfo(
        dq.name or "DequantizeLinear",
        dtype,
        np.zeros(1) if zp is None else np.asarray(zp),
        per_channel,
        axis,
        array is not None,
        len(list(dq.outputs[0].uses())),
        dq.attributes.get_int("block_size", 0),
    )


def roles(node: ir.Node) -> list[tuple[int, str]]:
    """(input index, "activation" | "weight") of the two main inputs; weight = constant or DQ(constant)."""
    if node.op_type in ("Conv", "ConvTranspose"):
        return [(0, "activation"), (1, "weight")]
    out = []
    for i in (0, 1):
        value = node.inputs[i] if i < len(node.inputs) else None
        dq = producer(value, "DequantizeLinear")
        const = constant_array(value) is not None or (
            dq is not None and constant_array(dq.inputs[0]) is not None
        )
        out.append((i, "weight" if const else "activation"))
    return out


def expected_axis(node: ir.Node, rank: int) -> int | None:
    """The weight's output-channel axis (None: only a per-tensor scale is valid)."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 1 if node.attributes.get_int("group", 1) == 1 else None
    if node.op_type == "Gemm":
        return 0 if node.attributes.get_int("transB", 0) else 1
    return rank - 1 if rank >= 2 else None


def _single_use(value: ir.Value) -> ir.Node | None:
    uses = list(value.uses())
    return uses[0].node if len(uses) == 1 and not value.is_graph_output() else None


def _weight_rank(node: ir.Node, index: int) -> int:
    dq = producer(node.inputs[index], "DequantizeLinear")
    array = constant_array(dq.inputs[0]) if dq is not None else constant_array(node.inputs[index])
    return array.ndim if array is not None else 0


def reduction_axis(node: ir.Node) -> int:
    """Axis of a MatMul/Gemm weight B that holds K: 0, or 1 for ``Gemm(transB=1)`` (B is [N, K])."""
    return 1 if node.op_type == "Gemm" and node.attributes.get_int("transB", 0) else 0


def _axis_miss(node: ir.Node, index: int, dq: DQInfo, target: str) -> str | None:
    if dq.block_size:
        want_k = reduction_axis(node)
        if node.op_type in ("MatMul", "Gemm") and index == 1 and dq.axis == want_k:
            return None
        return (f"weight scales are block-wise (block_size {dq.block_size}) on axis {dq.axis}; {target} "
                f"needs blocks along the reduction axis K (axis {want_k} of a MatMul/Gemm B)")
    if not dq.per_channel:
        return None
    want = expected_axis(node, _weight_rank(node, index))
    if dq.axis == want:
        return None
    need = (
        f"axis {want} (output channels) or one per-tensor scale"
        if want is not None
        else "one per-tensor scale"
    )
    return f"weight scales are per-channel on axis {dq.axis}; {target} needs {need}"


def _input_name(node: ir.Node, index: int) -> str:
    value = node.inputs[index] if index < len(node.inputs) else None
    return value.name if value is not None and value.name else f"input {index}"


def is_weight_only(node: ir.Node, slots: list[tuple[int, str]], dqs: dict[int, DQInfo]) -> bool:
    """True for a MatMul/Gemm whose weight has a low-bit or block-wise DQ and whose activations have none.

    That is weight-only quantization (``qdeploy.quant.weight_only``): the layer is *meant* to keep float
    activations, so judging it by the INT8 rules ("activation has no DequantizeLinear") would call every
    layer a fallback.
    """
    if node.op_type not in ("MatMul", "Gemm"):
        return False
    weights = [dqs.get(i) for i, role in slots if role == "weight"]
    acts = [dqs.get(i) for i, role in slots if role == "activation"]
    low_bit = any(w is not None and (w.block_size or w.dtype in ("int4", "uint4")) for w in weights)
    return low_bit and bool(acts) and all(a is None for a in acts)


def _weight_only_common(node: ir.Node, dq: DQInfo, target: str) -> list[str]:
    misses = []
    if not dq.constant:
        misses.append(f"the weight DQ reads a run-time tensor; {target} needs constant weight codes")
    axis = _axis_miss(node, 1, dq, target) if dq.block_size else None
    if axis:
        misses.append(axis)
    return misses


# --- TensorRT -------------------------------------------------------------------------------------------


def tensorrt_node(node: ir.Node, slots: list[tuple[int, str]], dqs: dict[int, DQInfo]) -> Reasons:
    """TensorRT: symmetric int8 Q/DQ on both inputs, output-channel weight axis, dedicated activation DQs."""
    misses: list[str] = []
    warns: list[str] = []
    for index, role in slots:
        dq = dqs.get(index)
        if dq is None:
            misses.append(
                f"{role} {_input_name(node, index)!r} has no DequantizeLinear: TensorRT runs the layer "
                "in float (it needs Q/DQ on both inputs)"
            )
            continue
        name = _input_name(node, index)
        if role == "activation":
            if dq.dtype != "int8":
                misses.append(
                    f"activation {name!r} is {dq.dtype}; TensorRT quantizes activations to int8 only"
                )
            if not dq.symmetric:
                misses.append(
                    f"activation {name!r} has zero point {dq.zero_point.ravel()[0]} (asymmetric); "
                    "TensorRT needs 0"
                )
            if dq.per_channel:
                misses.append(
                    f"activation {name!r} has per-channel scales; TensorRT needs one scale per tensor"
                )
            if dq.uses > 1:
                warns.append(
                    f"activation DQ {dq.name!r} is shared by {dq.uses} consumers; TensorRT prefers one "
                    "dedicated Q/DQ pair per consumer"
                )
        else:
            if dq.dtype not in ("int8", "int4"):
                misses.append(f"weight stored as {dq.dtype}; TensorRT needs int8 (or int4) weights")
            if not dq.symmetric:
                misses.append(
                    f"weight zero point is {dq.zero_point.ravel()[0]}, not 0; TensorRT needs symmetric "
                    "weights with zero point 0"
                )
            axis = _axis_miss(node, index, dq, "TensorRT")
            if axis:
                misses.append(axis)
    warns.extend(_tensorrt_output(node))
    return misses, warns


def tensorrt_weight_only(node: ir.Node, slots: list[tuple[int, str]], dqs: dict[int, DQInfo]) -> Reasons:
    """TensorRT INT4 weight-only: signed int4 (or int8) codes, zero point 0, blocks along K.

    TensorRT has no UINT4 type, and its weight-only GEMMs dequantize symmetric blocks of a constant B.
    """
    dq = dqs[1]
    misses = _weight_only_common(node, dq, "TensorRT")
    if dq.dtype not in ("int4", "int8"):
        misses.append(f"weight stored as {dq.dtype}; TensorRT's weight-only path takes signed int4 (or "
                      "int8) codes (no uint4): quantize with symmetric=True")
    if not dq.symmetric:
        misses.append(f"weight zero point is {dq.zero_point.ravel()[0]}, not 0; TensorRT needs symmetric "
                      "weight-only blocks")
    return misses, []


def _tensorrt_output(node: ir.Node) -> list[str]:
    """Q/DQ between a conv/GEMM and its activation blocks TensorRT's conv+activation fusion."""
    q = _single_use(node.outputs[0])
    if q is None or q.op_type != "QuantizeLinear":
        return []
    dq = _single_use(q.outputs[0])
    if dq is None or dq.op_type != "DequantizeLinear":
        return []
    acts = sorted({u.node.op_type for u in dq.outputs[0].uses() if u.node.op_type in FUSABLE_ACTIVATIONS})
    if not acts:
        return []
    return [
        f"Q/DQ sits between the {node.op_type} output and its {acts[0]}: TensorRT cannot fuse the "
        f"{acts[0]} into the INT8 kernel; quantize after the {acts[0]} instead"
    ]


def tensorrt_adds(graph: ir.Graph) -> list[tuple[str, str]]:
    """(Add node, warning) for residual Adds with exactly one dequantized input.

    TensorRT fuses a residual Add into the INT8 conv producing one of its inputs when both inputs are
    quantized; with only one, the Add runs separately in float after a reformat.
    """
    out = []
    for node in graph:
        if node.domain != "" or node.op_type != "Add" or len(node.inputs) != 2:
            continue
        if any(constant_array(v) is not None for v in node.inputs):
            continue  # a bias add, not a residual
        quantized = [producer(v, "DequantizeLinear") is not None for v in node.inputs]
        if sum(quantized) == 1:
            which = quantized.index(True)
            out.append(
                (
                    node.name or "Add",
                    f"only input {which} of the residual Add is quantized; quantize "
                    "both (or neither) so TensorRT can fuse the Add into the INT8 conv",
                )
            )
    return out


# --- ONNX Runtime CPU -----------------------------------------------------------------------------------


def ort_cpu_node(node: ir.Node, slots: list[tuple[int, str]], dqs: dict[int, DQInfo]) -> Reasons:
    """ONNX Runtime CPU: DQ on both inputs and (Conv; MatMul for QLinearMatMul) a Q on the output."""
    if node.op_type == "ConvTranspose":
        return [
            "ORT's CPU provider has no QDQ fusion for ConvTranspose: it runs DQ + float ConvTranspose "
            "(convtranspose_as_conv=True rewrites it as the equivalent Conv + DepthToSpace, which fuses)"
        ], []
    misses: list[str] = []
    warns: list[str] = []
    out_q, relu_miss = _ort_output_q(node)
    for index, role in slots:
        dq = dqs.get(index)
        if dq is None and role == "weight" and constant_array(node.inputs[index]) is not None:
            warns.append(
                f"weight {_input_name(node, index)!r} is float: ORT >= 1.21 quantizes it itself "
                "(WeightBiasQuantization), older releases run the layer in float"
            )
            continue
        if dq is None:
            misses.append(
                f"{role} {_input_name(node, index)!r} has no DequantizeLinear: ORT cannot form an "
                "integer kernel"
            )
            continue
        if dq.dtype not in ("uint8", "int8"):
            misses.append(f"{role} is {dq.dtype}; ORT's CPU integer kernels take 8-bit tensors")
        elif role == "activation" and dq.dtype == "int8" and not (node.op_type == "MatMul" and out_q is None):
            misses.append(
                "activation is int8; ORT's x86 QDQ fusions need uint8 activations (ORT converts only "
                "simple s8 pairs); use the ort-cpu-int8 preset's uint8 activations"
            )
        if role == "weight":
            axis = _axis_miss(node, index, dq, "ORT")
            if axis:
                misses.append(axis)
    if relu_miss:
        misses.append(relu_miss)
    elif out_q is None and node.op_type == "Conv":
        misses.append(
            "output is not consumed only by a QuantizeLinear: ORT fuses DQ -> Conv -> Q into "
            "QLinearConv (quantize the output, after its Relu if any)"
        )
    elif (
        out_q is not None
        and dqs.get(0) is not None
        and out_q.dtype != dqs[0].dtype
        and node.op_type == "Conv"
    ):
        misses.append(
            f"input is {dqs[0].dtype} but the output Q is {out_q.dtype}; QLinearConv needs one type"
        )
    return misses, warns


def _ort_output_q(node: ir.Node) -> tuple[DQInfo | None, str | None]:
    """The output's QuantizeLinear (through one Relu ORT can fold), and a miss if the Relu cannot fold.

    Returns the Q's parameters in a :class:`DQInfo` (same fields) so callers can compare types.
    """
    nxt = _single_use(node.outputs[0])
    relu = None
    if nxt is not None and nxt.op_type == "Relu" and nxt.domain == "":
        relu, nxt = nxt, _single_use(nxt.outputs[0])
    if nxt is None or nxt.op_type != "QuantizeLinear" or nxt.domain != "":
        return None, None
    zp = (
        constant_array(nxt.inputs[2])
        if len(nxt.inputs) > 2 and nxt.inputs[2] is not None
        else np.zeros(1, np.uint8)
    )
    info = DQInfo(nxt.name or "QuantizeLinear", zp.dtype.name, np.asarray(zp), False, None, False, 1)
    if relu is not None:
        qmin = np.iinfo(zp.dtype).min if np.issubdtype(zp.dtype, np.integer) else None
        if qmin is None or np.any(zp != qmin):
            return info, (
                f"a Relu sits between the {node.op_type} and its output Q whose zero point is not the "
                f"grid minimum; ORT folds the Relu only then (quantize asymmetrically after the Relu)"
            )
    return info, None


def ort_cpu_weight_only(node: ir.Node, slots: list[tuple[int, str]], dqs: dict[int, DQInfo]) -> Reasons:
    """ORT CPU weight-only: ``DQ -> MatMul`` (or Gemm with transB=0) becomes ``MatMulNBits`` at level "all".

    The fusion (ORT's DQMatMulToMatMulNBits) needs a 2-D constant B blocked on axis 0 with a power-of-two
    block size >= 16; otherwise ORT dequantizes the whole weight at every run and multiplies in float.
    """
    dq = dqs[1]
    misses = _weight_only_common(node, dq, "ORT")
    fallback = "; ORT then runs DequantizeLinear + float MatMul at every call"
    if node.op_type == "Gemm" and node.attributes.get_int("transB", 0):
        misses.append("Gemm with transB=1: ORT fuses only [K, N] weights into MatMulNBits" + fallback)
    bs = dq.block_size
    if bs < 16 or bs & (bs - 1):
        misses.append(f"block_size {bs or 'none'}: MatMulNBits needs a power of two >= 16" + fallback)
    if dq.dtype not in ("int4", "uint4", "int8", "uint8"):
        misses.append(f"weight stored as {dq.dtype}; MatMulNBits takes 4- or 8-bit codes" + fallback)
    return misses, []
