"""Find the quantizers of a QDQ graph and describe what refinement may change in each.

Three kinds, all read from the graph alone (plus the float model for the original weights):

- **activation** quantizers, one per scale initializer read by a ``QuantizeLinear`` (the DQs reading the
  same initializer follow it); a sub-8-bit grid's ``Clip -> Q`` bounds are tied to the scale and zero point;
- **weight** quantizers: a ``DequantizeLinear`` of a constant integer initializer. The float weight is
  recovered from the float model by name (``<w>_quantized`` -> ``<w>``) when it still reproduces the stored
  integers; otherwise the dequantized weight stands in for it;
- **bias** quantizers: int32 DQs (``QuantizeBiasPass``) whose scale must stay ``act_scale * weight_scale``
  for ONNX Runtime's fused kernels, so they are recomputed from the refined scales, never learned.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from qdeploy.graph.select import constant_array
from qdeploy.quant.params import int_range
from qdeploy.torchexec.ops_quant import INTEGER_LIMITS

__all__ = ["ActivationQuantizer", "BiasQuantizer", "Quantizers", "WeightQuantizer", "find_quantizers"]

_METADATA_KEY = "qdeploy.quant_config"
_QUANTIZED_SUFFIX = re.compile(r"_quantized(_\d+)?$")
#: Share of stored weight integers the float weight must reproduce to be trusted as their source.
_MIN_WEIGHT_MATCH = 0.95


@dataclass
class ActivationQuantizer:
    """A run-time tensor's grid: ``scale``/``zero_point`` initializer names and grid-Clip bounds."""

    scale: str
    zero_point: str | None
    storage: ir.DataType
    learn_zero_point: bool
    clips: list[tuple[str, str, int, int]] = field(default_factory=list)  # (min init, max init, qlo, qhi)


@dataclass
class WeightQuantizer:
    """A constant weight: its integer initializer, parameters, per-channel axis, grid and float source."""

    weight: str
    scale: str
    zero_point: str | None
    axis: int | None
    storage: ir.DataType
    grid: tuple[int, int]
    float_weight: np.ndarray
    from_float_model: bool
    learn_zero_point: bool


@dataclass
class BiasQuantizer:
    """An int32 bias whose scale is ``act_scale * weight_scale`` (names of those scale initializers)."""

    bias: str
    scale: str
    act_scale: str
    weight_scale: str
    float_bias: np.ndarray


@dataclass
class Quantizers:
    """Every quantizer found in one QDQ graph."""

    activations: dict[str, ActivationQuantizer]
    weights: dict[str, WeightQuantizer]
    biases: list[BiasQuantizer]


def _initializer(value: ir.Value | None) -> str | None:
    """The name of ``value`` if it is a (non-input) initializer, else None."""
    if value is None or value.const_value is None or value.is_graph_input() or not value.is_initializer():
        return None
    return value.name


def _metadata(model: ir.Model) -> dict:
    try:
        return json.loads(model.metadata_props.get(_METADATA_KEY, "{}"))
    except json.JSONDecodeError:
        return {}


def _storage(node: ir.Node) -> ir.DataType:
    zp = node.inputs[2] if len(node.inputs) > 2 else None
    if zp is not None and zp.dtype is not None:
        return zp.dtype
    if node.inputs[0].dtype is not None and node.op_type == "DequantizeLinear":
        return node.inputs[0].dtype
    return ir.DataType.UINT8


def _is_symmetric_zp(zp: np.ndarray, storage: ir.DataType) -> bool:
    lo, hi = INTEGER_LIMITS[storage]
    mid = 0 if lo < 0 else (hi + 1) // 2
    return bool(np.all(zp == mid))


def _activation_quantizers(graph: ir.Graph, meta: dict, learn_zp: bool) -> dict[str, ActivationQuantizer]:
    found: dict[str, ActivationQuantizer] = {}
    symmetric_meta = meta.get("activation", {}).get("symmetric")
    for node in graph:
        if node.op_type != "QuantizeLinear" or node.domain not in ("", "ai.onnx"):
            continue
        scale = _initializer(node.inputs[1])
        zp_value = node.inputs[2] if len(node.inputs) > 2 else None
        zp = _initializer(zp_value)
        if scale is None or (zp_value is not None and zp is None) or node.attributes.get("block_size"):
            continue
        if not _pairs_share_parameters(node, scale, zp):
            continue  # a DQ with its own copy of the parameters: learning one side would break the pair
        storage = _storage(node)
        if scale not in found:
            zp_array = zp_value.const_value.numpy() if zp is not None else np.zeros(1)
            symmetric = symmetric_meta if symmetric_meta is not None else _is_symmetric_zp(zp_array, storage)
            learn = learn_zp and zp is not None and not symmetric
            found[scale] = ActivationQuantizer(scale, zp, storage, learn)
        clip = _grid_clip(node, found[scale])
        if clip is not None and clip not in found[scale].clips:
            found[scale].clips.append(clip)
    return found


def _pairs_share_parameters(q: ir.Node, scale: str, zp: str | None) -> bool:
    """Whether every DQ reading this Q's output reads the very same scale and zero-point initializers."""
    for use in q.outputs[0].uses():
        if use.node.op_type == "DequantizeLinear":
            dq_zp = use.node.inputs[2] if len(use.node.inputs) > 2 else None
            if _initializer(use.node.inputs[1]) != scale or _initializer(dq_zp) != zp:
                return False
    return True


def _grid_clip(q: ir.Node, act: ActivationQuantizer) -> tuple[str, str, int, int] | None:
    """``(min, max, qlo, qhi)`` of a ``Clip`` with constant bounds feeding only this Q (a sub-8-bit grid)."""
    producer = q.inputs[0].producer()
    if producer is None or producer.op_type != "Clip" or len(producer.inputs) < 3:
        return None
    if any(use.node.op_type != "QuantizeLinear" for use in q.inputs[0].uses()):
        return None
    lo, hi = _initializer(producer.inputs[1]), _initializer(producer.inputs[2])
    if lo is None or hi is None:
        return None
    scale = float(constant_array(q.inputs[1]).reshape(-1)[0])
    zp = float(constant_array(q.inputs[2]).reshape(-1)[0]) if act.zero_point else 0.0
    qlo = round(float(constant_array(producer.inputs[1]).reshape(())) / scale + zp)
    qhi = round(float(constant_array(producer.inputs[2]).reshape(())) / scale + zp)
    return lo, hi, qlo, qhi


def _weight_grid(q: np.ndarray, zp: np.ndarray, storage: ir.DataType, meta: dict) -> tuple[int, int]:
    """A weight's integer grid: the recorded QuantConfig's when the stored ints fit it, else inferred."""
    if meta.get("weight_dtype") and storage.numpy() == np.dtype(meta["weight_dtype"]):
        bits = meta.get("weight_bits", 8) - (1 if meta.get("reduce_range") else 0)
        grid = int_range(bits, meta["weight_dtype"], bool(meta.get("weight_symmetric", True)))
        if q.size == 0 or (q.min() >= grid[0] and q.max() <= grid[1]):
            return grid
    if _is_symmetric_zp(zp, storage):  # symmetric around the zero point, as wide as the stored codes
        mid = int(np.asarray(zp).reshape(-1)[0])
        half = int(np.abs(q.astype(np.int64) - mid).max(initial=1))
        return mid - half, mid + half
    return int(q.min(initial=INTEGER_LIMITS[storage][0])), int(q.max(initial=INTEGER_LIMITS[storage][1]))


def _broadcast(param: np.ndarray, ndim: int, axis: int | None) -> np.ndarray:
    if axis is None or param.ndim == 0 or param.size == 1:
        return param.reshape(())
    shape = [1] * ndim
    shape[axis] = -1
    return param.reshape(shape)


def _float_weight(name: str, q: np.ndarray, scale: np.ndarray, zp: np.ndarray, axis: int | None,
                  grid: tuple[int, int], float_inits: dict[str, np.ndarray]) -> tuple[np.ndarray, bool]:
    """The float weight behind ``q``: the float model's (if it reproduces ``q``), else the dequantized one."""
    s, z = _broadcast(scale, q.ndim, axis), _broadcast(zp.astype(np.float64), q.ndim, axis)
    dequantized = ((q.astype(np.float64) - z) * s).astype(np.float32)
    candidate = float_inits.get(_QUANTIZED_SUFFIX.sub("", name))
    if candidate is not None and candidate.shape == q.shape and np.issubdtype(candidate.dtype, np.floating):
        requant = np.clip(np.rint(candidate.astype(np.float32) / s) + z, *grid)
        if np.mean(requant == q) >= _MIN_WEIGHT_MATCH:
            return candidate.astype(np.float32), True
    return dequantized, False


def _weight_quantizers(graph: ir.Graph, float_model: ir.Model, meta: dict,
                       learn_zp: bool) -> dict[str, WeightQuantizer]:
    float_inits = {n: v.const_value.numpy() for n, v in float_model.graph.initializers.items()
                   if v.const_value is not None}
    found: dict[str, WeightQuantizer] = {}
    for node in graph:
        if node.op_type != "DequantizeLinear" or node.attributes.get("block_size"):
            continue
        weight, scale = _initializer(node.inputs[0]), _initializer(node.inputs[1])
        zp_value = node.inputs[2] if len(node.inputs) > 2 else None
        zp_name = _initializer(zp_value)
        if weight is None or scale is None or weight in found or (zp_value is not None and zp_name is None):
            continue
        storage = node.inputs[0].const_value.dtype
        if storage == ir.DataType.INT32 or storage not in INTEGER_LIMITS:
            continue  # int32 = bias (recomputed, see BiasQuantizer)
        q = node.inputs[0].const_value.numpy().astype(np.int64)
        scale_array = node.inputs[1].const_value.numpy().astype(np.float32)
        zp = (zp_value.const_value.numpy().astype(np.int64) if zp_name
              else np.zeros(scale_array.shape, np.int64))
        axis = node.attributes.get_int("axis", 1) % q.ndim if scale_array.size > 1 else None
        grid = _weight_grid(q, zp, storage, meta)
        w, exact = _float_weight(weight, q, scale_array, zp, axis, grid, float_inits)
        symmetric = meta.get("weight_symmetric", _is_symmetric_zp(zp, storage))
        found[weight] = WeightQuantizer(weight, scale, zp_name, axis, storage, grid, w, exact,
                                        learn_zp and zp_name is not None and not symmetric)
    return found


def _bias_quantizers(graph: ir.Graph, scales: set[str]) -> list[BiasQuantizer]:
    found = []
    for node in graph:
        if node.op_type not in ("Conv", "ConvTranspose", "Gemm") or len(node.inputs) < 3:
            continue
        dqs = [v.producer() if v is not None else None for v in node.inputs[:3]]
        if any(d is None or d.op_type != "DequantizeLinear" for d in dqs):
            continue
        bias, bias_scale = _initializer(dqs[2].inputs[0]), _initializer(dqs[2].inputs[1])
        act_scale, w_scale = _initializer(dqs[0].inputs[1]), _initializer(dqs[1].inputs[1])
        if None in (bias, bias_scale, act_scale, w_scale) or dqs[2].inputs[0].dtype != ir.DataType.INT32:
            continue
        if act_scale not in scales and w_scale not in scales:
            continue
        q = dqs[2].inputs[0].const_value.numpy().astype(np.float64)
        s = dqs[2].inputs[1].const_value.numpy().astype(np.float64)
        float_bias = (q * s.reshape(-1)).astype(np.float32)
        found.append(BiasQuantizer(bias, bias_scale, act_scale, w_scale, float_bias))
    return found


def find_quantizers(qdq_model: ir.Model, float_model: ir.Model, learn_zero_points: bool) -> Quantizers:
    """All refinable quantizers of ``qdq_model`` (see the module docstring for what each kind holds)."""
    meta = _metadata(qdq_model)
    acts = _activation_quantizers(qdq_model.graph, meta, learn_zero_points)
    weights = _weight_quantizers(qdq_model.graph, float_model, meta, learn_zero_points)
    scales = set(acts) | {w.scale for w in weights.values()}
    return Quantizers(acts, weights, _bias_quantizers(qdq_model.graph, scales))
