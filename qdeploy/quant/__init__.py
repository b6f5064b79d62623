"""Quantization: configs and presets, scale math, and the ``quantize`` entry point."""

from __future__ import annotations

from qdeploy.quant.config import QuantConfig
from qdeploy.quant.params import QParams, activation_qparams, quantize_weight
from qdeploy.quant.presets import PRESETS, cpu_has_vnni, get_preset, preset_names
from qdeploy.quant.quantize import quantization_summary, quantize, tensors_to_calibrate

__all__ = [
    "PRESETS",
    "QParams",
    "QuantConfig",
    "activation_qparams",
    "cpu_has_vnni",
    "get_preset",
    "preset_names",
    "quantization_summary",
    "quantize",
    "quantize_weight",
    "tensors_to_calibrate",
]
