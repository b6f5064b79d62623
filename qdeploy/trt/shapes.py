"""Input shape ranges for engine builds: ``NAME:MIN-OPT-MAX`` text -> :class:`ShapeRange`.

TensorRT compiles one optimisation profile per dynamic input (smallest, tuned-for and largest shape); a
single shape means min = opt = max, i.e. a static engine for that size.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from qdeploy.errors import InputError

__all__ = ["ShapeRange", "check_ranges", "parse_shape_range", "parse_shape_ranges"]

Shape = tuple[int, ...]


@dataclass(frozen=True)
class ShapeRange:
    """min/opt/max shapes of one input; ``name`` None means "the model's only dynamic input"."""

    name: str | None
    min: Shape
    opt: Shape
    max: Shape

    def __post_init__(self) -> None:
        shapes = tuple(tuple(int(d) for d in s) for s in (self.min, self.opt, self.max))
        object.__setattr__(self, "min", shapes[0])
        object.__setattr__(self, "opt", shapes[1])
        object.__setattr__(self, "max", shapes[2])
        if len({len(s) for s in shapes}) != 1:
            raise ValueError(f"min/opt/max of {self.name or 'input'} have different ranks: {shapes}")
        if any(d <= 0 for s in shapes for d in s):
            raise ValueError(f"every dimension must be positive, got {shapes}")
        if not all(a <= b <= c for a, b, c in zip(*shapes, strict=False)):
            raise ValueError(f"need min <= opt <= max on every axis, got {shapes}")

    @property
    def is_static(self) -> bool:
        """True when the range is one shape."""
        return self.min == self.opt == self.max

    def with_name(self, name: str) -> ShapeRange:
        """The same range bound to input ``name``."""
        return ShapeRange(name, self.min, self.opt, self.max)

    def to_dict(self) -> dict[str, object]:
        """JSON form for reports and cache keys."""
        return {"name": self.name, "min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


def _shape(text: str, whole: str) -> Shape:
    parts = [p.strip() for p in text.replace("x", ",").split(",")]
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        raise InputError(
            f"{whole!r}: {text!r} is not a shape",
            "write shapes like 1x3x64x64; a range as MIN-OPT-MAX, "
            "e.g. input:1x3x64x64-1x3x360x640-1x3x720x1280",
        ) from None


def parse_shape_range(text: str) -> ShapeRange:
    """``[NAME:]SHAPE`` or ``[NAME:]MIN-OPT-MAX`` (dims joined by ``x`` or ``,``) -> :class:`ShapeRange`.

    Two shapes ``MIN-MAX`` are accepted too and tune for MAX (the size a deployment usually cares about).
    """
    name, sep, body = text.strip().rpartition(":")
    parts = [_shape(p, text) for p in body.split("-")]
    if len(parts) not in (1, 2, 3):
        raise InputError(f"{text!r} has {len(parts)} shapes", "give one shape, MIN-MAX or MIN-OPT-MAX")
    lo, opt, hi = (
        (parts[0], parts[0], parts[0])
        if len(parts) == 1
        else ((parts[0], parts[1], parts[1]) if len(parts) == 2 else tuple(parts))
    )
    try:
        return ShapeRange(name if sep else None, lo, opt, hi)
    except ValueError as exc:
        raise InputError(f"bad --input-shape {text!r}: {exc}", "order the shapes MIN-OPT-MAX") from None


def parse_shape_ranges(values: str | Iterable[str] | None) -> tuple[ShapeRange, ...]:
    """Parse repeated, ``;``- or space-separated ranges; names must be unique, one bare range at most."""
    if values is None:
        return ()
    if isinstance(values, str):
        values = (values,)
    ranges = tuple(parse_shape_range(tok) for v in values for tok in v.replace(";", " ").split())
    return check_ranges(ranges)


def check_ranges(ranges: Sequence[ShapeRange]) -> tuple[ShapeRange, ...]:
    """Refuse duplicate names and a bare range mixed with others (it would be ambiguous)."""
    names = [r.name for r in ranges]
    if None in names and len(names) > 1:
        raise InputError("with several input shapes, name each one", "e.g. --input-shape input:1x3x64x64")
    dupes = sorted({n for n in names if n is not None and names.count(n) > 1})
    if dupes:
        raise InputError(f"input(s) {dupes} are given two shapes", "give each input one shape or range")
    return tuple(ranges)
