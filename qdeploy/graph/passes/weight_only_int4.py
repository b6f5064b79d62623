"""BlockwiseWeightQuantPass: MatMul/Gemm constant weights -> ``DequantizeLinear(int4, block_size)``.

Weight-only quantization keeps activations in float and stores each weight as 4-bit (or 8-bit) codes with
one scale per block of ``block_size`` consecutive elements along the *reduction* axis K. This is the ONNX
form (opset 21 ``DequantizeLinear`` with ``block_size``) that TensorRT's INT4 weight-only path and ONNX
Runtime's ``MatMulNBits`` fusion (``DQMatMulToMatMulNBits``, ORT level "all") both consume. Blocking
along K, not N, is what those kernels dequantize on the fly: a block is a contiguous run of one output
column's dot product.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from qdeploy.errors import UnsupportedModelError
from qdeploy.graph.passes._qdq import NameSet, place_at_start
from qdeploy.graph.select import NodeFilter, constant_array, select_nodes

__all__ = ["WEIGHT_ONLY_OPSET", "BlockQuantizer", "BlockwiseWeightQuantPass", "WeightDecision"]

#: ``DequantizeLinear`` gained ``block_size`` and INT4/UINT4 inputs in opset 21.
WEIGHT_ONLY_OPSET = 21

#: ``(float weight [K, N], block size) -> (codes [K, N] int8/uint8, scale [ceil(K/B), N], zero point or
#: None)``. The codes must already lie in the storage type's range (e.g. -8..7 for INT4).
BlockQuantizer = Callable[[np.ndarray, int], "tuple[np.ndarray, np.ndarray, np.ndarray | None]"]

_STORAGE = (ir.DataType.INT4, ir.DataType.UINT4, ir.DataType.INT8, ir.DataType.UINT8)
_FLOATS = {np.dtype(np.float32): ir.DataType.FLOAT, np.dtype(np.float16): ir.DataType.FLOAT16}


@dataclass(frozen=True)
class WeightDecision:
    """What the pass did with one selected node: ``quantized`` or left alone, with the reason why."""

    node: str
    weight: str
    quantized: bool
    reason: str = ""
    shape: tuple[int, ...] = field(default=())


class BlockwiseWeightQuantPass(ir.passes.InPlacePass):
    """Replace each selected MatMul/Gemm constant weight B by ``DQ(codes, scale[, zero_point])``.

    Layout: MatMul B is [K, N] -> ``axis=0``; Gemm B is [K, N] with transB=0 (``axis=0``) or [N, K] with
    transB=1 (``axis=1``). The DQ's ``block_size`` blocks that axis; when K is not a multiple of the block
    size the last block is partial, which ONNX allows (scale has ``ceil(K / block_size)`` rows).

    Left alone, each recorded in :attr:`decisions` with a reason (the graph is still valid):
      - a weight computed at run time or fed as a graph input (nothing to store ahead of time);
      - a constant A input (``MatMul(const, x)``) or a weight that is not 2-D (batched MatMul weights);
      - a non-float32/float16 weight;
      - a weight also read by anything other than a selected MatMul/Gemm B slot of the same layout:
        rewriting only some uses would store it twice (float and int4), growing the file.
    A weight shared by several selected nodes of the same layout is quantized once and its DQ shared.
    Requires default-domain opset >= :data:`WEIGHT_ONLY_OPSET` (the caller upgrades the model).
    """

    def __init__(self, node_filter: NodeFilter, quantizer: BlockQuantizer, block_size: int,
                 dtype: ir.DataType = ir.DataType.INT4) -> None:
        super().__init__()
        if dtype not in _STORAGE:
            raise ValueError(f"dtype must be one of {[d.name for d in _STORAGE]}, got {dtype!r}")
        if block_size < 2:
            raise ValueError(f"block_size must be >= 2, got {block_size}")
        self.node_filter = node_filter
        self.quantizer = quantizer
        self.block_size = block_size
        self.dtype = dtype
        self.decisions: list[WeightDecision] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        """Rewrite the selected weights in place; :attr:`decisions` says what happened to each node."""
        opset = model.opset_imports.get("", 0)
        if opset < WEIGHT_ONLY_OPSET:
            raise UnsupportedModelError(
                f"block-wise INT4 DequantizeLinear needs opset >= {WEIGHT_ONLY_OPSET}; model has {opset}",
                "use qdeploy.quant.weight_only.quantize_weights_only (it upgrades the opset) or "
                "onnxscript.version_converter.convert_version(model, 21) first",
            )
        graph = model.graph
        names = NameSet(graph)
        self.decisions = []
        done: dict[tuple[str, int], ir.Value] = {}
        candidates = [n for n in select_nodes(graph, self.node_filter) if n.op_type in ("MatMul", "Gemm")]
        selected = {id(n): _block_axis(n) for n in candidates}
        for node in candidates:
            weight = node.inputs[1] if len(node.inputs) > 1 else None
            reason, array = _skip_reason(node, weight, selected)
            label = node.name or node.op_type
            wname = weight.name if weight is not None and weight.name else "?"
            if reason:
                self.decisions.append(WeightDecision(label, wname, False, reason))
                continue
            axis = selected[id(node)]
            key = (wname, axis)
            if key not in done:
                done[key] = self._dequantized(graph, names, weight, array, axis)  # type: ignore[arg-type]
            node.replace_input_with(1, done[key])
            self.decisions.append(WeightDecision(label, wname, True, shape=tuple(array.shape)))
        return ir.passes.PassResult(model, modified=bool(done))

    def _dequantized(self, graph: ir.Graph, names: NameSet, weight: ir.Value, array: np.ndarray,
                     axis: int) -> ir.Value:
        """Codes/scale/zero-point initializers and the DQ node; returns the DQ output (float weight)."""
        k_first = array if axis == 0 else array.T
        codes, scale, zero_point = self.quantizer(np.ascontiguousarray(k_first, np.float32), self.block_size)
        if axis == 1:
            codes, scale = codes.T, scale.T
            zero_point = None if zero_point is None else zero_point.T
        base = weight.name or "weight"
        float_type = _FLOATS[array.dtype]
        inputs = [
            _initializer(graph, names, f"{base}_q{self.dtype.bitwidth}", codes, self.dtype),
            _initializer(graph, names, f"{base}_scale", scale.astype(array.dtype), float_type),
        ]
        if zero_point is not None:
            inputs.append(_initializer(graph, names, f"{base}_zero_point", zero_point, self.dtype))
        dq = ir.node("DequantizeLinear", inputs, {"axis": axis, "block_size": self.block_size},
                     name=names.fresh(f"{base}_DequantizeLinear"))
        out = dq.outputs[0]
        out.name = names.fresh(f"{base}_dequantized")
        out.type = ir.TensorType(float_type)
        out.shape = ir.Shape(array.shape)
        place_at_start(graph, [dq], weight.producer())
        return out


def _block_axis(node: ir.Node) -> int:
    """Axis of B holding K: 0 for MatMul and Gemm(transB=0), 1 for Gemm(transB=1)."""
    return 1 if node.op_type == "Gemm" and node.attributes.get_int("transB", 0) else 0


def _skip_reason(node: ir.Node, weight: ir.Value | None,
                 selected: dict[int, int]) -> tuple[str, np.ndarray | None]:
    """("", weight array) when ``node``'s B can be rewritten, else (why not, None)."""
    array = constant_array(weight)
    if weight is None or array is None:
        if constant_array(node.inputs[0]) is not None:
            return "the constant is input A (MatMul(const, x)); only a constant B is block-quantized", None
        if weight is not None and weight.is_graph_input():
            return (f"weight {weight.name!r} is a graph input (a caller may feed another), "
                    "not a constant"), None
        return "input B is computed at run time (activation x activation, e.g. attention scores)", None
    if np.dtype(array.dtype) not in _FLOATS:
        return f"weight dtype {array.dtype} is not float32/float16", None
    if array.ndim != 2:
        return f"weight has rank {array.ndim}; block-wise DQ is applied to 2-D [K, N] weights only", None
    axis = selected[id(node)]
    for use in weight.uses():
        ok = use.idx == 1 and selected.get(id(use.node)) == axis
        if not ok:
            other = use.node.name or use.node.op_type
            return (f"weight {weight.name!r} is also read by {use.node.op_type} {other!r} (input "
                    f"{use.idx}); quantizing only some uses would store it twice", None)
    if weight.is_graph_output():
        return f"weight {weight.name!r} is also a graph output", None
    return "", array


def _initializer(graph: ir.Graph, names: NameSet, base: str, array: np.ndarray,
                 dtype: ir.DataType) -> ir.Value:
    """A new initializer holding ``array`` stored as ``dtype`` (INT4/UINT4 are packed two per byte)."""
    name = names.fresh(base)
    tensor = ir.Tensor(np.ascontiguousarray(array), dtype=dtype, name=name)
    value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(dtype), const_value=tensor)
    graph.register_initializer(value)
    return value
