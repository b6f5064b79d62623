"""Run SR models over a benchmark folder and score them with the standard protocol.

Why whole images at batch 1: published SR numbers are measured on full images, and tiling changes the
border behaviour of the network (and therefore the PSNR). Hence the models must accept any H/W
(``qdeploy export --dynamic-hw``). Every model sees the same uint8 LR inputs and its output is turned into
the uint8 image a user would save (clamped, scaled, rounded) before scoring, so the float reference and a
quantized model are compared exactly as they would be deployed. A bicubic row is always added: it needs no
model and checks the protocol itself (Set5 x3 gives 30.39 dB PSNR-Y in every SR paper).

Y-channel models (SRCNN, ESPCN, FSRCNN: one input channel) get the Y of the same LR image (BT.601 as in
MATLAB ``rgb2ycbcr``, the Y the metric uses) and their rounded Y output is scored directly; the RGB image
a user would save (``save_dir``, RGB PSNR) takes Cb/Cr from bicubic upscaling of the LR image.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx_ir as ir

from qdeploy.errors import InputError, UnsupportedModelError
from qdeploy.sr.color import merge_y_with_bicubic_chroma
from qdeploy.sr.dataset import SRPair, load_sr_dataset
from qdeploy.sr.imresize import imresize, modcrop
from qdeploy.sr.metrics import psnr_rgb, psnr_y, psnr_y_plane, ssim_y, ssim_y_plane, y_channel
from qdeploy.sr.report import ImageScore, ModelScore, SREvalReport

__all__ = ["ModelInput", "ProgressFn", "SREvalConfig", "evaluate_sr", "score_image", "score_y_image", "to_uint8"]

ModelInput = str | os.PathLike[str] | ir.Model | bytes
ProgressFn = Callable[[str, int, int], None]  # (row label, images done, images total)
_GRAPH_OPT = ("all", "basic", "extended", "disable")
_DYNAMIC_HINT = "re-export the model with `qdeploy export ... --dynamic-hw` so it accepts any image size"
_COLORS = ("rgb", "y")
_CHANNELS = {"rgb": 3, "y": 1}


@dataclass(frozen=True)
class SREvalConfig:
    """What to evaluate on and how.

    ``value_range``: 255 if the model takes and returns pixels in 0..255, 1 for 0..1 (a property of how
    the model was trained; the wrong one gives PSNR near 5 dB, not an error).
    ``color``: ``"rgb"``, ``"y"`` (Y-channel model) or None to follow each model's input channels (1 = Y).
    ``save_dir``: write each model's output images as ``save_dir/<label>/<image>.png``.
    """

    dataset: Path
    scale: int
    value_range: int = 255
    backend: str = "ort-cpu"
    threads: int | None = None
    rgb_psnr: bool = False
    max_images: int | None = None
    graph_optimization: str = "all"
    color: str | None = None
    save_dir: Path | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.scale, int) or self.scale < 1:
            raise ValueError(f"scale must be a positive integer, got {self.scale!r}")
        if self.value_range not in (1, 255):
            raise ValueError(f"value_range must be 255 or 1, got {self.value_range!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.max_images is not None and self.max_images < 1:
            raise ValueError(f"max_images must be >= 1, got {self.max_images}")
        if self.graph_optimization not in _GRAPH_OPT:
            raise ValueError(f"graph_optimization must be one of {_GRAPH_OPT}, "
                             f"got {self.graph_optimization!r}")
        if self.color is not None and self.color not in _COLORS:
            raise ValueError(f"color must be one of {_COLORS} or None, got {self.color!r}")


def to_uint8(out_chw: np.ndarray, value_range: int) -> np.ndarray:
    """A model's CHW float output as the uint8 HWC image a user would save: clamp, scale, round."""
    x = np.asarray(out_chw, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise InputError("the model produced NaN or Inf values", "check the model with `qdeploy profile`")
    x = np.clip(x, 0.0, float(value_range)) * (255.0 / value_range)
    return np.round(x).astype(np.uint8).transpose(1, 2, 0)


def _common_crop(sr: np.ndarray, hr: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """SR and modcropped HR cut to their common size, and a note saying so when they differed."""
    if sr.shape[:2] == hr.shape[:2]:
        return sr, hr, ""
    h, w = min(sr.shape[0], hr.shape[0]), min(sr.shape[1], hr.shape[1])
    note = f"cropped to {w}x{h} (SR {sr.shape[1]}x{sr.shape[0]}, modcropped HR {hr.shape[1]}x{hr.shape[0]})"
    return sr[:h, :w], hr[:h, :w], note


def score_image(name: str, sr: np.ndarray, hr: np.ndarray, scale: int, rgb: bool = False) -> ImageScore:
    """Score one uint8 SR image against its (uncropped) HR: modcrop, common-size crop, Y PSNR/SSIM."""
    sr, hr, note = _common_crop(sr, modcrop(hr, scale))
    return ImageScore(name, psnr_y(sr, hr, scale), ssim_y(sr, hr, scale),
                      psnr_rgb(sr, hr, 1) if rgb else None, note)


def score_y_image(name: str, sr_y: np.ndarray, hr: np.ndarray, scale: int,
                  sr_rgb: np.ndarray | None = None) -> ImageScore:
    """Score a Y-channel model's uint8 Y plane against the HR image's Y, like :func:`score_image`.

    ``sr_rgb`` (the Y plane merged with bicubic chroma) adds the RGB PSNR when given.
    """
    sr_y, hr, note = _common_crop(sr_y, modcrop(hr, scale))
    hr_y = y_channel(hr)
    rgb = None
    if sr_rgb is not None:
        rgb = psnr_rgb(sr_rgb[: hr.shape[0], : hr.shape[1]], hr, 1)
    return ImageScore(name, psnr_y_plane(sr_y, hr_y, scale), ssim_y_plane(sr_y, hr_y, scale), rgb, note)


def _labels(models: Sequence[ModelInput]) -> list[str]:
    """File names for paths (full paths if names clash), graph names or model1.. otherwise."""
    names = []
    for i, m in enumerate(models):
        if isinstance(m, ir.Model):
            names.append(m.graph.name or f"model{i + 1}")
        elif isinstance(m, bytes):
            names.append(f"model{i + 1}")
        else:
            names.append(Path(m).name)
    return [str(m) if names.count(n) > 1 and not isinstance(m, (ir.Model, bytes)) else n
            for n, m in zip(names, models)]


def _input_spec(session, label: str, pairs: list[SRPair], config: SREvalConfig) -> tuple[str, str, str]:
    """(input name, colour, note) of the model's one NCHW image input; raise with a fix when unusable."""
    if len(session.inputs) != 1 or len(session.inputs[0].shape) != 4:
        shapes = [f"{s.name}{s.shape}" for s in session.inputs]
        raise UnsupportedModelError(f"{label}: SR evaluation needs one NCHW image input, "
                                    f"the model has {shapes}",
                                    "export the SR network alone, with a single (1, 3, H, W) or (1, 1, H, W) input")
    spec = session.inputs[0]
    color, note = _color(label, spec.name, spec.shape[1], config.color)
    _, _, h, w = spec.shape
    static = [(axis, d) for axis, d in (("H", h), ("W", w)) if isinstance(d, int)]
    sizes = {p.lr.shape[:2] for p in pairs}
    if static and any((isinstance(h, int) and s[0] != h) or (isinstance(w, int) and s[1] != w) for s in sizes):
        raise InputError(f"{label}: input {spec.name!r} has a fixed size {spec.shape}, but the LR images "
                         f"have {len(sizes)} different sizes", _DYNAMIC_HINT)
    return spec.name, color, note


def _color(label: str, name: str, channels: object, wanted: str | None) -> tuple[str, str]:
    """The colour convention for a model with ``channels`` input channels, and a note when auto-detected.

    Why auto-detect: a 1-channel SR model is a Y model by the SR literature's convention, and feeding it
    anything else is impossible, so the only useful default is to say what was chosen.
    """
    if not isinstance(channels, int):
        return wanted or "rgb", ""
    if wanted is None:
        if channels == 1:
            return "y", f"{label}: 1-channel input, evaluated as a Y-channel model (--color y)"
        if channels == 3:
            return "rgb", ""
    elif channels == _CHANNELS[wanted]:
        return wanted, ""
    if channels == 1:
        raise InputError(f"{label}: input {name!r} has 1 channel, but --color {wanted} feeds 3 (RGB)",
                         "use --color y for a Y-channel model (or omit --color: 1-channel models are Y)")
    if channels == 3 and wanted == "y":
        raise InputError(f"{label}: input {name!r} has 3 channels, but --color y feeds 1 (the Y channel)",
                         "use --color rgb (or omit --color: 3-channel models are RGB)")
    raise UnsupportedModelError(f"{label}: input {name!r} has {channels} channels; SR evaluation feeds "
                                "RGB (3) or Y (1)", "export an RGB-in/RGB-out or Y-in/Y-out SR model")


def _lr_input(lr: np.ndarray, color: str, value_range: int) -> np.ndarray:
    """The NCHW float32 model input of one uint8 LR image: RGB, or its Y (0..255 scale) for Y models."""
    x = y_channel(lr)[:, :, None] if color == "y" else lr.astype(np.float64)
    x = x.transpose(2, 0, 1)[None]
    return (x / 255.0 if value_range == 1 else x).astype(np.float32)


def _run_model(model: ModelInput, label: str, pairs: list[SRPair], config: SREvalConfig,
               progress: ProgressFn | None) -> ModelScore:
    """Run one model on every LR image (whole image, batch 1) and score the uint8 outputs."""
    from qdeploy.backends import SessionOptions, get_backend

    options = SessionOptions(threads=config.threads, graph_optimization=config.graph_optimization)
    scores, seconds = [], 0.0
    with get_backend(config.backend).open(model, options) as session:
        name, color, note = _input_spec(session, label, pairs, config)
        for i, pair in enumerate(pairs):
            x = _lr_input(pair.lr, color, config.value_range)
            start = time.perf_counter()
            out = next(iter(session.run({name: x}).values()))
            seconds += time.perf_counter() - start
            image = _check_output(out, pair, config.scale, label, color)
            scores.append(_score_output(image, pair, color, label, config))
            if progress is not None:
                progress(label, i + 1, len(pairs))
    return dataclasses.replace(_summary(label, "model", scores, seconds), color=color, note=note)


def _score_output(image: np.ndarray, pair: SRPair, color: str, label: str, config: SREvalConfig) -> ImageScore:
    """Score one CHW model output as the uint8 image a user would keep (and save it when asked)."""
    sr = to_uint8(image, config.value_range)
    if color == "rgb":
        rgb = sr
        score = score_image(pair.name, sr, pair.hr, config.scale, config.rgb_psnr)
    else:
        need_rgb = config.rgb_psnr or config.save_dir is not None
        rgb = merge_y_with_bicubic_chroma(sr[:, :, 0], pair.lr, config.scale) if need_rgb else None
        score = score_y_image(pair.name, sr[:, :, 0], pair.hr, config.scale,
                              rgb if config.rgb_psnr else None)
    if config.save_dir is not None and rgb is not None:
        _save_png(Path(config.save_dir) / _safe(label) / f"{pair.name}.png", rgb)
    return score


def _safe(label: str) -> str:
    """A folder name for a row label (labels are file names, or full paths when names clash)."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in label).strip("._") or "model"


def _save_png(path: Path, rgb: np.ndarray) -> None:
    """Write an HxWx3 uint8 image atomically (a failed run never leaves a half-written PNG)."""
    from PIL import Image

    from qdeploy.artifacts import atomic_path

    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")


def _check_output(out: np.ndarray, pair: SRPair, scale: int, label: str, color: str = "rgb") -> np.ndarray:
    """The (C, H*S, W*S) output image; raise when the model is not an xS upscaler of its colour."""
    want = (_CHANNELS[color], pair.lr.shape[0] * scale, pair.lr.shape[1] * scale)
    if out.ndim != 4 or out.shape[0] != 1 or out.shape[1:] != want:
        got = tuple(out.shape)
        ratio = f" (x{got[-1] / pair.lr.shape[1]:g})" if out.ndim == 4 else ""
        lr_size = f"{pair.lr.shape[1]}x{pair.lr.shape[0]}"
        kind = "an RGB-in/RGB-out" if color == "rgb" else "a Y-in/Y-out"
        raise InputError(f"{label}: on {pair.name!r} (LR {lr_size}) the output is "
                         f"{got}{ratio}, expected (1, {want[0]}, {want[1]}, {want[2]}) for --scale {scale}",
                         f"pass the scale the model was trained for, and {kind} SR model")
    return out[0]


def _bicubic(pairs: list[SRPair], config: SREvalConfig, progress: ProgressFn | None) -> ModelScore:
    """The baseline row: MATLAB-bicubic ``imresize(lr, S)``, scored like an RGB model."""
    scores, start = [], time.perf_counter()
    for i, pair in enumerate(pairs):
        sr = imresize(pair.lr, float(config.scale))
        scores.append(score_image(pair.name, sr, pair.hr, config.scale, config.rgb_psnr))
        if config.save_dir is not None:
            _save_png(Path(config.save_dir) / "bicubic" / f"{pair.name}.png", sr)
        if progress is not None:
            progress("bicubic", i + 1, len(pairs))
    return _summary("bicubic", "bicubic", scores, time.perf_counter() - start)


def _summary(label: str, kind: str, scores: list[ImageScore], seconds: float) -> ModelScore:
    rgb = [s.psnr_rgb for s in scores if s.psnr_rgb is not None]
    return ModelScore(label, kind, float(np.mean([s.psnr_y for s in scores])),
                      float(np.mean([s.ssim_y for s in scores])), tuple(scores),
                      float(np.mean(rgb)) if rgb else None, seconds=seconds)


def _with_delta(row: ModelScore, ref: ModelScore | None) -> ModelScore:
    if ref is None:
        return row
    return dataclasses.replace(row, delta_psnr_y=row.psnr_y - ref.psnr_y,
                               delta_ssim_y=row.ssim_y - ref.ssim_y)


def evaluate_sr(models: Sequence[ModelInput], config: SREvalConfig, progress: ProgressFn | None = None,
                labels: Sequence[str] | None = None) -> SREvalReport:
    """Score each model (and MATLAB-bicubic upscaling) on ``config.dataset`` at ``config.scale``.

    Args:
        models: ONNX paths, IR models or ONNX bytes; the first is the reference for the delta column.
        config: dataset, scale, value range, backend and options.
        progress: called as ``progress(label, done, total)`` after each image.
        labels: row names (default: file names).

    Returns:
        The report; ``report.models[i].delta_psnr_y`` is model i minus model 0 in dB.
    """
    if labels is not None and len(labels) != len(models):
        raise ValueError(f"got {len(labels)} labels for {len(models)} models")
    pairs = load_sr_dataset(Path(config.dataset), config.scale, config.max_images)
    names = list(labels) if labels is not None else _labels(models)
    rows = [_run_model(m, n, pairs, config, progress) for m, n in zip(models, names)]
    ref = rows[0] if rows else None
    return SREvalReport(
        dataset=str(config.dataset), scale=config.scale, value_range=config.value_range,
        backend=config.backend, models=tuple(_with_delta(r, ref) for r in rows),
        bicubic=_with_delta(_bicubic(pairs, config, progress), ref),
        lr_sources={p.name: p.lr_source for p in pairs},
    )
