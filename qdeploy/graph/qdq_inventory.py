"""Inventory of a finished QDQ graph: which tensors are quantized, at what precision, and their float values.

Shared by the precision-map pass (``qdeploy.graph.passes.precision_map``) and the sensitivity analysis
(``qdeploy.analyze``): both must agree on what "a quantized tensor" is and how it is named. An
activation is named by the float tensor its ``Q -> DQ`` pair(s) read (the calibration-cache key), a
weight by its float initializer (``<name>_quantized`` minus the suffix).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from qdeploy.errors import InputError, QDeployError
from qdeploy.graph.select import bias_slot, constant_array, weight_slot

__all__ = [
    "FLOAT",
    "PREQUANT_SUFFIX",
    "QUANTIZED_SUFFIX",
    "FloatLookup",
    "QuantizedTensor",
    "dequantized",
    "is_op",
    "lowbit_grid",
    "parse_precision",
    "precision_label",
    "quantized_tensors",
    "symmetric_weight",
]

#: Label of a tensor left in float.
FLOAT = "float"
PREQUANT_SUFFIX = "_prequant"
QUANTIZED_SUFFIX = "_quantized"


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


def is_op(node: ir.Node | None, op_type: str) -> bool:
    return node is not None and node.domain == "" and node.op_type == op_type


def _grid_clip(value: ir.Value) -> ir.Node | None:
    """The Clip feeding a Q to saturate on a sub-8-bit grid (constant bounds, read only by Qs)."""
    clip = value.producer()
    if not is_op(clip, "Clip") or len(clip.inputs) < 3:
        return None
    if constant_array(clip.inputs[1]) is None or constant_array(clip.inputs[2]) is None:
        return None
    return clip if all(is_op(u.node, "QuantizeLinear") for u in value.uses()) else None


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


def symmetric_weight(q: np.ndarray, zp: np.ndarray | None) -> bool:
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
    if symmetric_weight(q, zp):  # codes in [c - (2^(b-1) - 1), c + (2^(b-1) - 1)]
        center = 0 if zp is None else int(np.asarray(zp).ravel()[0])
        return _levels_bits(2 * float(np.max(np.abs(q64 - center), initial=0)) + 1)
    return _levels_bits(float(q64.max(initial=0) - q64.min(initial=0)) + 1)


def _consumer_names(dqs: list[ir.Node]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(u.node.name or u.node.op_type for dq in dqs for u in dq.outputs[0].uses()))


def _activation_name(source: ir.Value, dqs: list[ir.Node]) -> str:
    """The source's name, or the graph output's name when the pair took it over (``x_prequant``)."""
    name = source.name or ""
    if name.endswith(PREQUANT_SUFFIX):
        for dq in dqs:
            if dq.outputs[0].is_graph_output() and dq.outputs[0].name == name[: -len(PREQUANT_SUFFIX)]:
                return dq.outputs[0].name
    return name


def _weight_tensor(node: ir.Node) -> QuantizedTensor | None:
    """The weight a ``DQ(int8/uint8 constant)`` stands for (int32 biases and run-time DQs give None)."""
    q = constant_array(node.inputs[0])
    if q is None or q.dtype not in (np.int8, np.uint8):
        return None
    zp = constant_array(node.inputs[2]) if len(node.inputs) > 2 else None
    init = node.inputs[0].name or ""
    name = init.removesuffix(QUANTIZED_SUFFIX) if init.endswith(QUANTIZED_SUFFIX) else node.outputs[0].name
    return QuantizedTensor(
        name, "weight", _weight_bits(q, zp), None, (), (node,), (), _consumer_names([node])
    )


def _activation_tensor(
    source: ir.Value, qs: list[ir.Node], dqs: list[ir.Node], clips: list[ir.Node]
) -> QuantizedTensor:
    bits = _activation_bits(qs[0], clips[0] if clips else None)
    integer = sum(1 for q in qs for u in q.outputs[0].uses() if not is_op(u.node, "DequantizeLinear"))
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
        if is_op(node, "DequantizeLinear"):
            weight = _weight_tensor(node)
            if weight is not None:
                found.append(weight)
            continue
        if not is_op(node, "QuantizeLinear") or node.inputs[0] is None:
            continue
        dqs = [u.node for u in node.outputs[0].uses() if is_op(u.node, "DequantizeLinear")]
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


def dequantized(dq: ir.Node) -> np.ndarray:
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


class FloatLookup:
    """Float weights and biases of the float model, by initializer name or by consumer node name."""

    def __init__(self, model: ir.Model | None) -> None:
        self.model = None
        self.nodes: dict[str, ir.Node] = {}
        if model is not None:
            self.model = model.clone()
            from qdeploy.graph.passes.cleanup import NameGraphPass  # lazy: the passes package imports this module

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


#: Weights narrower than this count as a low-bit grid. 7-bit weights are int8 kernel safety, not a
#: low-bit scheme (ORT's reduce_range; qdeploy's pair-saturation guard can shrink some weights too).
LOWBIT_WEIGHT_BITS = 7


def lowbit_grid(graph: ir.Graph) -> str | None:
    """``"W4A4"`` when some grid of an 8-bit-storage QDQ graph is narrower than its storage, else None.

    Activations count when a grid Clip narrows them; weights when their codes span fewer than
    :data:`LOWBIT_WEIGHT_BITS` bits. Mixed precision lists every width: ``"W4/8A4/8"``. Such a graph is a
    simulation: its kernels are 8-bit, holding values of the narrower grid. A graph whose Q/DQ the inventory
    cannot read also gives None: callers then keep their 8-bit wording.
    """
    try:
        tensors = quantized_tensors(graph)
    except (QDeployError, ValueError, TypeError, IndexError):
        return None
    weights = sorted({t.bits for t in tensors if t.kind == "weight"})
    acts = sorted({t.bits for t in tensors if t.kind == "activation"})
    if not ((weights and weights[0] < LOWBIT_WEIGHT_BITS) or (acts and acts[0] < 8)):
        return None
    return "".join(f"{kind}{'/'.join(map(str, bits))}" for kind, bits in (("W", weights), ("A", acts)) if bits)
