"""Arithmetic and neural-network ops of the torch interpreter (differentiable where ONNX is)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as nnf

from qdeploy.errors import UnsupportedModelError
from qdeploy.torchexec.base import OPS, OpCall, int_list

__all__: list[str] = []


def _unary(name: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    OPS.add(name, lambda call: [fn(call.inputs[0])])


def _binary(name: str, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    OPS.add(name, lambda call: [fn(call.inputs[0], call.inputs[1])])


def _div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """ONNX integer Div truncates toward zero (C semantics); float Div is plain division."""
    if a.is_floating_point() or b.is_floating_point():
        return a / b
    return torch.div(a, b, rounding_mode="trunc")


for _name, _fn in {"Relu": torch.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Erf": torch.erf,
                   "Sqrt": torch.sqrt, "Neg": torch.neg, "Abs": torch.abs, "Exp": torch.exp, "Log": torch.log,
                   "Reciprocal": torch.reciprocal, "Floor": torch.floor, "Ceil": torch.ceil,
                   "Not": torch.logical_not, "Identity": lambda x: x}.items():
    _unary(_name, _fn)

for _name, _fn in {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": _div, "Pow": torch.pow,
                   "Equal": torch.eq, "Greater": torch.gt, "Less": torch.lt, "GreaterOrEqual": torch.ge,
                   "LessOrEqual": torch.le, "And": torch.logical_and, "Or": torch.logical_or,
                   "MatMul": torch.matmul}.items():
    _binary(_name, _fn)


@OPS.register("Mod")
def _mod(call: OpCall) -> list[torch.Tensor]:
    a, b = call.inputs[0], call.inputs[1]
    return [torch.fmod(a, b) if call.attr("fmod", 0) else torch.remainder(a, b)]


@OPS.register("Where")
def _where(call: OpCall) -> list[torch.Tensor]:
    return [torch.where(call.inputs[0].bool(), call.inputs[1], call.inputs[2])]


@OPS.register("Max")
def _max(call: OpCall) -> list[torch.Tensor]:
    out = call.inputs[0]
    for x in call.inputs[1:]:
        out = torch.maximum(out, x)
    return [out]


@OPS.register("Min")
def _min(call: OpCall) -> list[torch.Tensor]:
    out = call.inputs[0]
    for x in call.inputs[1:]:
        out = torch.minimum(out, x)
    return [out]


@OPS.register("Clip")
def _clip(call: OpCall) -> list[torch.Tensor]:
    """``maximum``/``minimum`` rather than ``clamp`` so a learnable bound receives its gradient."""
    x = call.inputs[0]
    lo, hi = call.input(1), call.input(2)
    if call.opset < 11:
        lo_attr, hi_attr = call.attr("min"), call.attr("max")
        lo = None if lo_attr is None else torch.tensor(lo_attr, dtype=x.dtype, device=x.device)
        hi = None if hi_attr is None else torch.tensor(hi_attr, dtype=x.dtype, device=x.device)
    if lo is not None:
        x = torch.maximum(x, lo.to(x.dtype))
    if hi is not None:
        x = torch.minimum(x, hi.to(x.dtype))
    return [x]


@OPS.register("LeakyRelu")
def _leaky_relu(call: OpCall) -> list[torch.Tensor]:
    return [nnf.leaky_relu(call.inputs[0], call.attr("alpha", 0.01))]


@OPS.register("PRelu")
def _prelu(call: OpCall) -> list[torch.Tensor]:
    x, slope = call.inputs[0], call.inputs[1]
    return [torch.where(x >= 0, x, x * slope)]


@OPS.register("Gelu")
def _gelu(call: OpCall) -> list[torch.Tensor]:
    return [nnf.gelu(call.inputs[0], approximate=call.attr("approximate", "none"))]


@OPS.register("Softmax")
def _softmax(call: OpCall) -> list[torch.Tensor]:
    x = call.inputs[0]
    axis = call.attr("axis", -1 if call.opset >= 13 else 1)
    if call.opset >= 13:
        return [torch.softmax(x, axis)]
    flat = x.reshape(math.prod(x.shape[:axis]), -1)  # opset < 13: softmax over the flattened tail
    return [torch.softmax(flat, 1).reshape(x.shape)]


@OPS.register("LayerNormalization")
def _layer_norm(call: OpCall) -> list[torch.Tensor]:
    x, scale, bias = call.inputs[0], call.input(1), call.input(2)
    axis = call.attr("axis", -1) % x.dim()
    shape = tuple(x.shape[axis:])
    fits = all(t is None or tuple(t.shape) == shape for t in (scale, bias))
    if fits:  # one fused kernel (forward and backward) instead of six elementwise ops
        return [nnf.layer_norm(x, shape, scale, bias, call.attr("epsilon", 1e-5))]
    dims = tuple(range(axis, x.dim()))
    mean = x.mean(dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dims, keepdim=True)
    out = (x - mean) / torch.sqrt(var + call.attr("epsilon", 1e-5))
    out = out * scale if scale is not None else out
    return [out + bias if bias is not None else out]


def _reduce_axes(call: OpCall, x: torch.Tensor) -> list[int] | None:
    """Reduce axes from the attribute (old opsets) or the second input (ReduceMean/ReduceSum >= 18/13)."""
    axes = call.attr("axes")
    if axes is None:
        axes = int_list(call.input(1)) or None
    if axes is None and call.attr("noop_with_empty_axes", 0):
        return []
    return None if axes is None else [a % max(x.dim(), 1) for a in axes]


def _reduce(fn: Callable[..., torch.Tensor]) -> Callable[[OpCall], list[torch.Tensor]]:
    def impl(call: OpCall) -> list[torch.Tensor]:
        x = call.inputs[0]
        axes = _reduce_axes(call, x)
        if axes == []:
            return [x]
        keep = bool(call.attr("keepdims", 1))
        return [fn(x, dim=tuple(axes) if axes is not None else tuple(range(x.dim())), keepdim=keep)]

    return impl


OPS.add("ReduceMean", _reduce(torch.mean))
OPS.add("ReduceSum", _reduce(torch.sum))
OPS.add("ReduceMax", _reduce(torch.amax))
OPS.add("ReduceMin", _reduce(torch.amin))
OPS.add("ReduceL2", _reduce(lambda x, dim, keepdim: torch.linalg.vector_norm(x, 2, dim=dim, keepdim=keepdim)))


@OPS.register("MaxPool")
def _max_pool(call: OpCall) -> list[torch.Tensor]:
    """MaxPool (one output; the indices output is not supported). Asymmetric pads are padded with -inf."""
    if len(call.node.outputs) > 1 and call.node.outputs[1] is not None and call.node.outputs[1].name:
        raise UnsupportedModelError(f"MaxPool {call.node.name!r} asks for indices", "export without return_indices")
    x, kernel = call.inputs[0], list(call.attr("kernel_shape"))
    x, pads = _conv_pads(call, x, kernel, fill=float("-inf"))
    fn = {1: nnf.max_pool1d, 2: nnf.max_pool2d, 3: nnf.max_pool3d}[len(kernel)]
    return [fn(x, kernel, stride=call.attr("strides") or kernel, padding=pads,
               dilation=call.attr("dilations") or 1, ceil_mode=bool(call.attr("ceil_mode", 0)))]


@OPS.register("Gemm")
def _gemm(call: OpCall) -> list[torch.Tensor]:
    a, b, c = call.inputs[0], call.inputs[1], call.input(2)
    a = a.t() if call.attr("transA", 0) else a
    b = b.t() if call.attr("transB", 0) else b
    alpha, beta = call.attr("alpha", 1.0), call.attr("beta", 1.0)
    if c is not None and c.dim() <= 2 and a.dim() == 2 and c.is_floating_point():
        return [torch.addmm(c, a, b, beta=beta, alpha=alpha)]  # fused bias add
    out = alpha * (a @ b)
    return [out + beta * c if c is not None else out]


def _conv_pads(call: OpCall, x: torch.Tensor, kernel: list[int], fill: float = 0.0) -> tuple[torch.Tensor, list[int]]:
    """Symmetric pads go to torch's conv/pool; asymmetric ones are applied with ``nnf.pad`` (``fill``) first."""
    auto_pad = call.attr("auto_pad", "NOTSET")
    spatial = len(kernel)
    if auto_pad not in ("NOTSET", "VALID"):
        raise UnsupportedModelError(f"node {call.node.name!r} ({call.node.op_type}) uses auto_pad={auto_pad}",
                                    "re-export the model with explicit pads (the torch exporters do this)")
    pads = (call.attr("pads") if auto_pad == "NOTSET" else None) or [0] * (2 * spatial)
    begin, end = pads[:spatial], pads[spatial:]
    if begin == end:
        return x, begin
    torch_pads = [p for i in reversed(range(spatial)) for p in (begin[i], end[i])]
    return nnf.pad(x, torch_pads, value=fill), [0] * spatial


@OPS.register("Conv")
def _conv(call: OpCall) -> list[torch.Tensor]:
    x, w, b = call.inputs[0], call.inputs[1], call.input(2)
    spatial = w.dim() - 2
    x, pads = _conv_pads(call, x, list(w.shape[2:]))
    fn = {1: nnf.conv1d, 2: nnf.conv2d, 3: nnf.conv3d}[spatial]
    return [fn(x, w, b, stride=call.attr("strides") or 1, padding=pads, dilation=call.attr("dilations") or 1,
               groups=call.attr("group", 1))]


@OPS.register("ConvTranspose")
def _conv_transpose(call: OpCall) -> list[torch.Tensor]:
    x, w, b = call.inputs[0], call.inputs[1], call.input(2)
    spatial = w.dim() - 2
    if call.attr("output_shape") is not None or call.attr("auto_pad", "NOTSET") != "NOTSET":
        raise UnsupportedModelError(f"ConvTranspose {call.node.name!r} uses output_shape/auto_pad",
                                    "re-export the model with explicit pads and output_padding")
    pads = call.attr("pads") or [0] * (2 * spatial)
    if pads[:spatial] != pads[spatial:]:
        raise UnsupportedModelError(f"ConvTranspose {call.node.name!r} has asymmetric pads {pads}",
                                    "re-export the model with symmetric ConvTranspose padding")
    fn = {1: nnf.conv_transpose1d, 2: nnf.conv_transpose2d, 3: nnf.conv_transpose3d}[spatial]
    return [fn(x, w, b, stride=call.attr("strides") or 1, padding=pads[:spatial],
               output_padding=call.attr("output_padding") or 0, groups=call.attr("group", 1),
               dilation=call.attr("dilations") or 1)]
