"""``TorchGraph``: run an onnx_ir model with PyTorch ops, differentiably, on CPU or CUDA.

Why an interpreter and not a PyTorch re-implementation of the network: refinement such as DQC must work
for *any* exported model, and the QDQ graph is the only description every model shares. Executing the
graph's own nodes also means what is optimised is what ONNX Runtime will run.

Initializers become torch tensors once (``overrides`` replace them per call, which is how a caller makes
scales or weights learnable without touching the graph); nodes run in topological order and each value
is dropped as soon as its last consumer has run (unless requested), so memory stays near a framework's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from qdeploy.errors import InputError, UnsupportedModelError
from qdeploy.torchexec.base import OPS, OpCall, torch_dtype

if TYPE_CHECKING:
    import torch

__all__ = ["TorchGraph", "missing_ops"]


def _load_ops() -> None:
    """Import the op modules (they register into :data:`OPS` on import; heavy torch import stays lazy)."""
    from qdeploy.torchexec import ops_math, ops_quant, ops_shape  # noqa: F401


def missing_ops(model: ir.Model) -> list[str]:
    """Op types of ``model`` the interpreter cannot run (sorted; custom domains count as missing)."""
    _load_ops()
    return sorted({f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
                   for n in model.graph if n.domain not in ("", "ai.onnx") or n.op_type not in OPS})


def _topological(graph: ir.Graph) -> list[ir.Node]:
    """Nodes with every producer before its consumers (Kahn's algorithm, stable in graph order)."""
    nodes = list(graph)
    index = {id(n): i for i, n in enumerate(nodes)}
    pending = [sum(1 for v in n.inputs if v is not None and v.producer() is not None) for n in nodes]
    ready = [i for i, p in enumerate(pending) if p == 0]
    order: list[ir.Node] = []
    while ready:
        ready.sort(reverse=True)
        node = nodes[ready.pop()]
        order.append(node)
        for out in node.outputs:
            for use in out.uses():
                j = index.get(id(use.node))
                if j is not None:
                    pending[j] -= 1
                    if pending[j] == 0:
                        ready.append(j)
    if len(order) != len(nodes):
        raise UnsupportedModelError("the graph has a cycle or nodes reading values no node produces",
                                    "check the model with `onnx.checker` and re-export it")
    return order


def _to_torch(array: np.ndarray, dtype: ir.DataType, device: torch.device) -> torch.Tensor:
    import torch

    if dtype in (ir.DataType.INT4, ir.DataType.UINT4, ir.DataType.INT2, ir.DataType.UINT2):
        array = array.astype(np.int8 if dtype in (ir.DataType.INT4, ir.DataType.INT2) else np.uint8)
    elif dtype in (ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE):
        array = array.astype(np.float32)  # computed in float32: fp16 graphs are not a refinement target
    return torch.from_numpy(np.array(array, copy=True)).to(device)


class TorchGraph:
    """A compiled view of one model: initializers on ``device`` plus the node order.

    Raises:
        UnsupportedModelError: the model has ops without a torch implementation (all are named).
    """

    def __init__(self, model: ir.Model, device: str | torch.device = "cpu") -> None:
        import torch

        missing = missing_ops(model)
        if missing:
            raise UnsupportedModelError(
                f"the torch executor cannot run op(s) {', '.join(missing)}",
                "add an implementation to qdeploy/torchexec (OPS.register), or export the model so that it "
                "avoids these ops (e.g. constant-fold with onnxsim)")
        self.model = model
        self.device = torch.device(device)
        self.opset = model.opset_imports.get("", model.graph.opset_imports.get("", 13))
        self.nodes = _topological(model.graph)
        self.input_names = [v.name for v in model.graph.inputs]
        self.output_names = [v.name for v in model.graph.outputs]
        self.initializers: dict[str, torch.Tensor] = {
            name: _to_torch(value.const_value.numpy(), value.const_value.dtype, self.device)
            for name, value in model.graph.initializers.items()
            if value.const_value is not None and name not in self.input_names}
        self._last_use = self._last_uses()

    def _last_uses(self) -> dict[str, int]:
        last: dict[str, int] = {}
        for i, node in enumerate(self.nodes):
            for value in node.inputs:
                if value is not None and value.name:
                    last[value.name] = i
        return last

    def run(self, feeds: Mapping[str, torch.Tensor | np.ndarray],
            overrides: Mapping[str, torch.Tensor] | None = None,
            keep: Iterable[str] = ()) -> dict[str, torch.Tensor]:
        """Outputs (graph outputs plus every name in ``keep``) for ``feeds``.

        Args:
            feeds: One array/tensor per graph input (moved to the graph's device).
            overrides: Replacement tensors for initializers (e.g. learnable scales), by name.
            keep: Intermediate value names to return as well (e.g. features for a distillation loss).
        """
        env = self._initial_env(feeds, overrides or {})
        wanted = set(self.output_names) | set(keep)
        unknown = wanted - set(env) - {o.name for n in self.nodes for o in n.outputs}
        if unknown:
            raise InputError(f"no value named {sorted(unknown)[0]!r} in the model", "check the tensor names")
        for i, node in enumerate(self.nodes):
            inputs = [env[v.name] if v is not None and v.name else None for v in node.inputs]
            outputs = OPS.get(node.op_type)(OpCall(node, inputs, self.opset))
            for value, out in zip(node.outputs, outputs, strict=False):
                env[value.name] = out
            for value in node.inputs:
                if value is not None and self._last_use.get(value.name) == i and value.name not in wanted:
                    env.pop(value.name, None)
        return {name: self._output(name, env[name]) for name in [*self.output_names, *keep]}

    def _initial_env(self, feeds: Mapping[str, torch.Tensor | np.ndarray],
                     overrides: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        import torch

        missing = [n for n in self.input_names if n not in feeds and n not in self.initializers]
        if missing:
            raise InputError(f"no input given for {missing}", f"feed every model input: {self.input_names}")
        env = dict(self.initializers)
        env.update(overrides)
        for name, array in feeds.items():
            tensor = array if isinstance(array, torch.Tensor) else torch.from_numpy(np.asarray(array))
            env[name] = tensor.to(self.device)
        return env

    def _output(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """Graph outputs declared as integers (a Q at the end) are cast back from the float carrier."""
        value = next((v for v in self.model.graph.outputs if v.name == name), None)
        integer = value is not None and value.dtype is not None and not value.dtype.is_floating_point()
        if integer and tensor.is_floating_point():
            return torch_round_cast(tensor, torch_dtype(value.dtype))
        return tensor

    def run_numpy(self, feeds: Mapping[str, np.ndarray], keep: Sequence[str] = ()) -> dict[str, np.ndarray]:
        """:meth:`run` without gradients, returning numpy arrays (for checks against ONNX Runtime)."""
        import torch

        with torch.no_grad():
            return {k: v.detach().cpu().numpy() for k, v in self.run(feeds, keep=keep).items()}


def torch_round_cast(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Round a float tensor holding integers and cast it to the integer ``dtype``."""
    import torch

    return torch.round(tensor).to(dtype)
