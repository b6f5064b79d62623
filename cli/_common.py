"""Option parsing and output helpers shared by every ``qdeploy`` subcommand.

Kept small and dependency-light (click, stdlib; rich only inside :func:`console`) because every command
module imports it at startup. The rule these helpers enforce: with ``--json`` the command's stdout is one
strict JSON document and nothing else, so tables, progress and "wrote ..." notes go to stderr.
"""

from __future__ import annotations

import json
import math
import re
from typing import TYPE_CHECKING, Any

import click

from qdeploy.artifacts import json_safe

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "RANGE_HELP",
    "PixelRange",
    "console",
    "input_range_callback",
    "json_safe",
    "name_cell",
    "node_modules",
    "parse_range",
    "parse_shape",
    "parse_shapes",
    "print_json",
    "shapes_callback",
]

Shapes = dict[str, tuple[int, ...]] | tuple[int, ...] | None


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,3,64,64"`` (or ``"1x3x64x64"``) -> ``(1, 3, 64, 64)``; every dim must be a positive int."""
    parts = [p.strip() for p in text.replace("x", ",").split(",")]
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a shape; write it like 1,3,64,64") from None
    if not dims or any(d <= 0 for d in dims):
        raise click.BadParameter(f"{text!r}: every dimension must be a positive integer, e.g. 1,3,64,64")
    return dims


def parse_shapes(values: str | tuple[str, ...] | list[str] | None) -> Shapes:
    """Parse ``--input-shape`` values into what the library takes.

    Each value is either a bare shape ``1,3,64,64`` (for a model with one input) or ``NAME:1,3,64,64``;
    several named shapes may be given by repeating the option or separating them with ``;`` or spaces.
    Returns None when nothing was given, a tuple for one bare shape, else a dict name -> shape. Mixing bare
    and named shapes is refused because it is ambiguous which input the bare one means.
    """
    if values is None:
        return None
    if isinstance(values, str):
        values = (values,)
    items = [tok for v in values for tok in v.replace(";", " ").split()]
    if not items:
        return None
    named: dict[str, tuple[int, ...]] = {}
    bare: list[tuple[int, ...]] = []
    for item in items:
        name, sep, shape = item.rpartition(":")
        if sep:
            if not name:
                raise click.BadParameter(f"{item!r}: the input name before ':' is empty")
            if name in named:
                raise click.BadParameter(f"input {name!r} is given two shapes")
            named[name] = parse_shape(shape)
        else:
            bare.append(parse_shape(shape))
    if bare and (named or len(bare) > 1):
        raise click.BadParameter("with several shapes, name each input: --input-shape NAME:1,3,64,64")
    return bare[0] if bare else named


# LOW and HIGH separated by "-" (the documented spelling, as in `calibrate --range 0-255`), "," or "..".
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_RANGE = re.compile(rf"^\s*({_NUMBER})\s*(?:-|,|\.\.)\s*({_NUMBER})\s*$")
RANGE_HELP = "LOW-HIGH, e.g. 0-255 (0,255 and 0..255 work too)"


def parse_range(text: str) -> tuple[float, float]:
    """``"0-255"``, ``"0,255"`` or ``"0..255"`` -> ``(0.0, 255.0)``; low must be below high, both finite.

    Every spelling is accepted because the commands grew apart (``calibrate --range 0-255``, ``profile
    --input-range 0,255``) and a user should not have to remember which one takes which.
    """
    match = _RANGE.match(text)
    if match is None:
        raise click.BadParameter(f"{text!r} is not a range; write it as {RANGE_HELP}")
    lo, hi = float(match.group(1)), float(match.group(2))
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise click.BadParameter(f"{text!r}: need finite LOW-HIGH with LOW < HIGH, e.g. 0-255")
    return lo, hi


class PixelRange(click.ParamType):
    """A pixel range option (``--range``): 0-255 or 0-1 in any :func:`parse_range` spelling, or the bare
    maximum (255, 1). Converts to the maximum (255 or 1), or with ``as_text`` to ``"0-255"``/``"0-1"``,
    the values ``qdeploy calibrate --range`` and the calibration data config take.
    """

    name = "range"

    def __init__(self, as_text: bool = False) -> None:
        self.as_text = as_text

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        text = str(value).strip()
        if text in ("255", "1"):
            top = int(text)
        else:
            try:
                lo, hi = parse_range(text)
            except click.BadParameter as exc:
                self.fail(f"{exc.message}; pixel ranges are 0-255 or 0-1", param, ctx)
            if lo != 0 or hi not in (1, 255):
                self.fail(f"{text!r}: pixel ranges are 0-255 or 0-1", param, ctx)
            top = int(hi)
        return f"0-{top}" if self.as_text else top


def shapes_callback(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> Shapes:
    """click callback for a ``multiple=True`` ``--input-shape`` option."""
    return parse_shapes(value)


def input_range_callback(ctx: click.Context, param: click.Parameter,
                         value: str | None) -> tuple[float, float] | None:
    """click callback for an ``--input-range LOW-HIGH`` option (any :func:`parse_range` spelling)."""
    return None if value is None else parse_range(value)


def print_json(data: Any) -> None:
    """Print ``data`` to stdout as one indented, strict JSON document (non-finite floats as strings)."""
    click.echo(json.dumps(json_safe(data), indent=2, allow_nan=False, default=str))


def console(stderr: bool = False) -> Console:
    """A rich Console; pass ``stderr=True`` (e.g. under ``--json``) so stdout stays pure JSON.

    Off a terminal (a log, a pipe, CI) text is not wrapped: rich would break it at its assumed 80
    columns, mid-word inside any path longer than that, and a line cut in two can be neither searched
    for nor copied (the plain progress and estimate lines are unwrapped for the same reason). Tables
    still fit the width (``COLUMNS``, else 80); on a terminal everything wraps at its width as usual.
    """
    from rich.console import Console

    con = Console(stderr=stderr, highlight=False)
    con.soft_wrap = not con.is_terminal
    return con


def node_modules(model: Any) -> dict[str, str]:
    """{node name: the PyTorch module that computed its first output}, as recorded at export
    (:func:`qdeploy.graph.names.readable_names`); nodes it knows no module for (its fallback is the node's
    own name and op) are left out, as is everything of a model exported without the record."""
    from qdeploy.graph.names import readable_names

    values = readable_names(model)
    found = {n.name: values.get(n.outputs[0].name, "") for n in model.graph if n.name and n.outputs}
    return {node: module for node, module in found.items() if module and not module.startswith(node)}


def name_cell(name: str, labels: dict[str, str]) -> str:
    """A table cell naming a tensor or node: its module label, then the ONNX name dimmed beneath (rich
    markup, both escaped); the ONNX name alone when no label differs from it."""
    from rich.markup import escape

    label = labels.get(name)
    return escape(name) if not label or label == name else f"{escape(label)}\n[dim]{escape(name)}[/dim]"
