"""``quantize``: float IR model + calibrated ranges + QuantConfig -> QDQ IR model.

The pass pipeline is fixed (``qdeploy.graph.passes.QUANTIZE_PIPELINE``); this module only turns a config
into pass arguments, so every policy decision is visible in :class:`QuantConfig` and every graph rewrite in
one pass module.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import PassBase

from qdeploy.errors import CalibrationError, UnsupportedModelError
from qdeploy.graph.passes import (
    OPTIONAL_PASSES,
    PREPARE_PIPELINE,
    QUANTIZE_PIPELINE,
    AvoidPairSaturationPass,
    CleanupGraphPass,
    ConvTransposeToConvPass,
    DedicateQDQPass,
    InsertActivationQDQPass,
    IntegerTailPass,
    QuantizeBiasPass,
    QuantizeWeightsPass,
    ShiftOneSidedActivationsPass,
    ShiftQKPass,
    SinkDQPass,
    UniformPReluToLeakyReluPass,
)
from qdeploy.graph.passes.integer_region import RegionPlan, inferred_shapes, plan_integer_region, pooled_convs
from qdeploy.graph.passes.rotate_attention import RotateAttentionValuesPass
from qdeploy.graph.passes.rotate_inputs import RotateLinearInputsPass, is_rotation
from qdeploy.graph.passes.shift_qk import QKMeans
from qdeploy.graph.select import (
    QUANTIZABLE_OP_TYPES,
    NodeFilter,
    activation_tensors,
    constant_array,
    select_nodes,
    weight_slot,
)
from qdeploy.quant.config import QuantConfig
from qdeploy.quant.params import QParams, activation_qparams, dequantize_array, quantize_bias, quantize_weight
from qdeploy.types import TensorRange

__all__ = ["MIN_OPSET", "calibration_model", "check_opset", "quantization_summary", "quantize",
           "tensors_to_calibrate"]

#: Per-axis DequantizeLinear (per-channel weights) exists from opset 13.
MIN_OPSET = 13
METADATA_KEY = "qdeploy.quant_config"


def check_opset(model: ir.Model) -> int:
    """The model's default-domain opset; :class:`UnsupportedModelError` if it is below :data:`MIN_OPSET`."""
    version = model.opset_imports.get("", model.graph.opset_imports.get("", 0))
    if version < MIN_OPSET:
        raise UnsupportedModelError(
            f"model uses ONNX opset {version}; QDQ quantization needs opset >= {MIN_OPSET} "
            "(per-channel DequantizeLinear)",
            "re-export the model with opset 17 or newer (`qdeploy export --opset 17`)",
        )
    return version


def _prepared(model: ir.Model, config: QuantConfig | None = None,
              qk_means: Mapping[str, QKMeans] | None = None) -> tuple[ir.Model, dict[str, str]]:
    """A named, topologically sorted copy of ``model`` (what selection and rewriting both see).

    With ``config.shift_qk`` the attention q/k are shifted here (exact in float), because the shifted
    tensors are what gets calibrated and quantized: selection must see them. With
    ``convtranspose_as_conv`` / ``integer_region`` the exact rewrites of ``exact_rewrites`` run here, so
    the new convs are selected like any other. Also returns the *range aliases*: new tensors that take a
    calibrated range from an original one (a sub-pixel conv's phases from its ConvTranspose's output).
    """
    check_opset(model)
    model = model.clone()
    for pass_cls in PREPARE_PIPELINE:
        pass_cls()(model)
    if config is not None and config.rotate_inputs:  # before shift_qk, which hides the attentions it rewrote
        RotateLinearInputsPass(select=config.node_filter.matches)(model)
        RotateAttentionValuesPass(select=config.node_filter.matches)(model)  # the quantized attentions
        CleanupGraphPass()(model)
    if config is not None and config.shift_qk:
        _shift_qk(model, qk_means)
    aliases: dict[str, str] = {}
    if config is not None and config.convtranspose_as_conv:
        rewrite = ConvTransposeToConvPass()
        if rewrite(model).modified:
            aliases.update(rewrite.aliases)
            CleanupGraphPass()(model)
    if config is not None and config.integer_region:
        UniformPReluToLeakyReluPass()(model)
    return model, aliases


def _shift_qk(model: ir.Model, qk_means: Mapping[str, QKMeans] | None) -> None:
    shift = ShiftQKPass(qk_means or {})
    shift(model)
    if shift.missing:
        missing = shift.missing
        shown = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
        raise CalibrationError(f"shift_qk: no q/k means for {len(missing)} attention block(s): {shown}",
                               "collect them on this model (qdeploy.calib.attention_stats.collect_qk_means) "
                               "and pass qk_means=..., or set shift_qk=False")


def calibration_model(model: ir.Model, config: QuantConfig,
                      qk_means: Mapping[str, QKMeans] | None = None) -> ir.Model:
    """The float model to run for calibration: ``model``, or with ``config.shift_qk`` its shifted copy.

    Why: the shifted q/k (``q - mu_q``) are new tensors whose ranges an observer must see; the copy
    computes the same outputs as ``model`` (up to float rounding), so collecting on it is sound.
    """
    return _prepared(model, config, qk_means)[0] if config.shift_qk or config.rotate_inputs else model


def tensors_to_calibrate(model: ir.Model, config: QuantConfig,
                         qk_means: Mapping[str, QKMeans] | None = None) -> list[str]:
    """Activation tensors whose ranges :func:`quantize` needs, in topological order.

    These are the run-time inputs of the quantized ops and, for configs with ``quantize_outputs`` (ORT),
    their outputs (the Relu output where a Relu follows and activations are asymmetric). With
    ``config.shift_qk`` they are named in :func:`calibration_model` (the shifted q/k among them). Tensors
    made by ``convtranspose_as_conv`` are listed under the original tensor whose range they take.
    """
    prepared, aliases = _prepared(model, config, qk_means)
    return list(dict.fromkeys(aliases.get(n, n) for n in _placement(prepared, config).names))


def quantize(model: ir.Model, ranges: Mapping[str, TensorRange], config: QuantConfig,
             qk_means: Mapping[str, QKMeans] | None = None) -> ir.Model:
    """Return a new QDQ model; ``model`` is not modified.

    ``qk_means`` (used only with ``config.shift_qk``): per-attention-block q/k means from
    ``qdeploy.calib.attention_stats.collect_qk_means``; ``ranges`` must then come from
    :func:`calibration_model`.

    Raises:
        UnsupportedModelError: opset below 13.
        CalibrationError: a needed range is missing or not finite (the message names the tensors), or
            ``shift_qk`` without means for every attention block.
    """
    qmodel, aliases = _prepared(model, config, qk_means)
    placement = _placement(qmodel, config)
    if aliases:
        ranges = {**ranges, **{new: ranges[old] for new, old in aliases.items() if old in ranges}}
    params = _activation_params(placement.names, ranges, config)
    if config.shift_one_sided:
        params = _shifted_params(qmodel, placement.names, ranges, config)
    if placement.region is not None:
        params.update({name: activation_qparams(lo, hi, config.activation, config.activation_dtype)
                       for name, (lo, hi) in placement.region.fixed.items()})
    for pass_cls in QUANTIZE_PIPELINE:
        instance = _instantiate(pass_cls, qmodel.graph, params, config, placement)
        if instance is not None:
            instance(qmodel)
    _runtime_rewrites(qmodel, config)
    qmodel.metadata_props[METADATA_KEY] = json.dumps(config.to_dict(), sort_keys=True)
    return qmodel


@dataclass(frozen=True)
class _Placement:
    """Where Q/DQ go in a prepared graph: the layers (``node_filter``), the calibrated tensors, the region."""

    node_filter: NodeFilter
    names: list[str]
    region: RegionPlan | None = None


def _placement(model: ir.Model, config: QuantConfig) -> _Placement:
    """The layers and tensors ``config`` quantizes in the prepared ``model``.

    ``float_pooled_convs`` removes convs on pooled tensors from the layer filter (by exact node name), so
    every pass that reads the filter (weights, biases, activation selection) leaves them float alike.
    ``integer_region`` adds the region's tensors and drops the pass-through aliases (they reuse a grid).
    """
    graph, node_filter = model.graph, config.node_filter
    shapes = inferred_shapes(model) if config.float_pooled_convs or config.integer_region else None
    if config.rotate_inputs or config.smooth_alpha:  # the inserted rotations are float ops, not layers
        rotations = tuple(f"^{re.escape(n.name)}$" for n in graph if is_rotation(n))
        node_filter = dataclasses.replace(node_filter, exclude_nodes=(*node_filter.exclude_nodes, *rotations))
    if config.float_pooled_convs:
        pooled = pooled_convs(graph, node_filter.matches, shapes)
        if pooled:
            exact = tuple(f"^{re.escape(name)}$" for name in pooled)
            node_filter = dataclasses.replace(node_filter, exclude_nodes=(*node_filter.exclude_nodes, *exact))
    names = activation_tensors(graph, node_filter, config.quantize_outputs, config.fold_relu)
    if not config.integer_region:
        return _Placement(node_filter, names)
    region = plan_integer_region(graph, node_filter.matches, shapes)
    wanted = {n for n in names if n not in region.aliases} | set(region.tensors)
    position = {out.name: i for i, node in enumerate(graph) for out in node.outputs}
    return _Placement(node_filter, sorted(wanted, key=lambda n: (position.get(n, -1), n)), region)


def _runtime_rewrites(qmodel: ir.Model, config: QuantConfig) -> None:
    """Rewrites of the finished QDQ graph for the target runtime's kernels (off unless the config asks).

    They run after the pipeline because both read its result: the int8 weight codes and bias DQs
    (``avoid_pair_saturation`` rescales both), and the Q/DQ pairs around convs (``full_integer``).
    """
    if config.avoid_pair_saturation:
        AvoidPairSaturationPass()(qmodel)
    if config.full_integer:
        IntegerTailPass(config.activation_dtype)(qmodel)
        CleanupGraphPass()(qmodel)


def _activation_params(names: list[str], ranges: Mapping[str, TensorRange], config: QuantConfig
                       ) -> dict[str, QParams]:
    missing = [n for n in names if n not in ranges]
    if missing:
        shown = ", ".join(missing[:10]) + (f" (+{len(missing) - 10} more)" if len(missing) > 10 else "")
        raise CalibrationError(f"no calibrated range for {len(missing)} tensor(s): {shown}",
                               "calibrate the tensors listed by tensors_to_calibrate(model, config) "
                               "with the same config, or delete a stale calibration cache")
    params = {}
    for name in names:
        r = ranges[name]
        try:
            params[name] = activation_qparams(r.lo, r.hi, config.activation, config.activation_dtype)
        except ValueError as exc:
            raise CalibrationError(f"range of {name!r} is unusable: {exc}",
                                   "check the calibration data for NaN/Inf and recalibrate") from exc
    return params


def _shifted_params(qmodel: ir.Model, names: list[str], ranges: Mapping[str, TensorRange],
                    config: QuantConfig) -> dict[str, QParams]:
    """Shift one-sided tensors in place; the quantized tensors become the shifted ones, with their ranges.

    Runs before activation QDQ insertion because it creates the tensors (``t - c``, padded copies) that
    the Q/DQ pairs go on; the calibration ranges stay those of the original tensors, so caches still fit.
    The bias compensation ``c * sum(W)`` is computed from the weights as the later weight step rounds
    them (same quantizer, same axis), i.e. the weights the op really multiplies by.
    """
    shift = ShiftOneSidedActivationsPass({n: ranges[n] for n in names}, config.node_filter.matches,
                                         partial(_rounded_weight, config=config))
    shift(qmodel)
    names = activation_tensors(qmodel.graph, config.node_filter, config.quantize_outputs, config.fold_relu)
    return _activation_params(names, {**ranges, **shift.shifted_ranges}, config)


def _rounded_weight(node: ir.Node, array: np.ndarray, config: QuantConfig) -> np.ndarray:
    """``node``'s weight as :class:`QuantizeWeightsPass` will store it, dequantized again."""
    slot = weight_slot(node, config.per_channel)
    axis = slot[1] if slot is not None else None
    q, qp = _weight_quantizer(array.astype(np.float32), axis, config)
    return dequantize_array(q, qp)


def _instantiate(pass_cls: type[PassBase], graph: ir.Graph, params: dict[str, QParams],
                 config: QuantConfig, placement: _Placement) -> PassBase | None:
    """The pipeline step ``pass_cls`` configured from ``config`` (None when the config switches it off)."""
    region = placement.region
    if pass_cls in OPTIONAL_PASSES and not (
        (pass_cls is QuantizeBiasPass and config.quantize_bias)
        or (pass_cls is DedicateQDQPass and config.dedicated_qdq_pairs)
        or (pass_cls is SinkDQPass and region is not None and region.pass_through)
    ):
        return None
    if pass_cls is QuantizeWeightsPass:
        quantizer = partial(_weight_quantizer, config=config)
        return QuantizeWeightsPass(placement.node_filter, quantizer, config.per_channel)
    if pass_cls is InsertActivationQDQPass:
        consumers = None
        if config.dedicated_qdq_pairs and not config.quantize_outputs:
            consumers = {n.name for n in select_nodes(graph, placement.node_filter) if n.name}
        return InsertActivationQDQPass(params, consumers)
    if pass_cls is SinkDQPass:
        return SinkDQPass(region.pass_through)  # type: ignore[union-attr]
    if pass_cls is QuantizeBiasPass:
        return QuantizeBiasPass(placement.node_filter, quantize_bias)
    return pass_cls()


def _weight_quantizer(array: Any, axis: int | None, config: QuantConfig) -> tuple[Any, QParams]:
    return quantize_weight(array, axis, config.effective_weight_bits, config.weight_symmetric,
                           config.weight_dtype, config.weight_clip)


def _from_dq(value: ir.Value | None) -> bool:
    producer = value.producer() if value is not None else None
    return producer is not None and producer.op_type == "DequantizeLinear" and producer.domain == ""


def quantization_summary(qmodel: ir.Model) -> dict[str, Any]:
    """Counts that say what a QDQ model actually quantized.

    Keys: ``quantized_nodes`` (op type -> count of Conv/ConvTranspose/MatMul/Gemm nodes whose two main
    inputs both come from a DequantizeLinear), ``qdq_pairs`` (Q nodes feeding a DQ), ``weights_quantized``
    (DQ of a constant int8/uint8 tensor), ``biases_quantized`` (DQ of a constant int32 tensor),
    ``float_nodes`` (op type -> count of every other non-QDQ node, including ones that merely read a
    dequantized tensor, e.g. a Sigmoid) and ``float_nodes_total``.
    """
    quantized: Counter[str] = Counter()
    floating: Counter[str] = Counter()
    pairs = weights = biases = 0
    for node in qmodel.graph:
        if node.domain == "" and node.op_type == "QuantizeLinear":
            pairs += any(c.op_type == "DequantizeLinear" for c in node.outputs[0].consumers())
        elif node.domain == "" and node.op_type == "DequantizeLinear":
            array = constant_array(node.inputs[0])
            if array is not None:
                biases += array.dtype.name == "int32"
                weights += array.dtype.name != "int32"
        elif (node.op_type in QUANTIZABLE_OP_TYPES and len(node.inputs) >= 2
              and _from_dq(node.inputs[0]) and _from_dq(node.inputs[1])):
            quantized[node.op_type] += 1
        else:
            floating[node.op_type] += 1
    return {
        "quantized_nodes": dict(sorted(quantized.items())),
        "qdq_pairs": pairs,
        "weights_quantized": weights,
        "biases_quantized": biases,
        "float_nodes": dict(sorted(floating.items())),
        "float_nodes_total": sum(floating.values()),
    }
