"""Dynamic axes: which input axes become symbolic, readable names for them, and checks that they stay so.

torch names symbolic sizes ``s0``, ``s77``; users and later tools read ``batch``/``height``/``width``
(and ``3*height`` on an x3 SR output), so the exported graph is renamed consistently. An exporter or
simplifier that quietly pins a requested dynamic axis to a number is turned into an error here, because
the model would otherwise fail much later on the first image of another size.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import onnx_ir as ir

from qdeploy.errors import ExportError, InputError
from qdeploy.export.parity import random_inputs

if TYPE_CHECKING:
    import torch

__all__ = ["Axes", "dynamic_axes", "output_axes", "rename_dims", "require_dynamic", "second_size"]

Axes = tuple[dict[int, str], ...]  # per input: axis -> dynamic dimension name


def dynamic_axes(inputs: tuple[torch.Tensor, ...], batch: bool, hw: bool) -> Axes:
    """Per input, the axes to make dynamic and their names (input 0: batch/height/width)."""
    axes: list[dict[int, str]] = []
    for i, t in enumerate(inputs):
        suffix = "" if i == 0 else f"_{i}"
        entry: dict[int, str] = {}
        if batch and t.dim() >= 2:
            entry[0] = "batch"
        if hw and t.dim() >= 3:
            entry[t.dim() - 2], entry[t.dim() - 1] = f"height{suffix}", f"width{suffix}"
        axes.append(entry)
    if (batch or hw) and not any(axes):
        raise InputError("--dynamic-batch/--dynamic-hw need an input of rank >= 2 (batch) or >= 3 (H, W)",
                         f"the inputs have shapes {[tuple(t.shape) for t in inputs]}; drop the flag")
    return tuple(axes)


def second_size(inputs: tuple[torch.Tensor, ...], axes: Axes, value_range: tuple[float, float],
                seed: int) -> tuple[torch.Tensor, ...]:
    """Other shapes for dynamic axes: batch + 1, H x 2, W x 3 (multiples keep any stride divisibility)."""
    shapes = []
    for t, entry in zip(inputs, axes):
        shape = list(t.shape)
        for axis, name in entry.items():
            if name == "batch":
                shape[axis] += 1
            else:
                shape[axis] *= 2 if name.startswith("height") else 3
        shapes.append(tuple(shape))
    return random_inputs(inputs, shapes, value_range, seed)


def output_axes(rank: int, axes: Axes) -> list[tuple[int, str]]:
    """Dynamic axes of an output of ``rank`` for the TorchScript exporter (which cannot infer them)."""
    names = {n for entry in axes for n in entry.values()}
    out = [(0, "batch")] if "batch" in names and rank >= 2 else []
    if "height" in names and rank >= 3:
        out += [(rank - 2, "height"), (rank - 1, "width")]
    return out


def rename_dims(model: ir.Model, axes: Axes) -> None:
    """Replace torch's symbol names (s0, s77) by batch/height/width everywhere in the graph."""
    mapping: dict[str, str] = {}
    for value, entry in zip(model.graph.inputs, axes):
        for axis, name in entry.items():
            dim = value.shape[axis] if value.shape is not None else None
            if isinstance(dim, ir.SymbolicDim) and dim.value and dim.value not in mapping:
                mapping[dim.value] = name
    if not mapping:
        return
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, mapping)) + r")\b")
    values = [*model.graph.inputs, *model.graph.outputs, *(o for node in model.graph for o in node.outputs)]
    for value in values:
        if value.shape is None:
            continue
        dims = [ir.SymbolicDim(pattern.sub(lambda m: mapping[m.group(1)], d.value))
                if isinstance(d, ir.SymbolicDim) and d.value else d for d in value.shape.dims]
        value.shape = ir.Shape(dims)


def require_dynamic(model: ir.Model, axes: Axes, who: str) -> None:
    """Raise when an axis the user asked to be dynamic came out as a fixed number."""
    for value, entry in zip(model.graph.inputs, axes):
        for axis in entry:
            dim = value.shape[axis] if value.shape is not None else None
            if isinstance(dim, int):
                raise ExportError(f"{who} fixed axis {axis} of input {value.name!r} to {dim} although it was "
                                  "requested dynamic",
                                  "the model (or its .pt2 program) is specialised to one size; export from "
                                  "Python source, or drop --dynamic-hw/--dynamic-batch")
