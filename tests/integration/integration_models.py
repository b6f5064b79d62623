"""Tiny float models and realistic calibration data for the integration tests (written to tmp folders).

Models are exported with the TorchScript exporter (``dynamo=False``, fast and deterministic) with a
dynamic batch axis, so the same file can be calibrated at any batch size. Data is image-like (smooth
fields plus edges, from :func:`qdeploy_calib_data.render_procedural`) for the conv net and correlated
Gaussian features for the MLP, because uniform noise exercises activations unlike real inputs do.
(A uniquely named module, not conftest, so importing it cannot collide with another folder's helpers.)
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from qdeploy.evaluate.metrics import sqnr_db
from qdeploy.graph.io import save_model

__all__ = [
    "CONV_COUNT",
    "CONV_HW",
    "MLP_FEATURES",
    "conv_images",
    "count_dq_fed",
    "export_torch",
    "mlp_features",
    "run_ort",
    "sqnr_vs_float",
    "write_conv_net",
    "write_mlp",
    "write_npz",
]

OPSET = 17
CONV_HW = 16
CONV_COUNT = 3
MLP_FEATURES = 16


def export_torch(module, example, path: Path, dynamic_batch: bool = True) -> Path:
    """TorchScript export (opset 17) of ``module`` to ``path`` through qdeploy's checked ``save_model``."""
    import torch

    buf = io.BytesIO()
    axes = {"x": {0: "N"}, "y": {0: "N"}} if dynamic_batch else None
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(module.eval(), (example,), buf, opset_version=OPSET, dynamo=False,
                          input_names=["x"], output_names=["y"], dynamic_axes=axes)
    return save_model(ir.serde.deserialize_model(onnx.load_from_string(buf.getvalue())), path)


def write_conv_net(path: Path, dynamic_batch: bool = True) -> Path:
    """3 named convs (``stem``, ``body``, ``head``) with ReLU and a residual Add; input N x 3 x 16 x 16."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.body = torch.nn.Conv2d(8, 8, 3, padding=1)
            self.head = torch.nn.Conv2d(8, 3, 3, padding=1)

        def forward(self, x):
            a = torch.relu(self.stem(x))
            b = torch.relu(self.body(a) + a)
            return self.head(b)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = Net()
    return export_torch(net, torch.rand(1, 3, CONV_HW, CONV_HW), path, dynamic_batch)


def write_mlp(path: Path) -> Path:
    """Gemm -> ReLU -> MatMul (3-D Linear, constant weight) -> ReLU -> Gemm; input N x 16."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = torch.nn.Linear(MLP_FEATURES, 32)
            self.proj = torch.nn.Linear(32, 32)
            self.fc2 = torch.nn.Linear(32, 8)

        def forward(self, x):
            h = torch.relu(self.fc1(x))
            h = torch.relu(self.proj(h.unsqueeze(1))).squeeze(1)  # MatMul + Add on a 3-D tensor
            return self.fc2(h)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        net = Net()
    return export_torch(net, torch.randn(2, MLP_FEATURES), path)


def conv_images(n: int, seed: int, hw: int = CONV_HW) -> np.ndarray:
    """``n`` image-like NCHW float32 samples in [0, 1] (procedural photos: smooth regions, edges)."""
    from qdeploy_calib_data import render_procedural

    imgs = [render_procedural(seed * 1000 + i, hw, hw) for i in range(n)]
    return (np.stack(imgs).transpose(0, 3, 1, 2) / 255.0).astype(np.float32)


def mlp_features(n: int, seed: int) -> np.ndarray:
    """``n`` correlated Gaussian feature vectors (N x 16, float32)."""
    rng = np.random.default_rng(seed)
    mix = np.random.default_rng(99).normal(0, 0.5, (MLP_FEATURES, MLP_FEATURES))
    return (rng.normal(0, 1, (n, MLP_FEATURES)) @ mix).astype(np.float32)


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    """Save ``arrays`` keyed by input name (the calibration-data format for arrays)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def run_ort(model: Path, x: np.ndarray, level: str = "all") -> np.ndarray:
    """Output ``y`` of ``model`` on ORT CPU (1 thread); ``level="all"`` runs the real fused kernels."""
    from qdeploy.backends import SessionOptions, get_backend

    with get_backend("ort-cpu").open(model, SessionOptions(threads=1, graph_optimization=level)) as s:
        return s.run({"x": x})["y"]


def sqnr_vs_float(float_model: Path, qdq_model: Path, x: np.ndarray) -> float:
    """SQNR (dB) of the QDQ model's output against the float model's on inputs ``x``."""
    return sqnr_db(run_ort(float_model, x), run_ort(qdq_model, x))


def count_dq_fed(model_path: Path, op_type: str = "Conv") -> int:
    """Number of ``op_type`` nodes whose data *and* weight inputs come from DequantizeLinear (quantized).

    Both, because with ORT's output Q->DQ a float conv after a quantized one also reads a DQ'd activation.
    """
    from qdeploy.graph.io import load_model

    def from_dq(value: ir.Value | None) -> bool:
        producer = value.producer() if value is not None else None
        return producer is not None and producer.op_type == "DequantizeLinear"

    graph = load_model(model_path).graph
    return sum(from_dq(n.inputs[0]) and from_dq(n.inputs[1]) for n in graph if n.op_type == op_type)
