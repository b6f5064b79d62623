"""Channel smoothing of Linear inputs before low-bit quantization (config ``smooth_alpha``), data-driven.

A per-tensor activation grid fails when a Linear's input channels sit at very different offsets and
widths (NGswin's post-norm residual stream: one channel's maximum is 100x another's). From each input
channel's calibrated range ``[lo_j, hi_j]`` and the weight row's largest magnitude ``w_j``:

- shift ``z_j`` = the channel's mean centres it (folded into the bias: ``b + z W``; the mean, not the
  mid-range, so one rare spike does not move the bulk of the channel away from zero);
- scale ``s_j = a_j^alpha / w_j^(1 - alpha)`` with ``a_j = max(hi_j - z_j, z_j - lo_j)`` moves width from the
  activation into the weight row (SmoothQuant's migration strength ``alpha``; normalised to geometric
  mean 1), applied as ``(x - z) / s`` and ``diag(s) W``;

then, with ``rotate_inputs``, the randomized Hadamard rotation of
:mod:`qdeploy.graph.passes.rotate_inputs`. Everything is exact in float; the new ``Mul``/``MatMul`` and
``Add`` per Linear run in float. The pipeline rewrites the float model once, before calibrating, so
observers, verification and refinement all see the smoothed tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import onnx_ir as ir

from qdeploy.calib.channel_stats import ChannelStats
from qdeploy.graph.passes import PREPARE_PIPELINE, CleanupGraphPass
from qdeploy.graph.passes.rotate_inputs import ChannelAffine, RotateLinearInputsPass, linear_weight
from qdeploy.quant.config import QuantConfig

__all__ = ["affine_from_json", "affine_to_json", "channel_affine", "prepared_for_smoothing", "smooth_for_calibration",
           "smooth_inputs", "smoothed_model"]

_EPS = 1e-5


def prepared_for_smoothing(model: ir.Model) -> ir.Model:
    """A named, sorted copy of ``model`` (what ``quantize`` sees), so tensor names agree."""
    model = model.clone()
    for pass_cls in PREPARE_PIPELINE:
        pass_cls()(model)
    return model


def smooth_inputs(model: ir.Model, config: QuantConfig) -> dict[str, np.ndarray]:
    """``{input tensor name: weight row maxima [K]}`` for every Linear that ``config`` quantizes."""
    found: dict[str, np.ndarray] = {}
    for node in model.graph:
        weight = linear_weight(node)
        if weight is None or not config.node_filter.matches(node):
            continue
        w, trans_b = weight
        rows = np.abs(w).max(0 if trans_b else 1)
        name = node.inputs[0].name or ""
        found[name] = np.maximum(found[name], rows) if name in found else rows
    return found


def channel_affine(stats: Mapping[str, ChannelStats], weight_rows: Mapping[str, np.ndarray],
                   alpha: float) -> dict[str, ChannelAffine]:
    """Shift and scale per input channel from calibrated channel statistics and weight row maxima."""
    out: dict[str, ChannelAffine] = {}
    for name, st in stats.items():
        shift = st.mean
        width = np.maximum(np.maximum(st.hi - shift, shift - st.lo), _EPS)
        scale = width ** alpha / np.maximum(weight_rows[name], _EPS) ** (1 - alpha)
        scale = scale / np.exp(np.mean(np.log(scale)))
        out[name] = ChannelAffine(shift=shift.astype(np.float32), scale=scale.astype(np.float32))
    return out


def smoothed_model(model: ir.Model, config: QuantConfig, affine: Mapping[str, ChannelAffine]) -> ir.Model:
    """A copy of the (prepared) ``model`` with the shift/scale (and rotation) applied; exact in float."""
    model = model.clone()
    RotateLinearInputsPass(select=config.node_filter.matches, affine=affine, rotate=config.rotate_inputs)(model)
    CleanupGraphPass()(model)
    return model


def affine_to_json(affine: Mapping[str, ChannelAffine]) -> dict[str, Any]:
    """JSON form for the calibration cache (``extra["smooth"]``): reuse needs the same transform."""
    return {name: {"shift": a.shift.tolist(), "scale": a.scale.tolist()} for name, a in affine.items()}


def affine_from_json(data: Mapping[str, Any]) -> dict[str, ChannelAffine]:
    """Inverse of :func:`affine_to_json`."""
    return {name: ChannelAffine(shift=np.asarray(v["shift"], np.float32), scale=np.asarray(v["scale"], np.float32))
            for name, v in data.items()}


def smooth_for_calibration(model: ir.Model, config: QuantConfig, stored: Mapping[str, Any] | None,
                           collect: Callable[[ir.Model, list[str]], Mapping[str, ChannelStats]],
                           ) -> tuple[ir.Model, dict[str, ChannelAffine]]:
    """The smoothed float model to calibrate and quantize, and the transform (for the cache).

    ``stored`` is a reused cache's ``extra["smooth"]`` (the ranges were calibrated for exactly that
    transform); otherwise ``collect(prepared model, tensor names)`` streams the calibration data once.
    """
    prepared = prepared_for_smoothing(model)
    rows = smooth_inputs(prepared, config)
    if stored is not None:
        affine = affine_from_json(stored)
    else:
        affine = channel_affine(collect(prepared, list(rows)), rows, config.smooth_alpha)
    return smoothed_model(prepared, config, affine), affine
