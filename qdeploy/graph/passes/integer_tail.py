"""IntegerTailPass: keep data movement, residual Adds and the final Clip of a QDQ model in 8-bit integers.

ABPN-style SR nets end in ``conv -> Add(anchor) -> DepthToSpace -> Clip(0, 255)``, all at full output
resolution. After plain QDQ quantization only the convs are integer: ONNX Runtime dequantizes the last
conv, repeats the input nine times in float, adds, shuffles and clips float tensors 9x the size of the
input (~25% of the int8 model's time at 360x640 on AVX2). The authors' TFLite graph is integer to the
end; this pass rewrites the QDQ graph into that form, which ORT then fuses into QLinearAdd, uint8
Expand/DepthToSpace and a single final DequantizeLinear.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qdeploy.graph.passes._qdq import NameSet, add_initializer
from qdeploy.graph.select import constant_array

__all__ = ["MOVEMENT_OP_TYPES", "IntegerTailPass"]

#: Ops that only move or copy elements: ``op(DQ(q)) == DQ(op(q))`` exactly for a per-tensor DQ.
MOVEMENT_OP_TYPES = frozenset({
    "DepthToSpace", "Expand", "Flatten", "Identity", "Reshape", "Slice", "SpaceToDepth", "Squeeze", "Tile",
    "Transpose", "Unsqueeze",
})

_ADD_INPUTS = 2


def _producer(value: ir.Value | None, op_type: str) -> ir.Node | None:
    node = value.producer() if value is not None else None
    if node is not None and node.op_type == op_type and node.domain == "":
        return node
    return None


def _per_tensor_dq(value: ir.Value | None) -> ir.Node | None:
    """The DequantizeLinear producing ``value`` if it has a constant scalar scale (per-tensor)."""
    dq = _producer(value, "DequantizeLinear")
    if dq is None:
        return None
    scale = constant_array(dq.inputs[1])
    return dq if scale is not None and scale.size == 1 else None


def _int_type(dq: ir.Node) -> ir.TypeProtocol | None:
    """The integer type a DQ reads: its input's type, else its zero point's (untyped parsed models)."""
    if dq.inputs[0].type is not None:
        return dq.inputs[0].type
    zp = constant_array(dq.inputs[2]) if len(dq.inputs) > 2 and dq.inputs[2] is not None else None
    return ir.TensorType(ir.DataType.from_numpy(zp.dtype)) if zp is not None else None


def _redirect(graph: ir.Graph, names: NameSet, old: ir.Value, new: ir.Value, uses: list[ir.Usage]) -> None:
    """Point ``uses`` and any graph output slot of ``old`` at ``new``; ``new`` inherits an output's name."""
    for use in uses:
        use.node.replace_input_with(use.idx, new)
    if old.is_graph_output():
        for i, graph_out in enumerate(graph.outputs):
            if graph_out is old:
                graph.outputs[i] = new
        name = old.name
        old.name = names.fresh(f"{name}_replaced")
        new.name = name
        if new.shape is None:  # a graph output needs a shape; the replaced one had the same
            new.shape = old.shape


def _dq_after(names: NameSet, q: ir.Value, scale: ir.Value, zp: ir.Value | None, base: str) -> ir.Node:
    """A per-tensor ``DequantizeLinear(q)`` with a float32 output shaped like ``q``."""
    inputs = [q, scale] if zp is None else [q, scale, zp]
    dq = ir.node("DequantizeLinear", inputs, name=names.fresh(f"{base}_DequantizeLinear"))
    dq.outputs[0].name = names.fresh(f"{base}_dequantized")
    dq.outputs[0].type = ir.TensorType(ir.DataType.FLOAT)
    dq.outputs[0].shape = q.shape
    return dq


class IntegerTailPass(ir.passes.InPlacePass):
    """Move residual Adds, data movement and output Clips of a QDQ graph onto the integer side.

    Three rewrites, repeated until nothing changes:

    1. **Sink DQ through data movement**: ``DQ(q) -> Reshape/Expand/Tile/DepthToSpace/...`` becomes
       ``q -> op -> DQ`` (exact for per-tensor DQ), and ``Shape(DQ(q))`` becomes ``Shape(q)``. The anchor
       path ``Unsqueeze -> Expand -> Reshape`` then copies uint8 instead of float.
    2. **Quantize a clipped Add**: an ``Add`` of two per-tensor DQs whose only consumer chain (through
       data-movement ops) ends in ``Clip(lo, hi)`` with constant bounds gets ``Q -> DQ`` on its output on
       the grid ``scale = (hi - lo) / (qmax - qmin)`` that spans exactly ``[lo, hi]``: the uint8 saturation
       *is* the clip, and ORT fuses ``DQ, DQ -> Add -> Q`` into QLinearAdd. No calibration is needed;
       for ABPN (``Clip(0, 255)``) the grid is scale 1, zero point 0, i.e. integer pixels.
    3. **Drop a redundant Clip**: a Clip whose input is a per-tensor DQ whose whole grid lies in
       ``[lo, hi]`` is the identity and is removed (its output name survives on the DQ output).

    Cases: per-axis DQs and ops with other run-time inputs (e.g. a computed Reshape shape is fine, it is
    not the data input) are left alone; an Add not leading to a Clip stays float (it would need a
    calibrated range); an Add whose inputs are not both dequantized stays float.
    """

    def __init__(self, qdtype: str = "uint8") -> None:
        super().__init__()
        if qdtype not in ("uint8", "int8"):
            raise ValueError(f"qdtype must be 'uint8' or 'int8', got {qdtype!r}")
        self.qdtype = qdtype

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        """Rewrite in place until a fixed point."""
        graph = model.graph
        names = NameSet(graph)
        modified = False
        changed = True
        while changed:
            changed = False
            for node in list(graph):
                if node.graph is None:
                    continue
                if node.op_type == "Shape" and node.domain == "":
                    changed |= self._shape_of_int(node)
                elif node.op_type in MOVEMENT_OP_TYPES and node.domain == "":
                    changed |= self._sink(graph, names, node)
                elif node.op_type == "Add" and node.domain == "":
                    changed |= self._quantize_add(graph, names, node)
                elif node.op_type == "Clip" and node.domain == "":
                    changed |= self._drop_clip(graph, names, node)
            modified |= changed
        return ir.passes.PassResult(model, modified=modified)

    @staticmethod
    def _shape_of_int(node: ir.Node) -> bool:
        """``Shape(DQ(q))`` reads ``q`` instead: same shape, and the float tensor may become dead."""
        dq = _producer(node.inputs[0] if node.inputs else None, "DequantizeLinear")
        if dq is None:
            return False
        node.replace_input_with(0, dq.inputs[0])
        return True

    @staticmethod
    def _sink(graph: ir.Graph, names: NameSet, node: ir.Node) -> bool:
        dq = _per_tensor_dq(node.inputs[0] if node.inputs else None)
        if dq is None or len(node.outputs) != 1:
            return False
        out = node.outputs[0]
        uses = list(out.uses())
        node.replace_input_with(0, dq.inputs[0])
        out.type = _int_type(dq)
        new_dq = _dq_after(names, out, dq.inputs[1], dq.inputs[2] if len(dq.inputs) > 2 else None,
                           out.name or node.name or "moved")
        graph.insert_after(node, new_dq)
        _redirect(graph, names, out, new_dq.outputs[0], uses)
        return True

    def _quantize_add(self, graph: ir.Graph, names: NameSet, add: ir.Node) -> bool:
        if len(add.inputs) != _ADD_INPUTS or not all(_per_tensor_dq(v) for v in add.inputs):
            return False
        out = add.outputs[0]
        if any(u.node.op_type == "QuantizeLinear" for u in out.uses()):
            return False
        bounds = self._clip_after(out)
        if bounds is None:
            return False
        info = np.iinfo(np.dtype(self.qdtype))
        lo, hi = bounds
        scale = np.float32((hi - lo) / (int(info.max) - int(info.min)))
        zero_point = np.array(np.clip(np.round(info.min - lo / scale), info.min, info.max), self.qdtype)
        base = out.name or add.name or "add"
        s = add_initializer(graph, names, f"{base}_scale", np.asarray(scale, np.float32))
        z = add_initializer(graph, names, f"{base}_zero_point", zero_point)
        uses = list(out.uses())
        q = ir.node("QuantizeLinear", [out, s, z], name=names.fresh(f"{base}_QuantizeLinear"))
        q.outputs[0].name = names.fresh(f"{base}_quantized")
        q.outputs[0].type = z.type
        q.outputs[0].shape = out.shape
        dq = _dq_after(names, q.outputs[0], s, z, base)
        _redirect(graph, names, out, dq.outputs[0], uses)
        graph.insert_after(add, [q, dq])
        return True

    @staticmethod
    def _clip_after(value: ir.Value) -> tuple[float, float] | None:
        """Constant (lo, hi) of the Clip that ``value`` reaches through single-use data movement."""
        while True:
            uses = list(value.uses())
            if len(uses) != 1 or value.is_graph_output():
                return None
            node = uses[0].node
            if node.domain != "":
                return None
            if node.op_type == "Clip" and uses[0].idx == 0:
                lo = constant_array(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] else None
                hi = constant_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
                if lo is None or hi is None or not float(lo) < float(hi):
                    return None
                return float(lo), float(hi)
            if node.op_type not in MOVEMENT_OP_TYPES or uses[0].idx != 0:
                return None
            value = node.outputs[0]

    @staticmethod
    def _drop_clip(graph: ir.Graph, names: NameSet, clip: ir.Node) -> bool:
        dq = _per_tensor_dq(clip.inputs[0])
        if dq is None or len(clip.inputs) < 3:
            return False
        lo, hi = constant_array(clip.inputs[1]), constant_array(clip.inputs[2])
        zp_value = dq.inputs[2] if len(dq.inputs) > 2 else None
        zp = constant_array(zp_value)
        if lo is None or hi is None or zp is None:
            return False
        scale = float(constant_array(dq.inputs[1]).reshape(()))
        info = np.iinfo(zp.dtype)
        grid_lo = scale * (int(info.min) - int(zp.reshape(())))
        grid_hi = scale * (int(info.max) - int(zp.reshape(())))
        if not (float(lo) <= grid_lo and grid_hi <= float(hi)):
            return False
        source = dq.outputs[0]
        if source.is_graph_output():
            return False
        _redirect(graph, names, clip.outputs[0], source, list(clip.outputs[0].uses()))
        graph.remove(clip, safe=True)
        return True
