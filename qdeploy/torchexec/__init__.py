"""A differentiable PyTorch interpreter for onnx_ir models (float and QDQ graphs).

Used by refinement passes (``qdeploy.refine``) that optimise quantization parameters *on the exported
graph itself*, so they work for any model the exporter produced, not only for architectures qdeploy knows.
Importing this package does not import torch; building a :class:`TorchGraph` does.
"""

from __future__ import annotations

from qdeploy.torchexec.base import OPS, OpCall, OpImpl
from qdeploy.torchexec.interpreter import TorchGraph, missing_ops

__all__ = ["OPS", "OpCall", "OpImpl", "TorchGraph", "missing_ops"]
