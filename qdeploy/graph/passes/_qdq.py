"""Building blocks shared by the QDQ passes: unique names, parameter initializers, Q and DQ nodes."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import onnx_ir as ir

__all__ = ["NameSet", "QParamsLike", "add_initializer", "grid_clip_bounds", "is_qdq", "make_dequantize",
           "make_quantize", "param_values", "place_at_start"]


class QParamsLike(Protocol):
    """What the passes need from quantization parameters (``qdeploy.quant.params.QParams`` fits).

    Passes accept this protocol instead of importing ``qdeploy.quant`` so that the graph layer never depends
    on the quantization layer (which itself builds pipelines out of these passes).
    """

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None


def grid_clip_bounds(qp: QParamsLike) -> tuple[np.ndarray, np.ndarray] | None:
    """Float bounds ``[(qmin - zp) * scale, (qmax - zp) * scale]`` of a grid narrower than its storage.

    ``QuantizeLinear`` saturates only at the storage dtype (uint8: 0..255), so a 4-bit tensor stored in
    uint8 would let an out-of-range value reach code 30 instead of saturating at 15. A Clip to these
    bounds in front of the Q makes the QDQ pair saturate on the real grid. None when ``qp`` carries no
    ``qmin``/``qmax`` (``qdeploy.quant.params.activation_qparams`` sets them only below 8 bits) or they
    are the dtype's own limits.

    Raises:
        ValueError: per-channel parameters with a narrow grid (one Clip cannot hold per-channel bounds).
    """
    qmin, qmax = getattr(qp, "qmin", None), getattr(qp, "qmax", None)
    if qmin is None or qmax is None:
        return None
    info = np.iinfo(np.asarray(qp.zero_point).dtype)
    if (qmin, qmax) == (info.min, info.max):
        return None
    if np.ndim(qp.scale) != 0:
        raise ValueError("a sub-8-bit grid needs per-tensor parameters (got per-channel scales)")
    scale, zp = np.float32(qp.scale), int(np.asarray(qp.zero_point))
    return np.array((qmin - zp) * scale, np.float32), np.array((qmax - zp) * scale, np.float32)


class NameSet:
    """All value and node names in use in a graph, handing out fresh ones.

    onnx_ir only invents names for *unnamed* values, so explicit names chosen by a pass could collide with
    existing ones; this keeps them unique in O(1) per name.
    """

    def __init__(self, graph: ir.Graph) -> None:
        self._taken: set[str] = {v.name for v in graph.inputs if v.name}
        self._taken.update(graph.initializers)
        for node in graph:
            if node.name:
                self._taken.add(node.name)
            self._taken.update(out.name for out in node.outputs if out.name)

    def fresh(self, base: str) -> str:
        """``base`` if unused, else ``base_1``, ``base_2``, ...; the returned name is then reserved."""
        name, k = base, 0
        while name in self._taken:
            k += 1
            name = f"{base}_{k}"
        self._taken.add(name)
        return name


def add_initializer(graph: ir.Graph, names: NameSet, base: str, array: np.ndarray) -> ir.Value:
    """Register ``array`` as a new initializer with a fresh name derived from ``base``."""
    name = names.fresh(base)
    tensor = ir.tensor(np.array(array, order="C", copy=True), name=name)
    value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(tensor.dtype),
                     const_value=tensor)
    graph.register_initializer(value)
    return value


def param_values(graph: ir.Graph, names: NameSet, base: str, qp: QParamsLike) -> tuple[ir.Value, ir.Value]:
    """Scale and zero-point initializers ``<base>_scale`` / ``<base>_zero_point`` for ``qp``."""
    scale = add_initializer(graph, names, f"{base}_scale", np.asarray(qp.scale, np.float32))
    zero_point = add_initializer(graph, names, f"{base}_zero_point", np.asarray(qp.zero_point))
    return scale, zero_point


def _axis_attrs(qp: QParamsLike) -> dict[str, int]:
    return {"axis": int(qp.axis)} if qp.axis is not None and np.ndim(qp.scale) == 1 else {}


def make_quantize(names: NameSet, x: ir.Value, scale: ir.Value, zp: ir.Value, qp: QParamsLike,
                  base: str) -> ir.Node:
    """``QuantizeLinear(x, scale, zp)`` with output ``<base>_quantized`` (typed as the zero point)."""
    node = ir.node("QuantizeLinear", [x, scale, zp], _axis_attrs(qp),
                   name=names.fresh(f"{base}_QuantizeLinear"))
    out = node.outputs[0]
    out.name = names.fresh(f"{base}_quantized")
    out.type = zp.type
    out.shape = x.shape
    return node


def make_dequantize(names: NameSet, q: ir.Value, scale: ir.Value, zp: ir.Value, qp: QParamsLike,
                    base: str) -> ir.Node:
    """``DequantizeLinear(q, scale, zp)`` with a float32 output ``<base>_dequantized``."""
    node = ir.node("DequantizeLinear", [q, scale, zp], _axis_attrs(qp),
                   name=names.fresh(f"{base}_DequantizeLinear"))
    out = node.outputs[0]
    out.name = names.fresh(f"{base}_dequantized")
    out.type = ir.TensorType(ir.DataType.FLOAT)
    out.shape = q.shape
    return node


def place_at_start(graph: ir.Graph, nodes: list[ir.Node], after: ir.Node | None = None) -> None:
    """Insert ``nodes`` right after ``after`` (their producer), or first in the graph when it is None."""
    if after is not None:
        graph.insert_after(after, nodes)
    elif len(graph):
        graph.insert_before(graph[0], nodes)
    else:
        graph.extend(nodes)


def is_qdq(node: ir.Node) -> bool:
    """True for standard-domain QuantizeLinear / DequantizeLinear nodes."""
    return node.domain == "" and node.op_type in ("QuantizeLinear", "DequantizeLinear")
