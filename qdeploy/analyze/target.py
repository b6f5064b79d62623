"""``qdeploy calibrate --target-loss / --target-sqnr``: calibrate at the lowest bits, then repair to a target.

The calibrated low-bit model is handed to :func:`qdeploy.analyze.search.search_precision` together with
held-out inputs and, for a task target, the SR Y-PSNR metric on them. Three choices make the result
trustworthy rather than flattering:

- the accuracy is measured on *held-out* inputs (``TargetConfig.data``), never on the calibration
  samples when a task metric is asked for (an SQNR target may fall back to them, and says so);
- a tensor raised to 8 bits takes bounds calibrated *for the 8-bit grid* (one more observer pass):
  a 4-bit observer clips hard for 16 levels, and re-using its bound at 8 bits would waste the raise;
- the plan (precision map, 8-bit bounds, the target and what was reached) goes into the calibration
  cache, so the map can be edited by hand and re-applied with ``qdeploy calibrate --cache``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from qdeploy.analyze.search import PrecisionPlan, PrecisionTarget, search_precision
from qdeploy.analyze.sensitivity import AnalyzeConfig, Evaluator, SensitivityResult, analyze_sensitivity
from qdeploy.errors import InputError

__all__ = ["HeldOut", "TargetConfig", "heldout_inputs", "meet_target", "plan_record"]


@dataclass(frozen=True)
class TargetConfig:
    """An accuracy target for ``calibrate`` and the held-out inputs it is measured on.

    Attributes:
        target: output SQNR vs float (``kind="sqnr"``) or task-score loss (``kind="loss"``, dB of PSNR).
        data: held-out inputs. With ``sr_scale``: a folder of HR images (LR crops are made from them by
            MATLAB bicubic). Without: model inputs read like calibration data. None: the ``--holdout``
            part of the calibration data, or without a holdout the calibration inputs themselves (SQNR
            targets only; optimistic, reported as such).
        sr_scale: SR upscaling factor; turns on the Y-PSNR task metric (required by ``kind="loss"``).
        num_samples: held-out samples (each candidate map runs all of them).
        crop: LR crop size (pixels) of the held-out samples; None: whole images (SQNR targets only).
        seed: seed of the crop choice (differs from calibration's default 0 on purpose).
    """

    target: PrecisionTarget
    data: Path | None = None
    sr_scale: int | None = None
    num_samples: int = 16
    crop: int | None = 48
    seed: int = 1

    def __post_init__(self) -> None:
        if self.target.kind == "loss" and self.sr_scale is None:
            raise InputError(
                "--target-loss needs a task metric: SR Y-PSNR on held-out images",
                "add --target-scale S (with --target-data HR_IMAGE_DIR or --holdout F), or use --target-sqnr DB",
            )
        if self.sr_scale is not None and self.sr_scale < 1:
            raise ValueError(f"sr_scale must be >= 1, got {self.sr_scale}")
        if self.num_samples < 1 or (self.crop is not None and self.crop < 1):
            raise ValueError("num_samples and crop must be positive")


#: A float SR model scoring this far below bicubic on the held-out crops is being fed the wrong range
#: (measured: ABPN x3 fed 0..1 instead of 0..255 still scores 24.8 dB vs bicubic 25.7: its anchor path
#: degrades to nearest-neighbour upscaling, so the margin must be small).
SANITY_MARGIN_DB = 0.5


@dataclass(frozen=True)
class HeldOut:
    """The feeds a target is measured on, the task metric (or None) and a one-line description.

    ``baseline``: the task score of a trivial method on the same samples (bicubic for SR), to catch
    a float model that is fed the wrong pixel range before a search optimises garbage.
    """

    batches: list[dict[str, np.ndarray]]
    evaluator: Evaluator | None
    description: str
    baseline: float | None = None


def heldout_inputs(config: TargetConfig, calib: Any, input_names: Sequence[str], specs: Any) -> HeldOut:
    """Build the held-out feeds of ``config`` (``calib`` is the calibration ``DataConfig``)."""
    from qdeploy.calib.data import DataConfig, iter_samples

    split = config.data is None and calib.holdout > 0  # the held-out part of the calibration folder
    if config.sr_scale is not None:
        return _sr_heldout(config, calib, input_names, split)
    source = config.data or calib.source
    images = Path(source).is_dir() and not any(p.suffix in (".npy", ".npz") for p in Path(source).iterdir())
    crop = config.crop if images and not _static_hw(specs) else None
    data = DataConfig(source=source, value_range=calib.value_range, color=calib.color, crop=crop,
                      num_samples=config.num_samples, seed=config.seed, layout=calib.layout,
                      holdout=calib.holdout if split else 0.0, part="heldout")
    batches = list(iter_samples(data, specs))
    not_held = (f"the calibration inputs {source} (not held out: the default holds out a fifth only of image "
                "folders with 10+ images; --holdout 0.2 to ask)")
    where = (f"held-out inputs {source}" if config.data else f"the --holdout part of {source}" if split else not_held)
    return HeldOut(batches, None, f"output SQNR on {len(batches)} samples of {where}")


def _static_hw(specs: Any) -> bool:
    """Whether the (first) input has fixed spatial dims: images are then centre-cropped to them, not cropped."""
    shape = specs[0].shape if specs else ()
    return len(shape) == 4 and all(isinstance(d, int) for d in shape[2:])


def _sr_heldout(config: TargetConfig, calib: Any, input_names: Sequence[str], split: bool) -> HeldOut:
    """LR/HR crop pairs of held-out HR images and the Y-PSNR metric on them."""
    from qdeploy.calib.data import part_files
    from qdeploy.sr.heldout import image_files, psnr_evaluator, sr_crops

    if config.data is not None:
        files, where = image_files(config.data), str(config.data)
    elif split and Path(calib.source).is_dir():
        files = part_files(dataclasses.replace(calib, part="heldout"))
        where = f"the --holdout part of {calib.source}"
    else:
        raise InputError("an SR task target needs held-out HR images",
                         "add --target-data HR_IMAGE_DIR, or --holdout 0.25 to split the --data image folder")
    if not files:
        raise InputError(f"no held-out images in {where}", "use more images or a larger --holdout")
    from qdeploy.sr.imresize import imresize

    gain = 255.0 if calib.value_range == "0-255" else 1.0
    color = "y" if calib.color in ("y", "gray") else "rgb"  # Y-channel models: Y in, Y out, scored on Y
    lr, hr = sr_crops(files, config.num_samples, config.crop, config.sr_scale, gain, config.seed, color)
    batches = [{input_names[0]: lr[i:i + 1]} for i in range(len(lr))]
    evaluator = psnr_evaluator(hr, config.sr_scale, gain, color)
    lr8 = np.round(lr * (255.0 / gain)).astype(np.uint8).transpose(0, 2, 3, 1)
    bicubic = [{"sr": imresize(x, config.sr_scale).transpose(2, 0, 1)[None] * np.float32(gain / 255.0)}
               for x in lr8]
    return HeldOut(batches, evaluator,
                   f"Y-PSNR on {len(lr)} {config.crop}px crops of {len(files)} held-out images ({where})",
                   evaluator(bicubic))


def meet_target(
    float_model: ir.Model,
    qdq_model: ir.Model,
    ranges: Mapping[str, Any],
    raise_ranges: Mapping[str, Any],
    heldout: HeldOut,
    target: PrecisionTarget,
    fusion_target: str,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[SensitivityResult, PrecisionPlan]:
    """Rank the tensors of ``qdq_model`` on ``heldout``, then search the precision map meeting ``target``.

    ``ranges`` are the low-bit calibration ranges (drawn in the report); ``raise_ranges`` the bounds a
    raised tensor is re-quantized with (calibrated on its new grid). Returns the analysis (for a report)
    and the plan, whose ``model`` is the repaired QDQ model.
    """
    config = AnalyzeConfig(threads=threads or 1)
    _check_float_score(float_model, heldout, config)  # before the analysis: minutes on a transformer
    analysis = analyze_sensitivity(float_model, qdq_model, heldout.batches, heldout.evaluator, dict(ranges),
                                   config, progress=progress)
    plan = search_precision(float_model, qdq_model, heldout.batches, target, heldout.evaluator, raise_ranges,
                            analysis, config, fusion_target)
    return analysis, dataclasses.replace(plan, measured_on=heldout.description)


def _check_float_score(float_model: ir.Model, heldout: HeldOut, config: AnalyzeConfig) -> None:
    """Refuse a float model that scores below the trivial baseline: it is fed the wrong pixel range."""
    if heldout.baseline is None or heldout.evaluator is None:
        return
    from qdeploy.backends import SessionOptions, get_backend

    session = get_backend("ort-cpu").open(float_model, SessionOptions(threads=config.threads))
    score = heldout.evaluator([session.run(b) for b in heldout.batches])
    if score < heldout.baseline - SANITY_MARGIN_DB:
        raise InputError(
            f"the float model scores {score:.2f} dB on the held-out crops, bicubic {heldout.baseline:.2f} dB: "
            "it is probably fed the wrong pixel range",
            "pass --range 0-255 for models that take 0..255 pixels (0-1 otherwise); if the model really is "
            "worse than bicubic, target --target-sqnr instead",
        )


def plan_record(plan: PrecisionPlan, heldout: HeldOut) -> dict[str, Any]:
    """What the cache keeps about a search: the target, where it was measured, what was reached."""
    record = dataclasses.asdict(plan.target) | {"text": str(plan.target), "met": plan.met,
                                                "measured_on": heldout.description, "sqnr_db": plan.sqnr_db}
    if plan.score is not None and plan.float_score is not None:
        record |= {"score": plan.score, "float_score": plan.float_score, "loss_db": plan.float_score - plan.score}
    return record | {"counts": dict(plan.counts), "size_bytes": plan.size_bytes,
                     "base_size_bytes": plan.base_size_bytes, "float_size_bytes": plan.float_size_bytes}


def detect_sr_scale(model: ir.Model, sample: Mapping[str, np.ndarray], threads: int | None = None) -> int | None:
    """The upscaling factor of a super-resolution model, read from one run; None for other models.

    SR here means: one 4-D input and one 4-D output with the same channels, the output's height and width
    the same integer multiple (>= 2) of the input's. Why detect: the default calibration verifies a model
    on its task metric when it can tell the task, and a user should not have to say "this is x3 SR".
    """
    from qdeploy.backends import SessionOptions, get_backend

    if len(sample) != 1:
        return None
    x = next(iter(sample.values()))
    session = get_backend("ort-cpu").open(model, SessionOptions(threads=threads))
    if len(session.outputs) != 1 or x.ndim != 4:
        return None
    y = next(iter(session.run(dict(sample)).values()))
    if y.ndim != 4 or y.shape[1] != x.shape[1] or y.shape[0] != x.shape[0]:
        return None
    sh, sw = y.shape[2] / x.shape[2], y.shape[3] / x.shape[3]
    return int(sh) if sh == sw and sh >= 2 and sh == int(sh) else None


def default_heldout(model: ir.Model, calib: Any, specs: Any, bar: Any, threads: int | None = None) -> HeldOut:
    """Held-out data for the default calibration's check (:mod:`qdeploy.analyze.verify`).

    An RGB super-resolution model calibrated on an image folder with a held-out part is checked on
    Y-PSNR of LR/HR crop pairs made from the held-out images; any other model on output SQNR over the
    held-out part of ``--data`` (or, without one, the calibration inputs: said in the description).
    """
    from qdeploy.analyze.search import PrecisionTarget
    from qdeploy.calib.data import iter_samples

    first = next(iter(iter_samples(calib, specs)))
    scale = detect_sr_scale(model, first, threads)
    names = [s.name for s in specs]
    folder = Path(calib.source).is_dir()
    if scale is not None and folder and calib.holdout > 0:
        config = TargetConfig(PrecisionTarget("loss", bar.sr_loss_db), sr_scale=scale, num_samples=32,
                              crop=calib.crop or 48)
        try:
            held = heldout_inputs(config, calib, names, specs)
            return dataclasses.replace(held, description=f"x{scale} SR {held.description}")
        except InputError:  # held-out images too small for LR crops: judge the output SQNR instead
            pass
    # the calibration's own crop (None: whole images, as calibration read them), so any image that
    # calibrated can also be checked
    config = TargetConfig(PrecisionTarget("sqnr", bar.sqnr_db), num_samples=32, crop=calib.crop)
    return heldout_inputs(config, calib, names, specs)
