"""Refinement of a calibrated QDQ model's quantization parameters (after ``quantize``).

``REFINERS`` maps a name (``CalibrateConfig.refine``) to ``(float_model, qdq_model, batches, options) ->
(refined model, report dict)``; ``options`` are the refiner's config fields. Importing this package does
not import torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx_ir as ir

from qdeploy.errors import InputError
from qdeploy.registry import Registry

__all__ = ["REFINERS", "Refiner", "refine"]

Refiner = Callable[[ir.Model, ir.Model, Sequence[Mapping[str, np.ndarray]], Mapping[str, Any]],
                   "tuple[ir.Model, dict[str, Any]]"]

#: Refinement methods by name.
REFINERS: Registry[Refiner] = Registry("refinement method")


@REFINERS.register("dqc")
def _dqc(float_model: ir.Model, qdq_model: ir.Model, batches: Sequence[Mapping[str, np.ndarray]],
         options: Mapping[str, Any]) -> tuple[ir.Model, dict[str, Any]]:
    from qdeploy.refine.dqc import DQCConfig, refine_dqc

    options = dict(options)
    show_progress = bool(options.pop("show_progress", True))
    progress = options.pop("progress", None)  # (done, total) callback: the caller's display, not a config field
    try:
        config = DQCConfig(**options)
    except (TypeError, ValueError) as exc:
        raise InputError(f"invalid DQC option: {exc}",
                         "valid options: iterations, lr, batch_size, feature_tensors, feature_weight, seed, "
                         "device, learn_zero_points, schedule, checkpoint, checkpoint_every") from None
    refined, report = refine_dqc(float_model, qdq_model, batches, config, show_progress, progress)
    return refined, {"method": "dqc", **report.to_dict()}


def refine(name: str, float_model: ir.Model, qdq_model: ir.Model, batches: Sequence[Mapping[str, np.ndarray]],
           options: Mapping[str, Any] | None = None) -> tuple[ir.Model, dict[str, Any]]:
    """Run refinement method ``name`` (see :data:`REFINERS`); unknown names raise :class:`InputError`."""
    return REFINERS.get(name)(float_model, qdq_model, batches, options or {})
