"""ORT CPU verdicts for the ops *between* quantized layers: QLinear kernels, uint8 data movement, float islands.

:func:`qdeploy.trt.fusion.check_placement` judges Conv/MatMul/Gemm layers; a gated CNN also has LeakyRelus,
sigmoid gates, Muls, Adds and Concats, and each one that sits between a DequantizeLinear and a
QuantizeLinear without an integer kernel is a *float island*: ORT dequantizes, runs the op in float and
quantizes again, two extra full-tensor passes that made such INT8 graphs slower than float (issue 11).
The rules follow ORT 1.31's QDQ selectors (qdq_selector_action_transformer.cc) and are checked against its
optimized graphs in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from qdeploy.graph.passes.integer_region import is_pooled
from qdeploy.graph.select import QUANTIZABLE_OP_TYPES, constant_array

__all__ = ["ORT_DROP_OPS", "ORT_QLINEAR_OPS", "OpVerdict", "ort_cpu_ops"]

#: ``DQ -> op -> Q`` that ORT 1.31 CPU replaces by a com.microsoft QLinear kernel.
ORT_QLINEAR_OPS = {
    "Add": "QLinearAdd", "Mul": "QLinearMul", "Concat": "QLinearConcat", "LeakyRelu": "QLinearLeakyRelu",
    "Sigmoid": "QLinearSigmoid", "AveragePool": "QLinearAveragePool",
    "GlobalAveragePool": "QLinearGlobalAveragePool", "Softmax": "QLinearSoftmax", "Where": "QLinearWhere",
}
#: ``DQ -> op -> Q`` that ORT runs on the 8-bit tensor when the DQ and Q grids are equal (the pair is dropped).
ORT_DROP_OPS = frozenset({
    "Expand", "Flatten", "Gather", "GatherElements", "MaxPool", "ReduceMax", "ReduceMin", "Reshape", "Resize",
    "Slice", "Split", "Squeeze", "Tile", "Transpose", "Unsqueeze",
})
#: Nodes that are not judged: the Q/DQ themselves and ops reading only a tensor's shape.
_NOT_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "Shape", "Size"})
_HINTS = {
    "PRelu": " (a PRelu with one slope for every channel is LeakyRelu: the ort-cpu-int8 preset rewrites it; "
             "per-channel slopes have no integer kernel)",
    "Resize": " (ORT's uint8 linear Resize truncates; nearest is exact)",
}


@dataclass(frozen=True)
class OpVerdict:
    """One non-layer op next to quantized tensors: ``int8`` when ORT runs it on 8-bit data."""

    node: str
    op_type: str
    int8: bool
    kernel: str
    misses: tuple[str, ...] = ()


def _dq(value: ir.Value | None) -> ir.Node | None:
    node = value.producer() if value is not None else None
    return node if node is not None and node.domain == "" and node.op_type == "DequantizeLinear" else None


def _is_8bit(value: ir.Value | None) -> bool:
    """An int8/uint8 run-time tensor (a Q output or an op running on one)."""
    if value is None or constant_array(value) is not None:
        return False
    if value.dtype in (ir.DataType.UINT8, ir.DataType.INT8):
        return True
    producer = value.producer()
    return producer is not None and producer.domain == "" and producer.op_type == "QuantizeLinear"


def _data_inputs(node: ir.Node) -> list[ir.Value | None]:
    if node.op_type in ("Add", "Mul", "Concat"):
        return list(node.inputs)
    if node.op_type == "Where":
        return list(node.inputs[1:3])
    return list(node.inputs[:1])


def _grid(node: ir.Node) -> tuple[float, int, str] | None:
    """(scale, zero point, dtype) of a per-tensor Q/DQ with constant parameters, else None."""
    scale = constant_array(node.inputs[1]) if len(node.inputs) > 1 else None
    zp = constant_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
    if scale is None or scale.size != 1:
        return None
    dtype = zp.dtype.name if zp is not None else "uint8"
    return float(scale.reshape(())), int(zp.reshape(())) if zp is not None else 0, dtype


def _output_q(value: ir.Value, through_relu: bool) -> ir.Node | None:
    """The QuantizeLinear that is ``value``'s only consumer (through one Relu ORT folds into it)."""
    uses = list(value.uses())
    if len(uses) != 1 or value.is_graph_output():
        return None
    node = uses[0].node
    if through_relu and node.op_type == "Relu" and node.domain == "":
        q = _output_q(node.outputs[0], False)
        grid = _grid(q) if q is not None else None
        return q if grid is not None and grid[1] == np.iinfo(np.dtype(grid[2])).min else None
    return node if node.op_type == "QuantizeLinear" and node.domain == "" else None


def _qlinear(node: ir.Node, dqs: list[ir.Node | None], q: ir.Node) -> list[str]:
    kernel = ORT_QLINEAR_OPS[node.op_type]
    misses = []
    if any(d is None for d in dqs):
        misses.append(f"an input has no DequantizeLinear: ORT forms {kernel} only with a DQ on every input")
    grids = [_grid(d) for d in dqs if d is not None] + [_grid(q)]
    if any(g is None for g in grids):
        misses.append(f"per-channel or computed scales: {kernel} takes one constant scale per tensor")
    elif len({g[2] for g in grids if g is not None}) != 1 or grids[-1][2] not in ("uint8", "int8"):  # type: ignore[index]
        misses.append(f"inputs and output must share one 8-bit type for {kernel}")
    return misses


def _drop(node: ir.Node, dq: ir.Node | None, qs: list[ir.Node]) -> list[str]:
    grids = {_grid(n) for n in [dq, *qs] if n is not None}
    if dq is None or len(grids) != 1 or None in grids:
        return [f"the DQ and Q around {node.op_type} have different grids: ORT runs it in float between "
                "them (give the output the input's grid, or move the DQ below it)"]
    return []


def _fused(node: ir.Node, dqs: list[ir.Node | None]) -> OpVerdict | None:
    """The verdict when ``node`` sits directly between DQs and Qs, else None."""
    qlinear = node.op_type in ORT_QLINEAR_OPS
    outputs = [node.outputs[0]] if node.op_type == "MaxPool" or qlinear else list(node.outputs)
    qs = [_output_q(v, qlinear) for v in outputs if v.uses() or v.is_graph_output()]
    found = [q for q in qs if q is not None]
    if not found or len(found) != len(qs):
        return None
    name = node.name or node.op_type
    if qlinear:
        misses = _qlinear(node, dqs, found[0])
        return OpVerdict(name, node.op_type, not misses, ORT_QLINEAR_OPS[node.op_type], tuple(misses))
    if node.op_type in ORT_DROP_OPS:
        misses = _drop(node, dqs[0], found)
        return OpVerdict(name, node.op_type, not misses, f"{node.op_type} (8-bit)", tuple(misses))
    return None


def _island(node: ir.Node, dqs: list[ir.Node | None]) -> OpVerdict:
    """A float op between DQs and Qs that ORT does not fuse, with the reason."""
    name = node.name or node.op_type
    if node.op_type in ORT_QLINEAR_OPS and all(dqs):
        consumers = sorted({u.node.op_type for u in node.outputs[0].uses()})
        reason = (f"its output is not quantized (it feeds {', '.join(consumers) or 'the graph output'}): ORT "
                  f"forms {ORT_QLINEAR_OPS[node.op_type]} only when a QuantizeLinear is the sole consumer")
    elif node.op_type in ORT_QLINEAR_OPS:
        reason = (f"an input has no DequantizeLinear: ORT forms {ORT_QLINEAR_OPS[node.op_type]} only with a "
                  "DQ on every input")
    elif node.op_type in ORT_DROP_OPS:
        reason = (f"{node.op_type} is not directly between a DQ and Qs of one grid: ORT runs it in float (move "
                  "the DQ below it, or give input and outputs one grid)")
    else:
        reason = (f"ORT 1.31 CPU has no integer kernel for {node.op_type}: it runs in float between "
                  f"DequantizeLinear and QuantizeLinear{_HINTS.get(node.op_type, '')}")
    return OpVerdict(name, node.op_type, False, node.op_type, (reason,))


def _judged(node: ir.Node) -> bool:
    if node.domain != "" or node.op_type in _NOT_OPS or node.op_type in QUANTIZABLE_OP_TYPES:
        return False
    return not _folded_relu(node)


def _folded_relu(node: ir.Node) -> bool:
    """A Relu that ORT folds into the QLinear kernel before it (``op -> Relu -> Q`` with zp = grid min)."""
    if node.op_type != "Relu" or not node.inputs or node.inputs[0] is None:
        return False
    producer = node.inputs[0].producer()
    if producer is None or producer.domain != "" or producer.op_type not in ORT_QLINEAR_OPS:
        return False
    return _output_q(node.inputs[0], through_relu=True) is not None


def _between(graph: ir.Graph) -> set[int]:
    """ids of judged ops on a float path from a DequantizeLinear to a QuantizeLinear.

    A path through a pooled (``N x C x 1 x 1``) tensor does not count: channel statistics and gates are
    float by design (``integer_region``) and cost nothing at that size.
    """
    fed: set[int] = set()
    for node in graph:
        if _judged(node) and any(_dq(v) is not None or (v is not None and v.producer() is not None
                                                         and id(v.producer()) in fed) for v in _data_inputs(node)):
            fed.add(id(node))
    bound: set[int] = set()
    for node in reversed(list(graph)):
        if id(node) not in fed:
            continue
        for out in node.outputs:
            if is_pooled(out):
                continue
            if any((u.node.domain == "" and u.node.op_type == "QuantizeLinear") or id(u.node) in bound
                   or _folded_relu(u.node) for u in out.uses()):
                bound.add(id(node))
    return bound


def ort_cpu_ops(graph: ir.Graph) -> list[OpVerdict]:
    """Verdicts for every op, other than Q/DQ and the layers, that ORT runs on 8-bit data or in an island.

    Reported: ops reading an 8-bit tensor directly (int8), ops between DQs and Qs that ORT fuses (int8),
    and every float op on a path from a DequantizeLinear to a QuantizeLinear (a float island, with the
    reason). Float ops that merely read dequantized data (pooled statistics, a float output tail) are not
    islands and are not listed.
    """
    between = _between(graph)
    verdicts = []
    for node in graph:
        if not _judged(node):
            continue
        data = _data_inputs(node)
        if not any(_dq(v) for v in data) and data and _is_8bit(data[0]):
            verdicts.append(OpVerdict(node.name or node.op_type, node.op_type, True, f"{node.op_type} (8-bit)"))
        elif id(node) in between:
            dqs = [_dq(v) for v in data]
            verdicts.append(_fused(node, dqs) or _island(node, dqs))
    return verdicts
