"""Tiny models, data and QDQ variants for the analysis tests (real exports, real ORT sessions).

(A uniquely named module, not conftest, so importing it cannot collide with another test folder's helpers.)
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import onnx_ir as ir

from qdeploy.backends import SessionOptions, get_backend
from qdeploy.graph.passes import ExposeTensorsPass
from qdeploy.quant import get_preset, quantize, tensors_to_calibrate
from qdeploy.types import TensorRange

__all__ = ["HW", "conv_net", "feeds", "minmax_ranges", "qdq", "run"]

HW = 12


def conv_net() -> ir.Model:
    """4 convs with ReLUs and a residual Add, input 1x3x12x12 (8 quantized tensors at W8A8 on ORT)."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.c2 = torch.nn.Conv2d(8, 8, 3, padding=1)
            self.c3 = torch.nn.Conv2d(8, 8, 3, padding=1)
            self.head = torch.nn.Conv2d(8, 3, 3, padding=1)

        def forward(self, x):
            a = torch.relu(self.c1(x))
            b = torch.relu(self.c2(a)) + a
            return self.head(torch.relu(self.c3(b)))

    torch.manual_seed(0)
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Net().eval(),
            (torch.rand(1, 3, HW, HW),),
            buf,
            opset_version=17,
            dynamo=False,
            input_names=["x"],
            output_names=["y"],
        )
    return ir.serde.deserialize_model(onnx.load_from_string(buf.getvalue()))


def feeds(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Smooth image-like inputs in [0, 1] (a gradient plus noise), one per sample."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, HW, dtype=np.float32)
    out = []
    for _ in range(n):
        base = rng.uniform(0.2, 0.8) * ramp[None, :] + rng.uniform(0.0, 0.3) * ramp[:, None]
        x = np.clip(base[None, None] + 0.1 * rng.standard_normal((1, 3, HW, HW)), 0, 1)
        out.append({"x": x.astype(np.float32)})
    return out


def run(model: ir.Model, feed: dict[str, np.ndarray], level: str = "disable") -> dict[str, np.ndarray]:
    """One ORT run (plain Q/DQ math by default)."""
    return get_backend("ort-cpu").open(model, SessionOptions(threads=1, graph_optimization=level)).run(feed)


def minmax_ranges(
    model: ir.Model, names: list[str], data: list[dict[str, np.ndarray]]
) -> dict[str, TensorRange]:
    """Min/max ranges of ``names`` over ``data``."""
    exposed = ExposeTensorsPass(names)(model).model
    outs = [run(exposed, f, "all") for f in data]
    ranges = {}
    for name in names:
        lo, hi = float(min(o[name].min() for o in outs)), float(max(o[name].max() for o in outs))
        ranges[name] = TensorRange(name, lo, hi, lo, hi, 0.0, "minmax", len(outs))
    return ranges


def qdq(
    model: ir.Model, bits: int, calib: list[dict[str, np.ndarray]]
) -> tuple[ir.Model, dict[str, TensorRange]]:
    """The ORT preset at ``bits`` (weights and activations; full_integer off) and its min/max ranges."""
    config = get_preset("ort-cpu-int8", bits=bits, full_integer=False)
    ranges = minmax_ranges(model, tensors_to_calibrate(model, config), calib)
    return quantize(model, ranges, config), ranges
