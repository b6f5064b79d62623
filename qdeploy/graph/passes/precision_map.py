"""Re-apply a per-tensor precision map to a finished QDQ graph (the inventory is ``qdeploy.graph.qdq_inventory``).

A *precision map* is plain JSON, ``{tensor name: "int4" | "int8" | ... | "float"}``, so a user can read
it in the calibration cache, edit one line and re-apply it. Tensor names are the ones calibration uses:
an activation is named by the float tensor its ``Q -> DQ`` pair(s) read (the calibration-cache key), a
weight by its float initializer (``<name>_quantized`` minus the suffix).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx_ir as ir

from qdeploy.errors import InputError
from qdeploy.graph.passes._qdq import NameSet, add_initializer, grid_clip_bounds, make_dequantize
from qdeploy.graph.passes.cleanup import CleanupGraphPass
from qdeploy.graph.qdq_inventory import (
    FLOAT,
    QUANTIZED_SUFFIX,
    FloatLookup,
    QuantizedTensor,
    dequantized,
    is_op,
    parse_precision,
    precision_label,
    quantized_tensors,
    symmetric_weight,
)
from qdeploy.graph.select import constant_array

__all__ = [
    "FLOAT",
    "ApplyPrecisionMapPass",
    "QuantizedTensor",
    "parse_precision",
    "precision_label",
    "quantized_tensors",
]

class ApplyPrecisionMapPass(ir.passes.InPlacePass):
    """Set each mapped tensor of a finished QDQ graph to its precision: re-quantize it or leave it float.

    Why a pass on the *finished* graph rather than a new quantization: the map is a small, hand-editable
    correction of a calibrated model, and everything else (placement, ranges, runtime rewrites) must stay
    exactly as calibrated.

    Cases:
      - activation -> ``intB``: new scale/zero point from the calibrated range ``ranges[name]`` (lo/hi of the
        cache), or, when absent, from the range the current grid covers; below the storage width a grid
        Clip saturates on the narrow grid (the same :func:`grid_clip_bounds` rule as
        ``InsertActivationQDQPass``), at full width any such Clip is removed;
      - weight -> ``intB``: re-quantized from the *float* weight of ``float_model`` (found by initializer
        name, else by the consumer node's name and weight slot), same axis, dtype and symmetry; without a
        float model the current dequantized weight is used (re-rounding adds error: pass the float model);
      - ``float``: the pair goes away (consumers read the float tensor, which keeps a graph output's name);
        a weight becomes its float initializer;
      - the int32 bias of every Conv/Gemm touched is re-quantized for the new ``act_scale * weight_scale``
        (from the float model's bias), or made float when an input became float or int32 overflows;
      - a tensor already at its mapped precision is left as is; a name that is not a quantized tensor of
        the graph raises :class:`InputError` listing some valid names.

    ``symmetric`` (activations): None infers it from the storage dtype (int8: symmetric, TensorRT;
    uint8: asymmetric, ORT). Weights keep the symmetry their zero points show.
    Caveat: weights that ``AvoidPairSaturationPass`` shrank are re-quantized without that shrink.
    """

    def __init__(
        self,
        precision_map: Mapping[str, str],
        ranges: Mapping[str, Any] | None = None,
        float_model: ir.Model | None = None,
        symmetric: bool | None = None,
    ) -> None:
        super().__init__()
        self.precision_map = {str(k): parse_precision(v) for k, v in precision_map.items()}
        self.ranges = dict(ranges or {})
        self.float_model = float_model
        self.symmetric = symmetric

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        """Apply the map in place."""
        graph = model.graph
        tensors = {t.name: t for t in quantized_tensors(graph)}
        unknown = sorted(set(self.precision_map) - set(tensors))
        if unknown:
            raise InputError(
                f"precision map names {len(unknown)} tensor(s) the model does not quantize, "
                f"e.g. {unknown[0]!r}",
                f"use names of its quantized tensors, e.g. {', '.join(list(tensors)[:5])}",
            )
        floats = FloatLookup(self.float_model)
        names = NameSet(graph)
        touched: set[str] = set()
        for name, bits in self.precision_map.items():
            tensor = tensors[name]
            if bits == tensor.bits:
                continue
            if tensor.integer_uses:
                raise InputError(
                    f"tensor {name!r} also feeds integer-only ops (the full_integer tail, or a Split/"
                    "MaxPool/Resize of the integer_region), so its precision cannot change on its own",
                    f"keep it at {tensor.label} in the map, or calibrate with full_integer=False and "
                    "integer_region=False",
                )
            touched.update(tensor.consumers)
            if tensor.kind == "activation":
                self._activation(graph, names, tensor, bits)
            else:
                self._weight(graph, names, tensor, bits, floats)
        for node in [n for n in graph if n.name in touched]:
            _requantize_bias(graph, names, node, floats)
        if touched:
            CleanupGraphPass()(model)  # old parameters, float weights of re-quantized DQs
        return ir.passes.PassResult(model, modified=bool(touched))

    def _activation(self, graph: ir.Graph, names: NameSet, t: QuantizedTensor, bits: int | None) -> None:
        if bits is None:
            _remove_pairs(graph, t)
            return
        from qdeploy.quant.params import activation_qparams  # the graph layer reads no quant code at import
        from qdeploy.types import QuantTarget

        zp_old = constant_array(t.q_nodes[0].inputs[2])
        dtype = str(zp_old.dtype)
        symmetric = dtype == "int8" if self.symmetric is None else self.symmetric
        lo, hi = self._range(t)
        qp = activation_qparams(lo, hi, QuantTarget(bits, symmetric), dtype)
        owners = (*t.q_nodes, *t.dq_nodes)
        for node in owners:
            _set_constant(graph, names, node, 1, np.asarray(qp.scale, np.float32), f"{t.name}_scale", owners)
            _set_constant(graph, names, node, 2, np.asarray(qp.zero_point), f"{t.name}_zero_point", owners)
        bounds = grid_clip_bounds(qp)
        for clip in t.clips:
            for q in t.q_nodes:
                if q.inputs[0] is clip.outputs[0]:
                    q.replace_input_with(0, t.source)
            graph.remove(clip, safe=True)
        if bounds is not None:
            lo_v = add_initializer(graph, names, f"{t.name}_grid_min", bounds[0])
            hi_v = add_initializer(graph, names, f"{t.name}_grid_max", bounds[1])
            for q in t.q_nodes:
                clip = ir.node("Clip", [t.source, lo_v, hi_v], name=names.fresh(f"{t.name}_GridClip"))
                clip.outputs[0].name = names.fresh(f"{t.name}_grid_clipped")
                clip.outputs[0].type, clip.outputs[0].shape = t.source.type, t.source.shape
                graph.insert_before(q, clip)
                q.replace_input_with(0, clip.outputs[0])

    def _range(self, t: QuantizedTensor) -> tuple[float, float]:
        """Calibrated [lo, hi] of ``t`` from the cache ranges, else the span of its current grid."""
        r = self.ranges.get(t.name)
        if r is not None:
            return (float(r.lo), float(r.hi)) if hasattr(r, "lo") else (float(r[0]), float(r[1]))
        q = t.q_nodes[0]
        scale, zp = float(constant_array(q.inputs[1])), int(constant_array(q.inputs[2]))
        if t.clips:
            return float(constant_array(t.clips[0].inputs[1])), float(constant_array(t.clips[0].inputs[2]))
        info = np.iinfo(constant_array(q.inputs[2]).dtype)
        return (info.min - zp) * scale, (info.max - zp) * scale

    def _weight(
        self, graph: ir.Graph, names: NameSet, t: QuantizedTensor, bits: int | None, floats: FloatLookup
    ) -> None:
        dq = t.dq_nodes[0]
        w = floats.weight(t) if floats.model is not None else None
        if w is None:
            w = dequantized(dq)
        if bits is None:
            value = add_initializer(graph, names, f"{t.name}_float", w.astype(np.float32))
            dq.outputs[0].replace_all_uses_with(value, replace_graph_outputs=True)
            graph.remove(dq, safe=True)
            return
        from qdeploy.quant.params import quantize_weight

        q_old, scale_old = constant_array(dq.inputs[0]), constant_array(dq.inputs[1])
        zp_old = constant_array(dq.inputs[2]) if len(dq.inputs) > 2 else None
        symmetric = symmetric_weight(q_old, zp_old)
        axis = dq.attributes.get_int("axis", 1) % w.ndim if np.ndim(scale_old) == 1 else None
        q, qp = quantize_weight(w, axis, bits, symmetric, str(q_old.dtype))
        _set_constant(graph, names, dq, 0, q, f"{t.name}{QUANTIZED_SUFFIX}", (dq,))
        _set_constant(graph, names, dq, 1, np.asarray(qp.scale, np.float32), f"{t.name}_scale", (dq,))
        _set_constant(graph, names, dq, 2, np.asarray(qp.zero_point), f"{t.name}_zero_point", (dq,))


def _set_constant(
    graph: ir.Graph,
    names: NameSet,
    node: ir.Node,
    index: int,
    array: np.ndarray,
    base: str,
    owners: tuple[ir.Node, ...],
) -> None:
    """Give ``node.inputs[index]`` the value ``array``: in place when only ``owners`` read that initializer
    (names stay stable, so re-applying a map gives the same graph), else through a new initializer."""
    value = node.inputs[index]
    if value is not None and value.is_initializer() and all(u.node in owners for u in value.uses()):
        tensor = ir.tensor(np.array(array, order="C", copy=True), name=value.name)
        value.const_value = tensor
        value.shape, value.type = ir.Shape(array.shape), ir.TensorType(tensor.dtype)
        return
    node.replace_input_with(index, add_initializer(graph, names, base, array))


def _remove_pairs(graph: ir.Graph, t: QuantizedTensor) -> None:
    """Consumers of the DQs read the float source again; a graph output keeps its name."""
    for dq in t.dq_nodes:
        out = dq.outputs[0]
        name, is_output = out.name, out.is_graph_output()
        out.replace_all_uses_with(t.source, replace_graph_outputs=True)
        graph.remove(dq, safe=True)
        if is_output and not t.source.is_graph_input():
            t.source.name = name
    for node in (*t.q_nodes, *t.clips):
        if not node.outputs[0].uses():
            graph.remove(node, safe=True)


def _dq_scale(value: ir.Value | None) -> np.ndarray | None:
    producer = value.producer() if value is not None else None
    return constant_array(producer.inputs[1]) if is_op(producer, "DequantizeLinear") else None


def _requantize_bias(graph: ir.Graph, names: NameSet, node: ir.Node, floats: FloatLookup) -> None:
    """Re-derive an int32 bias DQ of ``node`` from its (possibly new) input and weight scales.

    The float bias comes from the float model (same node name, same shape); without it the old bias is
    dequantized, which carries the old grid's error (``act * weight`` step: coarse when both were 4-bit).
    """
    if node.op_type not in ("Conv", "Gemm") or len(node.inputs) < 3 or node.inputs[2] is None:
        return
    bias_dq = node.inputs[2].producer()
    if not is_op(bias_dq, "DequantizeLinear"):
        return
    q = constant_array(bias_dq.inputs[0])
    if q is None or q.dtype != np.int32:
        return
    from qdeploy.quant.params import quantize_bias

    bias = dequantized(bias_dq)
    float_bias = floats.bias(node.name)
    bias = float_bias if float_bias is not None and float_bias.shape == bias.shape else bias
    act, weight = _dq_scale(node.inputs[0]), _dq_scale(node.inputs[1])
    quantized = None
    if act is not None and weight is not None and np.ndim(act) == 0:
        quantized = quantize_bias(bias, float(act), weight)
    if quantized is None:
        new = add_initializer(graph, names, f"{node.name}_bias_float", bias)
    else:
        q_arr, qp = quantized
        q_val = add_initializer(graph, names, f"{node.name}_bias_quantized", q_arr)
        scale = add_initializer(graph, names, f"{node.name}_bias_scale", np.asarray(qp.scale, np.float32))
        zp = add_initializer(graph, names, f"{node.name}_bias_zero_point", np.asarray(qp.zero_point))
        dq = make_dequantize(names, q_val, scale, zp, qp, f"{node.name}_bias")
        graph.insert_before(node, dq)
        new = dq.outputs[0]
    node.replace_input_with(2, new)
    if not bias_dq.outputs[0].uses():
        graph.remove(bias_dq, safe=True)
