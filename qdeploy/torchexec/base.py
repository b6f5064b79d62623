"""The op registry of the torch interpreter and the view of one node that op implementations receive.

An op implementation is a small function ``(call: OpCall) -> list[Tensor]``; keeping each op a separate
entry (instead of one long if-chain) means adding an op is one decorated function, and the interpreter
can list every op a model needs but lacks *before* running anything.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx_ir as ir

from qdeploy.registry import Registry

if TYPE_CHECKING:
    import torch

__all__ = ["OPS", "OpCall", "OpImpl", "int_list", "torch_dtype"]


@dataclass(frozen=True)
class OpCall:
    """One node being executed: its ONNX node, evaluated inputs (None for omitted optional ones), opset."""

    node: ir.Node
    inputs: list[torch.Tensor | None]
    opset: int

    def attr(self, name: str, default: Any = None) -> Any:
        """Attribute ``name`` as a Python value (ints, floats, strings, lists; tensors as numpy)."""
        attr = self.node.attributes.get(name)
        if attr is None:
            return default
        if attr.type == ir.AttributeType.TENSOR:
            return attr.as_tensor().numpy()
        value = attr.value
        if isinstance(value, Sequence) and not isinstance(value, str):
            return list(value)
        return value

    def input(self, index: int) -> torch.Tensor | None:
        """Input ``index``, or None when it is omitted or beyond the node's inputs."""
        return self.inputs[index] if index < len(self.inputs) else None

    def input_dtype(self, index: int) -> ir.DataType | None:
        """The ONNX element type of input ``index`` as declared in the graph (None when unknown)."""
        if index >= len(self.node.inputs) or self.node.inputs[index] is None:
            return None
        value = self.node.inputs[index]
        if value.dtype is not None:
            return value.dtype
        return value.const_value.dtype if value.const_value is not None else None


OpImpl = Callable[[OpCall], "list[torch.Tensor]"]

#: ONNX op type (default domain) -> implementation.
OPS: Registry[OpImpl] = Registry("torch-executable ONNX op")


def int_list(tensor: torch.Tensor | None) -> list[int]:
    """A shape-like integer tensor as a Python list (empty when ``tensor`` is None)."""
    return [] if tensor is None else [int(v) for v in tensor.reshape(-1).tolist()]


def torch_dtype(dtype: ir.DataType) -> torch.dtype:
    """The torch dtype holding an ONNX element type; sub-byte integers widen to 8 bits."""
    import torch

    if dtype in (ir.DataType.INT4, ir.DataType.INT2):
        return torch.int8
    if dtype in (ir.DataType.UINT4, ir.DataType.UINT2):
        return torch.uint8
    if dtype == ir.DataType.BOOL:
        return torch.bool
    np_dtype = np.dtype(dtype.numpy())
    return torch.from_numpy(np.zeros(0, np_dtype)).dtype
