"""QuantizeLinear / DequantizeLinear as differentiable fake quantization.

The quantized tensor between a Q and its DQ is carried as a *float* tensor holding integer values: that
keeps one autograd path from the input through ``round`` (straight-through: identity gradient) and the
saturation to the scale and zero point, which is exactly what distillation needs to learn them. The
forward values equal ONNX's: round half to even, saturate to the storage type, ``(q - zp) * scale``.
"""

from __future__ import annotations

import onnx_ir as ir
import torch

from qdeploy.errors import UnsupportedModelError
from qdeploy.torchexec.base import OPS, OpCall

__all__ = ["INTEGER_LIMITS", "round_ste"]

#: Saturation range of every integer storage type a Q/DQ may use.
INTEGER_LIMITS: dict[ir.DataType, tuple[int, int]] = {
    ir.DataType.INT8: (-128, 127), ir.DataType.UINT8: (0, 255), ir.DataType.INT4: (-8, 7),
    ir.DataType.UINT4: (0, 15), ir.DataType.INT16: (-32768, 32767), ir.DataType.UINT16: (0, 65535),
    ir.DataType.INT32: (-(2**31), 2**31 - 1), ir.DataType.INT2: (-2, 1), ir.DataType.UINT2: (0, 3),
}


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round half to even in the forward pass, identity in the backward pass (straight-through)."""
    return x + (torch.round(x) - x).detach()


def _broadcast(param: torch.Tensor, x: torch.Tensor, call: OpCall) -> torch.Tensor:
    """A per-tensor (0-d or 1-element) or per-axis/blocked parameter shaped to broadcast against ``x``."""
    if param.dim() == 0 or (param.dim() == 1 and param.numel() == 1 and x.dim() != 1):
        return param.reshape(())
    axis = call.attr("axis", 1) % x.dim()
    block = call.attr("block_size", 0)
    if block:
        return param.repeat_interleave(block, dim=axis).narrow(axis, 0, x.shape[axis])
    shape = [1] * x.dim()
    shape[axis] = -1
    return param.reshape(shape)


def _storage_type(call: OpCall) -> ir.DataType:
    """The integer type of the quantized tensor: the zero point's, else ``output_dtype``, else uint8."""
    dtype = call.input_dtype(2)
    if dtype is None and call.attr("output_dtype"):
        dtype = ir.DataType(call.attr("output_dtype"))
    dtype = dtype or ir.DataType.UINT8
    if dtype not in INTEGER_LIMITS:
        raise UnsupportedModelError(f"{call.node.op_type} {call.node.name!r} uses {dtype.name} storage",
                                    "only integer Q/DQ (int2..int32) are supported by the torch executor")
    return dtype


@OPS.register("QuantizeLinear")
def _quantize(call: OpCall) -> list[torch.Tensor]:
    x, scale, zp = call.inputs[0].float(), call.inputs[1].float(), call.input(2)
    lo, hi = INTEGER_LIMITS[_storage_type(call)]
    q = round_ste(x / _broadcast(scale, x, call))
    if zp is not None:
        q = q + _broadcast(zp.float(), x, call)
    return [torch.clamp(q, lo, hi)]


@OPS.register("DequantizeLinear")
def _dequantize(call: OpCall) -> list[torch.Tensor]:
    q, scale, zp = call.inputs[0].float(), call.inputs[1].float(), call.input(2)
    if zp is not None:
        q = q - _broadcast(zp.float(), q, call)
    return [q * _broadcast(scale, q, call)]
