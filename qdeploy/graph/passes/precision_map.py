"""Per-tensor precision of a finished QDQ graph: find its quantized tensors, and re-apply a precision map.

A *precision map* is plain JSON, ``{tensor name: "int4" | "int8" | ... | "float"}``, so a user can read
it in the calibration cache, edit one line and re-apply it. Tensor names are the ones calibration uses:
an activation is named by the float tensor its ``Q -> DQ`` pair(s) read (the calibration-cache key), a
weight by its float initializer (``<name>_quantized`` minus the suffix).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_ir as ir

from qdeploy.errors import InputError
from qdeploy.graph.passes._qdq import NameSet, add_initializer, grid_clip_bounds, make_dequantize
from qdeploy.graph.passes.cleanup import CleanupGraphPass, NameGraphPass
from qdeploy.graph.select import bias_slot, constant_array, weight_slot

__all__ = [
    "FLOAT",
    "ApplyPrecisionMapPass",
    "QuantizedTensor",
    "parse_precision",
    "precision_label",
    "quantized_tensors",
]

#: Label of a tensor left in float.
FLOAT = "float"
_PREQUANT = "_prequant"
_QUANTIZED = "_quantized"


def precision_label(bits: int | None) -> str:
    """``8 -> "int8"``, ``None -> "float"``."""
    return FLOAT if bits is None else f"int{bits}"


def parse_precision(label: str) -> int | None:
    """Bits of a label (``"int4" -> 4``, ``"float" -> None``).

    Raises:
        InputError: anything else (the map is hand-edited, so the message says what is accepted).
    """
    text = str(label).strip().lower()
    if text in (FLOAT, "fp32", "float32"):
        return None
    digits = text.removeprefix("int").removeprefix("w")
    if digits.isdigit() and 2 <= int(digits) <= 8:
        return int(digits)
    raise InputError(
        f"unknown precision {label!r} in the precision map",
        'use "int2" ... "int8" (stored in 8 bits) or "float"',
    )


@dataclass(frozen=True, eq=False)
class QuantizedTensor:
    """One quantized tensor of a QDQ graph and the nodes that quantize it (live references into the graph).

    Attributes:
        name: calibration name (see the module docstring).
        kind: ``"activation"`` (one or more ``[Clip ->] Q -> DQ`` pairs, several with dedicated pairs) or
            ``"weight"`` (one ``DQ(int constant)``).
        bits: grid width, read from the parameters (a grid Clip narrower than the dtype means < 8 bits).
        source: the float tensor the Q reads (activations); None for weights.
        q_nodes / dq_nodes / clips: the nodes of the pair(s).
        consumers: names of the nodes that read the dequantized value.
        integer_uses: uses of the Q outputs by nodes other than DQ (integer data movement of the
            ``full_integer`` tail, which re-dequantizes later with the same parameters); such a tensor's
            precision cannot be changed on its own.
    """

    name: str
    kind: str
    bits: int
    source: ir.Value | None
    q_nodes: tuple[ir.Node, ...]
    dq_nodes: tuple[ir.Node, ...]
    clips: tuple[ir.Node, ...]
    consumers: tuple[str, ...]
    integer_uses: int = 0

    @property
    def label(self) -> str:
        """Precision label, e.g. ``"int8"``."""
        return precision_label(self.bits)


def _is(node: ir.Node | None, op_type: str) -> bool:
    return node is not None and node.domain == "" and node.op_type == op_type


def _grid_clip(value: ir.Value) -> ir.Node | None:
    """The Clip feeding a Q to saturate on a sub-8-bit grid (constant bounds, read only by Qs)."""
    clip = value.producer()
    if not _is(clip, "Clip") or len(clip.inputs) < 3:
        return None
    if constant_array(clip.inputs[1]) is None or constant_array(clip.inputs[2]) is None:
        return None
    return clip if all(_is(u.node, "QuantizeLinear") for u in value.uses()) else None


def _levels_bits(levels: float) -> int:
    return math.ceil(math.log2(max(levels, 2.0)) - 1e-6)


def _activation_bits(q: ir.Node, clip: ir.Node | None) -> int:
    zp = constant_array(q.inputs[2]) if len(q.inputs) > 2 else None
    storage = 8 * (np.dtype(zp.dtype).itemsize if zp is not None else 1)
    scale = constant_array(q.inputs[1])
    if clip is None or scale is None:
        return storage
    lo, hi = constant_array(clip.inputs[1]), constant_array(clip.inputs[2])
    levels = float(np.round((float(hi) - float(lo)) / float(np.max(scale)))) + 1.0
    return min(storage, _levels_bits(levels))


def _symmetric_weight(q: np.ndarray, zp: np.ndarray | None) -> bool:
    """Symmetric grids have one zero point at their centre: 0 in int8, ``2**(bits-1)`` in uint8 (128, 8)."""
    if zp is None:
        return True
    values = np.unique(np.asarray(zp).astype(np.int64))
    if values.size != 1:
        return False
    center = int(values[0])
    return center == 0 if q.dtype == np.int8 else center > 0 and center & (center - 1) == 0


def _weight_bits(q: np.ndarray, zp: np.ndarray | None) -> int:
    q64 = q.astype(np.int64)
    if _symmetric_weight(q, zp):  # codes in [c - (2^(b-1) - 1), c + (2^(b-1) - 1)]
        center = 0 if zp is None else int(np.asarray(zp).ravel()[0])
        return _levels_bits(2 * float(np.max(np.abs(q64 - center), initial=0)) + 1)
    return _levels_bits(float(q64.max(initial=0) - q64.min(initial=0)) + 1)


def _consumer_names(dqs: list[ir.Node]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(u.node.name or u.node.op_type for dq in dqs for u in dq.outputs[0].uses()))


def _activation_name(source: ir.Value, dqs: list[ir.Node]) -> str:
    """The source's name, or the graph output's name when the pair took it over (``x_prequant``)."""
    name = source.name or ""
    if name.endswith(_PREQUANT):
        for dq in dqs:
            if dq.outputs[0].is_graph_output() and dq.outputs[0].name == name[: -len(_PREQUANT)]:
                return dq.outputs[0].name
    return name


def _weight_tensor(node: ir.Node) -> QuantizedTensor | None:
    """The weight a ``DQ(int8/uint8 constant)`` stands for (int32 biases and run-time DQs give None)."""
    q = constant_array(node.inputs[0])
    if q is None or q.dtype not in (np.int8, np.uint8):
        return None
    zp = constant_array(node.inputs[2]) if len(node.inputs) > 2 else None
    init = node.inputs[0].name or ""
    name = init.removesuffix(_QUANTIZED) if init.endswith(_QUANTIZED) else node.outputs[0].name
    return QuantizedTensor(
        name, "weight", _weight_bits(q, zp), None, (), (node,), (), _consumer_names([node])
    )


def _activation_tensor(
    source: ir.Value, qs: list[ir.Node], dqs: list[ir.Node], clips: list[ir.Node]
) -> QuantizedTensor:
    bits = _activation_bits(qs[0], clips[0] if clips else None)
    integer = sum(1 for q in qs for u in q.outputs[0].uses() if not _is(u.node, "DequantizeLinear"))
    return QuantizedTensor(
        _activation_name(source, dqs),
        "activation",
        bits,
        source,
        tuple(qs),
        tuple(dqs),
        tuple(clips),
        _consumer_names(dqs),
        integer,
    )


def quantized_tensors(graph: ir.Graph) -> list[QuantizedTensor]:
    """Every quantized activation and weight of ``graph``, in graph order (int32 bias DQs are not listed:
    their scale follows the activation and weight they belong to). Pairs reading the same float tensor
    (dedicated pairs, one per consumer) form one activation."""
    groups: dict[int, tuple[ir.Value, list[ir.Node], list[ir.Node], list[ir.Node]]] = {}
    found: list[QuantizedTensor | int] = []
    for node in graph:
        if _is(node, "DequantizeLinear"):
            weight = _weight_tensor(node)
            if weight is not None:
                found.append(weight)
            continue
        if not _is(node, "QuantizeLinear") or node.inputs[0] is None:
            continue
        dqs = [u.node for u in node.outputs[0].uses() if _is(u.node, "DequantizeLinear")]
        if not dqs:
            continue
        clip = _grid_clip(node.inputs[0])
        source = clip.inputs[0] if clip is not None else node.inputs[0]
        if id(source) not in groups:
            groups[id(source)] = (source, [], [], [])
            found.append(id(source))
        _, qs, dq_list, clips = groups[id(source)]
        qs.append(node)
        dq_list.extend(dqs)
        if clip is not None and clip not in clips:
            clips.append(clip)
    return [
        item if isinstance(item, QuantizedTensor) else _activation_tensor(*groups[item]) for item in found
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
        floats = _FloatLookup(self.float_model)
        names = NameSet(graph)
        touched: set[str] = set()
        for name, bits in self.precision_map.items():
            tensor = tensors[name]
            if bits == tensor.bits:
                continue
            if tensor.integer_uses:
                raise InputError(
                    f"tensor {name!r} also feeds integer-only ops (the full_integer tail), so its "
                    "precision cannot change on its own",
                    f"keep it at {tensor.label} in the map, or calibrate with full_integer=False",
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
        self, graph: ir.Graph, names: NameSet, t: QuantizedTensor, bits: int | None, floats: _FloatLookup
    ) -> None:
        dq = t.dq_nodes[0]
        w = floats.weight(t) if floats.model is not None else None
        if w is None:
            w = _dequantized(dq)
        if bits is None:
            value = add_initializer(graph, names, f"{t.name}_float", w.astype(np.float32))
            dq.outputs[0].replace_all_uses_with(value, replace_graph_outputs=True)
            graph.remove(dq, safe=True)
            return
        from qdeploy.quant.params import quantize_weight

        q_old, scale_old = constant_array(dq.inputs[0]), constant_array(dq.inputs[1])
        zp_old = constant_array(dq.inputs[2]) if len(dq.inputs) > 2 else None
        symmetric = _symmetric_weight(q_old, zp_old)
        axis = dq.attributes.get_int("axis", 1) % w.ndim if np.ndim(scale_old) == 1 else None
        q, qp = quantize_weight(w, axis, bits, symmetric, str(q_old.dtype))
        _set_constant(graph, names, dq, 0, q, f"{t.name}{_QUANTIZED}", (dq,))
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


def _dequantized(dq: ir.Node) -> np.ndarray:
    """``(q - zp) * scale`` of a constant DQ, per-axis aware."""
    q = constant_array(dq.inputs[0]).astype(np.int64)
    scale = constant_array(dq.inputs[1]).astype(np.float32)
    zp = constant_array(dq.inputs[2]) if len(dq.inputs) > 2 and dq.inputs[2] is not None else None
    zp = np.zeros_like(scale, np.int64) if zp is None else zp.astype(np.int64)
    if scale.ndim == 1 and q.ndim > 0:
        shape = [1] * q.ndim
        shape[dq.attributes.get_int("axis", 1) % q.ndim] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return ((q - zp) * scale).astype(np.float32)


class _FloatLookup:
    """Float weights and biases of the float model, by initializer name or by consumer node name."""

    def __init__(self, model: ir.Model | None) -> None:
        self.model = None
        self.nodes: dict[str, ir.Node] = {}
        if model is not None:
            self.model = model.clone()
            NameGraphPass()(self.model)  # the names quantize() gave the nodes of its prepared copy
            self.nodes = {n.name: n for n in self.model.graph if n.name}

    def weight(self, t: QuantizedTensor) -> np.ndarray | None:
        init = self.model.graph.initializers.get(t.name)
        if init is not None and init.const_value is not None:
            return init.const_value.numpy().astype(np.float32)
        for name in t.consumers:
            node = self.nodes.get(name)
            slot = weight_slot(node) if node is not None else None
            if slot is not None:
                return constant_array(node.inputs[slot[0]]).astype(np.float32)
        return None

    def bias(self, name: str) -> np.ndarray | None:
        node = self.nodes.get(name)
        index = bias_slot(node) if node is not None else None
        return None if index is None else constant_array(node.inputs[index]).astype(np.float32)


def _dq_scale(value: ir.Value | None) -> np.ndarray | None:
    producer = value.producer() if value is not None else None
    return constant_array(producer.inputs[1]) if _is(producer, "DequantizeLinear") else None


def _requantize_bias(graph: ir.Graph, names: NameSet, node: ir.Node, floats: _FloatLookup) -> None:
    """Re-derive an int32 bias DQ of ``node`` from its (possibly new) input and weight scales.

    The float bias comes from the float model (same node name, same shape); without it the old bias is
    dequantized, which carries the old grid's error (``act * weight`` step: coarse when both were 4-bit).
    """
    if node.op_type not in ("Conv", "Gemm") or len(node.inputs) < 3 or node.inputs[2] is None:
        return
    bias_dq = node.inputs[2].producer()
    if not _is(bias_dq, "DequantizeLinear"):
        return
    q = constant_array(bias_dq.inputs[0])
    if q is None or q.dtype != np.int32:
        return
    from qdeploy.quant.params import quantize_bias

    bias = _dequantized(bias_dq)
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
