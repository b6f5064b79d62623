"""Which nodes get quantized, and which of their inputs are activations, weights and biases.

This is the graph knowledge the quantization passes share: the per-op input layout (Conv's weight is
input 1 with output channels on axis 0, ConvTranspose's on axis 1, ...) lives here once instead of being
re-derived in every pass.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

__all__ = [
    "QUANTIZABLE_OP_TYPES",
    "NodeFilter",
    "activation_slots",
    "activation_tensors",
    "bias_slot",
    "constant_array",
    "find_value",
    "is_constant",
    "select_nodes",
    "weight_slot",
]

#: Ops the QDQ passes know the input layout of (weights, bias, per-channel axis).
QUANTIZABLE_OP_TYPES = ("Conv", "ConvTranspose", "MatMul", "Gemm")


@dataclass(frozen=True)
class NodeFilter:
    """Selects nodes by op type and by node-name regular expressions.

    A node is selected when its op type is in ``op_types`` and not in ``exclude_op_types``, its name
    matches one of ``include_nodes`` (``re.search``; empty means every name) and none of
    ``exclude_nodes``. Patterns search anywhere in the name, so ``head`` matches ``/head/Conv``; anchor
    with ``^...$`` for exact names.
    """

    op_types: tuple[str, ...] = QUANTIZABLE_OP_TYPES
    include_nodes: tuple[str, ...] = ()
    exclude_nodes: tuple[str, ...] = ()
    exclude_op_types: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = sorted(set(self.op_types) - set(QUANTIZABLE_OP_TYPES))
        if unknown:
            supported = list(QUANTIZABLE_OP_TYPES)
            raise ValueError(f"op types {unknown} cannot be quantized; supported: {supported}")
        for pattern in (*self.include_nodes, *self.exclude_nodes):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid node-name pattern {pattern!r}: {exc}") from None

    def matches(self, node: ir.Node) -> bool:
        """Whether ``node`` passes the op-type and name filters."""
        if node.domain != "" or node.op_type not in self.op_types or node.op_type in self.exclude_op_types:
            return False
        name = node.name or ""
        if self.include_nodes and not any(re.search(p, name) for p in self.include_nodes):
            return False
        return not any(re.search(p, name) for p in self.exclude_nodes)


def select_nodes(graph: ir.Graph, node_filter: NodeFilter) -> list[ir.Node]:
    """Nodes of ``graph`` (in graph order) that ``node_filter`` selects and that have an activation input.

    A node whose inputs are all constant (e.g. a MatMul of two initializers) is skipped: constant folding,
    not quantization, is the right tool for it.
    """
    return [n for n in graph if node_filter.matches(n) and activation_slots(n)]


def activation_tensors(
    graph: ir.Graph, node_filter: NodeFilter, outputs: bool = False, through_relu: bool = False
) -> list[str]:
    """Names of the activation tensors that get a Q->DQ pair, in topological order, each once.

    Always the activation inputs of the selected nodes. With ``outputs`` also their outputs, which ONNX
    Runtime needs to fuse DQ->Conv->Q into QLinearConv (and DQ->MatMul->Q into QLinearMatMul). With
    ``through_relu`` an output consumed only by a Relu is replaced by the Relu's output: quantizing after
    the Relu with zero point at the grid minimum makes the Q clamp do the Relu, and ORT's ReluQuantFusion
    then deletes the Relu so the conv still fuses (this is also what ``onnxruntime.quantization`` does).
    """
    position = {node: i for i, node in enumerate(graph)}
    found: dict[str, int] = {}

    def add(value: ir.Value | None) -> None:
        if value is not None and value.name and value.name not in found:
            producer = value.producer()
            found[value.name] = -1 if producer is None else position.get(producer, -1)

    for node in select_nodes(graph, node_filter):
        for index in activation_slots(node):
            add(node.inputs[index])
        if outputs:
            out = node.outputs[0]
            uses = list(out.uses())
            if (through_relu and len(uses) == 1 and not out.is_graph_output()
                    and uses[0].node.op_type == "Relu" and uses[0].node.domain == ""):
                out = uses[0].node.outputs[0]
            add(out)
    return sorted(found, key=found.__getitem__)


def is_constant(value: ir.Value | None) -> bool:
    """True for initializers (that are not overridable graph inputs) and outputs of ``Constant`` nodes."""
    return constant_array(value) is not None


def constant_array(value: ir.Value | None) -> np.ndarray | None:
    """The numpy value of a constant tensor, or None when ``value`` is computed at run time.

    Initializers that are also graph inputs count as run-time values: a caller may feed a different one.
    """
    if value is None:
        return None
    if value.const_value is not None and not value.is_graph_input():
        return value.const_value.numpy()
    producer = value.producer()
    if producer is not None and producer.op_type == "Constant" and producer.domain == "":
        attr = producer.attributes.get("value")
        if attr is not None and attr.type == ir.AttributeType.TENSOR:
            return attr.as_tensor().numpy()
    return None


def activation_slots(node: ir.Node) -> list[int]:
    """Input indices of ``node`` that carry run-time activations to quantize.

    Conv/ConvTranspose: X (input 0). Gemm/MatMul: whichever of inputs 0 and 1 are not constant (both for
    a MatMul of two activations, e.g. attention scores). Gemm's C is a bias and never an activation here.
    """
    if node.op_type in ("Conv", "ConvTranspose"):
        candidates = [0]
    elif node.op_type in ("MatMul", "Gemm"):
        candidates = [0, 1]
    else:
        return []
    return [i for i in candidates if i < len(node.inputs) and node.inputs[i] is not None
            and not is_constant(node.inputs[i])]


def weight_slot(node: ir.Node, per_channel: bool = True) -> tuple[int, int | None] | None:
    """(input index, per-channel axis or None) of the constant weight of ``node``, or None if it has none.

    The axis is the *output-channel* axis, so each output channel gets its own scale:

    - Conv: W is [Cout, Cin/g, k...] -> axis 0.
    - ConvTranspose: W is [Cin, Cout/g, k...] -> axis 1; with group > 1 the output channel is
      (group, Cout/g) and no single axis holds it, so it falls back to per-tensor.
    - Gemm: B is [N, K] with transB=1 -> axis 0, [K, N] with transB=0 -> axis 1. A constant A is per-tensor.
    - MatMul: constant B is [..., K, N] -> the last axis (N). A constant A is per-tensor.
    """
    op = node.op_type
    if op in ("Conv", "ConvTranspose"):
        index = 1
        if len(node.inputs) < 2 or not is_constant(node.inputs[1]):
            return None
        if op == "Conv":
            axis: int | None = 0
        else:
            axis = 1 if node.attributes.get_int("group", 1) == 1 else None
        return index, axis if per_channel else None
    if op not in ("MatMul", "Gemm"):
        return None
    if len(node.inputs) > 1 and is_constant(node.inputs[1]):
        if op == "Gemm":
            axis = 0 if node.attributes.get_int("transB", 0) else 1
        else:
            rank = constant_array(node.inputs[1]).ndim  # type: ignore[union-attr]
            axis = rank - 1 if rank >= 2 else None
        return 1, axis if per_channel else None
    if is_constant(node.inputs[0]):
        return 0, None
    return None


def bias_slot(node: ir.Node) -> int | None:
    """Input index of a constant 1-D bias (Conv/ConvTranspose B, Gemm C), or None."""
    if node.op_type in ("Conv", "ConvTranspose") or node.op_type == "Gemm":
        index = 2
    else:
        return None
    if len(node.inputs) <= index or node.inputs[index] is None:
        return None
    array = constant_array(node.inputs[index])
    return index if array is not None and array.ndim == 1 else None


def find_value(graph: ir.Graph, name: str) -> ir.Value | None:
    """The value called ``name`` among graph inputs, initializers and node outputs (None if absent)."""
    for value in graph.inputs:
        if value.name == name:
            return value
    if name in graph.initializers:
        return graph.initializers[name]
    for node in graph:
        for out in node.outputs:
            if out.name == name:
                return out
    return None
