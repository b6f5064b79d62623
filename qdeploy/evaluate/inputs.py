"""Seeded random model inputs: the same feeds for every model profiled, so outputs are comparable.

Random uniform data in a user-given range is enough for latency (kernels do not care about content) and
for *relative* accuracy (all models see identical inputs); ``--input-range 0,255`` matches models that
take raw pixel values.
"""

from __future__ import annotations

import math

import numpy as np

from qdeploy.errors import InputError
from qdeploy.types import TensorSpec

__all__ = ["Shapes", "make_inputs", "megapixels"]

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
