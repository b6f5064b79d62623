"""Learnable quantization parameters and the initializer values they imply.

Parametrisation, and why:

- scales as ``initial * exp(t)`` (t starts at 0): always positive, and Adam's step is then a *relative*
  change, so one learning rate suits scales that differ by orders of magnitude (weights ~1e-3, pixels ~1);
- zero points as continuous values rounded straight-through and clamped to the storage type, because a
  QDQ file can only hold integers;
- weights are re-quantized from the *float* weights with the learned scale on every step,
  ``q = clamp(round(w / s) + zp, grid)``: a scale is a pair of clipping bounds
  ``[(qmin - zp) s, (qmax - zp) s]``, as in 2DQuant, so shrinking it clips outliers and refines the grid
  instead of stretching frozen integers (which would only rescale the layer);
- grid-Clip bounds and int32 biases are *functions* of the scales, never free parameters, so the
  written graph stays a valid QDQ graph that any runtime reads the same way.

:meth:`LearnableQDQ.overrides` gives the initializer replacements for
:class:`qdeploy.torchexec.TorchGraph`; :meth:`LearnableQDQ.arrays` the same values as numpy arrays in
the original dtypes, for writing back. Both come from one function, so what was optimised is what is written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from qdeploy.refine.quantizers import Quantizers, WeightQuantizer
from qdeploy.torchexec.ops_quant import INTEGER_LIMITS, round_ste

if TYPE_CHECKING:
    import torch

__all__ = ["LearnableQDQ"]

_INT32 = INTEGER_LIMITS[ir.DataType.INT32]


class LearnableQDQ:
    """Parameters for every quantizer of one graph, on ``device``."""

    def __init__(self, model: ir.Model, quantizers: Quantizers, device: torch.device) -> None:
        import torch

        self.quantizers = quantizers
        self.initial = {n: v.const_value.numpy() for n, v in model.graph.initializers.items()
                        if v.const_value is not None}
        self.dtypes = {n: v.const_value.dtype for n, v in model.graph.initializers.items()
                       if v.const_value is not None}

        def param(array: np.ndarray) -> torch.nn.Parameter:
            return torch.nn.Parameter(torch.tensor(array.astype(np.float32), device=device))

        scales = list(quantizers.activations) + [w.scale for w in quantizers.weights.values()]
        # scale = initial * exp(t), t starts at 0: exactly the calibrated scale before the first step
        self.log_scales = {name: param(np.zeros_like(self.initial[name], np.float32))
                           for name in dict.fromkeys(scales)}
        zps = [a.zero_point for a in quantizers.activations.values() if a.learn_zero_point]
        zps += [w.zero_point for w in quantizers.weights.values() if w.learn_zero_point]
        self.zero_points = {name: param(self.initial[name]) for name in dict.fromkeys(zps)}
        self.float_weights = {name: torch.tensor(w.float_weight, device=device)
                              for name, w in quantizers.weights.items()}
        self.float_biases = {b.bias: torch.tensor(b.float_bias, device=device) for b in quantizers.biases}
        self.device = device

    def parameters(self) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
        """``(scale parameters, zero-point parameters)``: separate groups, zero points move in codes."""
        return list(self.log_scales.values()), list(self.zero_points.values())

    def _fixed(self, name: str) -> torch.Tensor:
        import torch

        return torch.tensor(self.initial[name].astype(np.float32), device=self.device)

    def _scale(self, name: str) -> torch.Tensor:
        if name not in self.log_scales:
            return self._fixed(name)
        return self._fixed(name) * self.log_scales[name].exp()

    def _zero_point(self, name: str | None, storage: ir.DataType) -> torch.Tensor | None:
        import torch

        if name is None:
            return None
        if name not in self.zero_points:
            return self._fixed(name)
        return torch.clamp(round_ste(self.zero_points[name]), *INTEGER_LIMITS[storage])

    def overrides(self) -> dict[str, torch.Tensor]:
        """Initializer name -> current value (float tensors; integers are held as rounded floats)."""
        out: dict[str, torch.Tensor] = {name: self._scale(name) for name in self.log_scales}
        for act in self.quantizers.activations.values():
            zp = self._zero_point(act.zero_point, act.storage)
            if act.zero_point is not None and act.zero_point in self.zero_points:
                out[act.zero_point] = zp
            scale, offset = out[act.scale].reshape(()), (zp.reshape(()) if zp is not None else 0.0)
            for lo, hi, qlo, qhi in act.clips:
                out[lo], out[hi] = (qlo - offset) * scale, (qhi - offset) * scale
        for w in self.quantizers.weights.values():
            out.update(self._weight(w, out[w.scale]))
        for b in self.quantizers.biases:
            scale = (out.get(b.act_scale, self._scale(b.act_scale)).reshape(())
                     * out.get(b.weight_scale, self._scale(b.weight_scale)))
            scale = scale.reshape(self.initial[b.scale].shape)
            out[b.scale] = scale
            out[b.bias] = self._int32(round_ste(self.float_biases[b.bias] / scale.reshape(-1)))
        return out

    @staticmethod
    def _int32(x: torch.Tensor) -> torch.Tensor:
        import torch

        return torch.clamp(x, *_INT32)

    def _weight(self, w: WeightQuantizer, scale: torch.Tensor) -> dict[str, torch.Tensor]:
        import torch

        weight = self.float_weights[w.weight]
        shape = [1] * weight.dim()
        if w.axis is not None:
            shape[w.axis] = -1
        zp = self._zero_point(w.zero_point, w.storage)
        q = weight / scale.reshape(shape if w.axis is not None else ())
        q = round_ste(q) + (zp.reshape(shape if w.axis is not None else ()) if zp is not None else 0.0)
        out = {w.weight: torch.clamp(q, *w.grid)}
        if w.zero_point is not None and w.zero_point in self.zero_points:
            out[w.zero_point] = zp
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        """:meth:`overrides` as numpy arrays in each initializer's original dtype and shape."""
        import torch

        with torch.no_grad():
            values = self.overrides()
        out = {}
        for name, tensor in values.items():
            array = tensor.detach().cpu().numpy().reshape(self.initial[name].shape)
            dtype = self.dtypes[name]
            if dtype.is_floating_point():
                out[name] = array.astype(self.initial[name].dtype)
            else:
                out[name] = np.rint(array).astype(dtype.numpy())
        return out
