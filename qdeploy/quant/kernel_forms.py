"""Faster kernel forms of a finished QDQ model, tried by ``auto``'s check and kept only when they pass it.

Why: on x86 CPUs without VNNI (this project's AVX2 machine and CI), ``ort-cpu-int8`` stores weights as
symmetric uint8 so that ONNX Runtime takes its u8u8 kernels, which never saturate but ran no faster than
float Conv: our INT8/FP32 latency was 0.97-1.46 on the zoo's SR nets. Group-1 convs with int8 weights made
pair-safe (:class:`qdeploy.graph.passes.pair_saturation.AvoidPairSaturationPass`) take the u8s8 kernels
and ran at 0.62-0.90 of float time (ABPN x3, PAN x3, RFDN-ESA x4; 1x3x256x256, 1 thread, interleaved)
for -0.01 to +0.002 dB Set5 (IMDN x2: -0.04 dB). The pair fix changes numbers, so it is never applied
blindly: ``auto`` measures the result on its held-out check and keeps it only if the bar is still met.
"""

from __future__ import annotations

from typing import Any

import onnx_ir as ir

__all__ = ["FORM_NAME", "faster_form_for", "pair_safe_int8_convs", "reapply_faster_form"]

#: How the form is named in records and summaries.
FORM_NAME = "int8 conv weights, pair-safe (u8s8 kernels)"


def pair_safe_int8_convs(model: ir.Model) -> tuple[ir.Model, dict[str, Any]] | None:
    """A copy of ``model`` whose group-1 Conv weights are int8 and pair-safe; None when no conv changes."""
    from qdeploy.graph.passes.pair_saturation import AvoidPairSaturationPass
    from qdeploy.graph.passes.signed_weights import SignedConvWeightsPass

    out = model.clone()
    signed = SignedConvWeightsPass()
    signed(out)
    if signed.convs_changed == 0:
        return None
    pairs = AvoidPairSaturationPass()
    pairs(out)
    return out, {"form": FORM_NAME, "convs": signed.convs_changed, "channels_rescaled": pairs.pairs_changed}


def faster_form_for(quant: Any) -> Any:
    """The faster form worth trying for preset ``quant`` (a ``QuantConfig``), or None.

    Only ORT CPU placements with symmetric uint8 weights (the non-VNNI variant of ``ort-cpu-int8``): with
    VNNI the weights are already int8, and TensorRT has no such kernels.
    """
    if quant.name.startswith("ort-cpu") and quant.weight_dtype == "uint8" and quant.weight_symmetric:
        return pair_safe_int8_convs
    return None


def reapply_faster_form(model: ir.Model, verify_record: dict[str, Any] | None) -> ir.Model:
    """Rebuild what a cached check kept (``extra["verify"]["faster"]``), so ``--cache`` reproduces the model."""
    faster = (verify_record or {}).get("faster") or {}
    if not faster.get("kept") or faster.get("form") != FORM_NAME:
        return model
    made = pair_safe_int8_convs(model)
    return model if made is None else made[0]
