"""Shape computation and data-movement ops of the torch interpreter.

Shape tensors are int64 torch tensors (no gradient); they are turned into Python ints where torch needs
them, which is exact and cheap for the small shape vectors exported models compute.
"""

from __future__ import annotations

import torch
import torch.nn.functional as nnf

from qdeploy.errors import UnsupportedModelError
from qdeploy.torchexec.base import OPS, OpCall, int_list, torch_dtype

__all__: list[str] = []


def _long(values: list[int], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64, device=like.device)


@OPS.register("Shape")
def _shape(call: OpCall) -> list[torch.Tensor]:
    x = call.inputs[0]
    dims = list(x.shape)
    start, end = call.attr("start", 0), call.attr("end")
    return [_long(dims[start:end], x)]


@OPS.register("Size")
def _size(call: OpCall) -> list[torch.Tensor]:
    return [_long([call.inputs[0].numel()], call.inputs[0]).reshape(())]


@OPS.register("Reshape")
def _reshape(call: OpCall) -> list[torch.Tensor]:
    x, shape = call.inputs[0], int_list(call.inputs[1])
    if not call.attr("allowzero", 0):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return [x.reshape(shape)]


@OPS.register("Flatten")
def _flatten(call: OpCall) -> list[torch.Tensor]:
    x = call.inputs[0]
    axis = call.attr("axis", 1) % (x.dim() + 1) if x.dim() else 0
    lead = 1
    for d in x.shape[:axis]:
        lead *= d
    return [x.reshape(lead, -1)]


@OPS.register("Transpose")
def _transpose(call: OpCall) -> list[torch.Tensor]:
    x = call.inputs[0]
    perm = call.attr("perm") or list(reversed(range(x.dim())))
    return [x.permute(perm)]


def _axes(call: OpCall, index: int) -> list[int]:
    """Axes from input ``index`` (opset >= 13) or the ``axes`` attribute (older opsets)."""
    axes = call.attr("axes")
    return list(axes) if axes is not None else int_list(call.input(index))


@OPS.register("Unsqueeze")
def _unsqueeze(call: OpCall) -> list[torch.Tensor]:
    x = call.inputs[0]
    rank = x.dim() + len(_axes(call, 1))
    out = x
    for axis in sorted(a % rank for a in _axes(call, 1)):
        out = out.unsqueeze(axis)
    return [out]


@OPS.register("Squeeze")
def _squeeze(call: OpCall) -> list[torch.Tensor]:
    x = call.inputs[0]
    axes = _axes(call, 1)
    if not axes:
        return [x.squeeze()]
    return [x.squeeze(tuple(a % x.dim() for a in axes))]


@OPS.register("Concat")
def _concat(call: OpCall) -> list[torch.Tensor]:
    parts = [t for t in call.inputs if t is not None and not (t.dim() == 1 and t.numel() == 0)]
    return [torch.cat(parts, call.attr("axis"))]


@OPS.register("Split")
def _split(call: OpCall) -> list[torch.Tensor]:
    x = call.inputs[0]
    axis = call.attr("axis", 0)
    sizes = call.attr("split") or int_list(call.input(1))
    if not sizes:
        n = call.attr("num_outputs", len(call.node.outputs))
        chunk = -(-x.shape[axis] // n)
        sizes = [min(chunk, x.shape[axis] - i * chunk) for i in range(n)]
    return list(torch.split(x, sizes, axis))


@OPS.register("Gather")
def _gather(call: OpCall) -> list[torch.Tensor]:
    x, idx = call.inputs[0], call.inputs[1].long()
    axis = call.attr("axis", 0) % x.dim()
    idx = torch.where(idx < 0, idx + x.shape[axis], idx)
    out = x.index_select(axis, idx.reshape(-1))
    return [out.reshape(*x.shape[:axis], *idx.shape, *x.shape[axis + 1:])]


@OPS.register("Slice")
def _slice(call: OpCall) -> list[torch.Tensor]:
    x = call.inputs[0]
    if call.opset < 10:
        starts, ends, axes, steps = call.attr("starts"), call.attr("ends"), call.attr("axes"), None
    else:
        starts, ends = int_list(call.inputs[1]), int_list(call.inputs[2])
        axes, steps = int_list(call.input(3)) or None, int_list(call.input(4)) or None
    axes = axes or list(range(len(starts)))
    steps = steps or [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        axis %= x.dim()
        index = range(*slice(start, end, step).indices(x.shape[axis]))
        if step > 0:
            x = x.narrow(axis, index.start, len(index)) if step == 1 else x[(slice(None),) * axis + (
                slice(index.start, index.stop, step),)]
        else:
            x = x.index_select(axis, _long(list(index), x))
    return [x]


@OPS.register("Expand")
def _expand(call: OpCall) -> list[torch.Tensor]:
    x, shape = call.inputs[0], int_list(call.inputs[1])
    return [x.expand(torch.broadcast_shapes(tuple(x.shape), tuple(shape)))]


@OPS.register("Tile")
def _tile(call: OpCall) -> list[torch.Tensor]:
    return [call.inputs[0].repeat(int_list(call.inputs[1]))]


@OPS.register("Range")
def _range(call: OpCall) -> list[torch.Tensor]:
    start, limit, delta = (t.reshape(()) for t in call.inputs[:3])
    return [torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype, device=start.device)]


@OPS.register("Cast")
def _cast(call: OpCall) -> list[torch.Tensor]:
    import onnx_ir as ir

    return [call.inputs[0].to(torch_dtype(ir.DataType(call.attr("to"))))]


@OPS.register("ConstantOfShape")
def _constant_of_shape(call: OpCall) -> list[torch.Tensor]:
    value = call.attr("value")
    fill = torch.from_numpy(value.reshape(-1)) if value is not None else torch.zeros(1)
    shape = int_list(call.inputs[0])
    return [fill.to(call.inputs[0].device).expand(shape).clone()]


@OPS.register("Constant")
def _constant(call: OpCall) -> list[torch.Tensor]:
    import numpy as np

    for name, dtype in (("value", None), ("value_float", np.float32), ("value_floats", np.float32),
                        ("value_int", np.int64), ("value_ints", np.int64)):
        value = call.attr(name)
        if value is not None:
            array = np.array(value, dtype=dtype) if dtype is not None else value
            return [torch.from_numpy(np.array(array, copy=True))]
    raise UnsupportedModelError(f"Constant node {call.node.name!r} has no value/value_float(s)/value_int(s)",
                                "fold sparse or string constants before quantizing (e.g. with onnxsim)")


@OPS.register("Pad")
def _pad(call: OpCall) -> list[torch.Tensor]:
    x = call.inputs[0]
    pads = call.attr("pads") if call.opset < 11 else int_list(call.inputs[1])
    value = call.input(2)
    axes = [a % x.dim() for a in int_list(call.input(3))] or list(range(x.dim()))
    n = len(axes)
    per_axis = {a: (pads[i], pads[i + n]) for i, a in enumerate(axes)}
    first = min((a for a in per_axis if per_axis[a] != (0, 0)), default=x.dim() - 1)
    torch_pads = [p for a in range(x.dim() - 1, first - 1, -1) for p in per_axis.get(a, (0, 0))]
    mode = call.attr("mode", "constant")
    torch_mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}[mode]
    if mode != "constant":
        if first < x.dim() - 3 or x.dim() < 3 or (first < 2 and x.dim() > 3):
            raise UnsupportedModelError(f"Pad {call.node.name!r}: {mode} padding of axis {first} of a "
                                        f"{x.dim()}-d tensor", "pad only spatial axes (N, C, spatial...)")
        spatial_pads = torch_pads + [0] * (2 * (x.dim() - 2) - len(torch_pads))  # torch wants all spatial
        return [nnf.pad(x, spatial_pads, mode=torch_mode)]
    fill = float(value.reshape(-1)[0]) if value is not None and value.numel() else 0.0
    return [nnf.pad(x, torch_pads, value=fill)]


@OPS.register("DepthToSpace")
def _depth_to_space(call: OpCall) -> list[torch.Tensor]:
    x, bs = call.inputs[0], call.attr("blocksize")
    if call.attr("mode", "DCR") == "CRD":
        return [nnf.pixel_shuffle(x, bs)]
    n, c, h, w = x.shape
    y = x.reshape(n, bs, bs, c // (bs * bs), h, w).permute(0, 3, 4, 1, 5, 2)
    return [y.reshape(n, c // (bs * bs), h * bs, w * bs)]


@OPS.register("SpaceToDepth")
def _space_to_depth(call: OpCall) -> list[torch.Tensor]:
    x, bs = call.inputs[0], call.attr("blocksize")
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // bs, bs, w // bs, bs).permute(0, 3, 5, 1, 2, 4)
    return [y.reshape(n, c * bs * bs, h // bs, w // bs)]
