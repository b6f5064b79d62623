"""Steps of ``calibrate_model`` that prepare or refine around calibration (kept out of ``qdeploy.pipeline``).

Each is a plain function of the model and the :class:`qdeploy.pipeline.CalibrateConfig`: the input specs,
the attention q/k means (``shift_qk``), the channel-smoothed model (``smooth_alpha``), and refinement.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx_ir as ir

from qdeploy.errors import InputError

if TYPE_CHECKING:
    from qdeploy.pipeline import CalibrateConfig

__all__ = ["check_refinable", "input_specs", "qk_means", "run_refinement", "smoothed"]


def input_specs(model: ir.Model) -> list[Any]:
    """The model's run-time inputs as :class:`TensorSpec` s, read from the graph (no ORT session: opening
    one only to read them cost 1-4 s per call on SwinIR, and calibrate asked up to five times)."""
    from qdeploy.types import TensorSpec

    init = set(model.graph.initializers)
    specs = []
    for v in model.graph.inputs:
        if v.name in init:
            continue
        dims = tuple(d if isinstance(d, int) else (str(d) if d is not None and str(d) else None)
                     for d in (v.shape or ()))
        dtype = v.dtype.numpy().name if v.dtype is not None else "float32"
        specs.append(TensorSpec(v.name, dims, dtype))
    return specs


def qk_means(model: ir.Model, config: CalibrateConfig) -> dict[str, Any]:
    """Per-head attention q/k means for ``shift_qk``: from the reused cache, else one streamed data pass.

    Why the cache holds them: the shifted q/k ranges were calibrated *for* these means, so reusing the
    ranges is only sound together with the same means.
    """
    from qdeploy.calib.attention_stats import collect_qk_means, qk_means_from_json

    if config.cache is not None:
        from qdeploy.calib.cache import load_cache

        stored = load_cache(config.cache).extra.get("shift_qk")
        if stored is None:
            raise InputError(f"--cache {config.cache} holds no attention q/k means (made without shift_qk)",
                             "recalibrate with --data, or quantize without shift_qk")
        return qk_means_from_json(stored)
    from qdeploy.calib.collect import CollectConfig
    from qdeploy.calib.data import iter_samples

    specs = input_specs(model)
    return collect_qk_means(model, lambda: iter_samples(config.data, specs),
                            CollectConfig(config.batch_size, config.threads))


def smoothed(model: ir.Model, config: CalibrateConfig, quant: Any, cached: Any) -> tuple[ir.Model, Any]:
    """The channel-smoothed model (``smooth_alpha``): transform from the reused cache, else from the data."""
    from qdeploy.calib.channel_stats import collect_channel_stats
    from qdeploy.calib.collect import CollectConfig
    from qdeploy.calib.data import iter_samples
    from qdeploy.quant.smoothing import smooth_for_calibration

    stored = cached.extra.get("smooth") if cached is not None else None
    if cached is not None and stored is None:
        raise InputError(f"--cache {config.cache} holds no channel smoothing (made without smooth_alpha)",
                         "recalibrate with --data, or quantize without --smooth")
    specs = input_specs(model)

    def collect(prepared: ir.Model, names: list[str]) -> Any:
        return collect_channel_stats(prepared, names, lambda: iter_samples(config.data, specs),
                                     CollectConfig(config.batch_size, config.threads))

    return smooth_for_calibration(model, quant, stored, collect)


def check_refinable(model: ir.Model) -> None:
    """Refinement runs the graph in torch: an op it lacks fails here, before any calibration work."""
    from qdeploy.errors import UnsupportedModelError
    from qdeploy.torchexec.interpreter import missing_ops

    missing = missing_ops(model)
    if missing:
        raise UnsupportedModelError(f"--refine cannot run this model: the torch executor has no {', '.join(missing)}",
                                    "calibrate without --refine, or export the model so that it avoids these ops")


def run_refinement(model: ir.Model, qmodel: ir.Model, config: CalibrateConfig) -> tuple[ir.Model, dict[str, Any]]:
    """Run ``config.refine`` on the calibration samples (all of them, held in memory: refinement iterates)."""
    from qdeploy.calib.data import iter_samples
    from qdeploy.refine import refine

    specs = input_specs(model)
    samples = list(iter_samples(config.data, specs))
    options = dict(config.refine_options)
    default = "checkpoint" not in options  # resumable unless told where: next to the output, gone once it is written
    if default:
        options["checkpoint"] = str(Path(config.output).with_name(Path(config.output).stem + ".dqc-checkpoint.pt"))
    refined, report = refine(config.refine, model, qmodel, samples, options)
    if default:
        Path(options["checkpoint"]).unlink(missing_ok=True)
    return refined, report
