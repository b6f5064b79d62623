"""Model inputs for profiling: the same feeds for every model profiled, so outputs are comparable.

Latency does not care about content, but accuracy does: a trained image network is only defined on
images, and on uniform noise a quantized model's error says little about its error on photos (noise
exercises activation ranges calibration never saw). So by default every 4-D float input with 1 or 3
channels gets natural images (:func:`natural_inputs`: the user's ``--data`` folder, else the photos
:mod:`qdeploy.export.natural` bundles), scaled to the model's input range; other inputs (token ids,
masks) and ``--random-inputs`` get seeded uniform random values (:func:`make_inputs`). Either way the
feeds come with a one-line description, so every accuracy number says what it was measured on.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from qdeploy.errors import InputError
from qdeploy.types import TensorSpec

__all__ = ["Shapes", "format_range", "make_inputs", "megapixels", "natural_inputs", "random_basis"]

Shapes = dict[str, tuple[int, ...]] | tuple[int, ...] | None
"""One bare shape (single-input models), shapes by input name, or None (all dims static)."""

_FLOAT_DTYPES = ("float16", "float32", "float64")


def make_inputs(specs: list[TensorSpec], shapes: Shapes, seed: int,
                input_range: tuple[float, float]) -> dict[str, np.ndarray]:
    """Seeded uniform random feeds for ``specs``: floats in ``input_range``, integers in its integer part.

    A bare shape tuple is accepted only for a single-input model; a dynamic dim with no shape given is an
    :class:`InputError` naming the input and its dynamic dims (static-dim mismatches are left to
    :meth:`Session.run`, which reports them).
    """
    names = [s.name for s in specs]
    if isinstance(shapes, tuple) and len(specs) != 1:
        raise InputError(f"the model has {len(specs)} inputs {names}; a bare shape is ambiguous",
                         "name each input: --input-shape NAME:1,3,64,64 (repeat the option)")
    if isinstance(shapes, dict) and (unknown := sorted(set(shapes) - set(names))):
        raise InputError(f"--input-shape names {unknown}, but the model's inputs are {names}",
                         "use the model's input names")
    rng = np.random.default_rng(seed)
    lo, hi = input_range
    feeds = {}
    for spec in specs:
        shape = _resolve_shape(spec, shapes)
        if spec.dtype in _FLOAT_DTYPES:
            feeds[spec.name] = rng.uniform(lo, hi, size=shape).astype(spec.dtype)
        elif spec.dtype == "bool":
            feeds[spec.name] = rng.random(size=shape) < 0.5
        else:
            low = math.ceil(lo)
            feeds[spec.name] = rng.integers(low, max(low, math.floor(hi)) + 1, size=shape).astype(spec.dtype)
    return feeds


def _resolve_shape(spec: TensorSpec, shapes: Shapes) -> tuple[int, ...]:
    given = shapes if isinstance(shapes, tuple) else (shapes or {}).get(spec.name)
    if given is not None:
        return tuple(given)
    dynamic = [f"axis {i} ({d or '?'})" for i, d in enumerate(spec.shape) if not isinstance(d, int)]
    if dynamic:
        shown = ",".join(str(d) if isinstance(d, int) else "?" for d in spec.shape)
        example = ",".join(str(d) if isinstance(d, int) else ("1" if i == 0 else "64")
                           for i, d in enumerate(spec.shape))
        raise InputError(f"input {spec.name!r} has dynamic dims {', '.join(dynamic)} (shape {shown})",
                         f"give its full shape, e.g. --input-shape {spec.name}:{example}")
    return tuple(int(d) for d in spec.shape)


def megapixels(feeds: dict[str, np.ndarray]) -> float | None:
    """Megapixels per inference when the first input looks like an NCHW image batch (C in 1, 3, 4)."""
    first = next(iter(feeds.values()), None)
    if first is None or first.ndim != 4 or first.shape[1] not in (1, 3, 4):
        return None
    n, _, h, w = first.shape
    return n * h * w / 1e6


def format_range(value_range: tuple[float, float]) -> str:
    """``(0.0, 255.0)`` -> ``"0..255"``: how reports write an input range."""
    lo, hi = value_range
    return f"{lo:g}..{hi:g}"


def random_basis(value_range: tuple[float, float], seed: int) -> str:
    """What seeded uniform feeds are, in words: ``"uniform random inputs in 0..1 (seed 0)"``."""
    return f"uniform random inputs in {format_range(value_range)} (seed {seed})"


def _is_image(value: np.ndarray) -> bool:
    """A float NCHW batch with 1 (luma) or 3 (RGB) channels: what gets natural images."""
    return value.dtype.kind == "f" and value.ndim == 4 and value.shape[1] in (1, 3)


def _image_batch(like: np.ndarray, photos: tuple[np.ndarray, ...], first: int,
                 value_range: tuple[float, float]) -> np.ndarray:
    """A batch shaped and typed like ``like`` from photos ``first, first + 1, ...`` (cycling), each
    resized to cover H x W and centre-cropped, scaled from 0..255 to ``value_range`` (1 channel: BT.601
    Y in 16..235, as ``qdeploy calibrate --color y`` and ``qdeploy eval sr`` feed luma models)."""
    from qdeploy.export.natural import photo_array

    return photo_array(like.shape, photos, first, value_range).astype(like.dtype)


def natural_inputs(feeds: dict[str, np.ndarray], value_range: tuple[float, float], seed: int,
                   data: Path | None = None) -> tuple[dict[str, np.ndarray], str]:
    """``feeds`` (from :func:`make_inputs`) with every image input replaced by natural images, and what
    the feeds now are in words (for the accuracy label).

    Images come from ``data`` (a folder or one file, sorted by name) or else the bundled photos (see
    :func:`qdeploy.export.natural.load_photos`); non-image inputs keep their seeded random values.
    Raises :class:`InputError` when ``data`` is missing or holds no readable images.
    """
    from qdeploy.export.natural import load_photos

    names = [k for k, v in feeds.items() if _is_image(v)]
    if not names:
        return feeds, random_basis(value_range, seed)
    source = load_photos(data, sum(feeds[k].shape[0] for k in names))
    out, used = dict(feeds), 0
    for name in names:
        out[name] = _image_batch(feeds[name], source.images, used, value_range)
        used += feeds[name].shape[0]
    sizes = " and ".join(dict.fromkeys(f"{feeds[k].shape[-2]}x{feeds[k].shape[-1]}" for k in names))
    text = f"{source.describe(min(used, len(source.images)))} at {sizes}, scaled to {format_range(value_range)}"
    if len(names) < len(feeds):
        text += f"; other inputs: {random_basis(value_range, seed)}"
    return out, text
