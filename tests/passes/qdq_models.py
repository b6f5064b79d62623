"""Tiny models and helpers shared by the pass and quantization tests (real ORT sessions, no mocks)."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import onnx_ir as ir

from qdeploy.backends import SessionOptions, get_backend
from qdeploy.graph.passes import ExposeTensorsPass
from qdeploy.types import TensorRange

__all__ = [
    "OPSET",
    "check_onnx",
    "conv_net",
    "convtranspose_net",
    "float_op_net",
    "from_text",
    "minmax_ranges",
    "mlp_net",
    "op_types",
    "run",
    "two_consumer_net",
]

OPSET = 17


def export(module, example, names=("x",)) -> ir.Model:
    """torch.onnx.export (TorchScript exporter, opset 17) straight into the IR."""
    import torch

    buf = io.BytesIO()
    args = example if isinstance(example, tuple) else (example,)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is fine for tests
        torch.onnx.export(module.eval(), args, buf, opset_version=OPSET, dynamo=False,
                          input_names=list(names), output_names=["y"])
    return ir.serde.deserialize_model(onnx.load_from_string(buf.getvalue()))


def from_text(text: str) -> ir.Model:
    """An IR model from ONNX textual syntax (checked)."""
    proto = onnx.parser.parse_model(text)
    onnx.checker.check_model(proto)
    return ir.serde.deserialize_model(proto)


def _seeded(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def conv_net(channels: int = 8) -> ir.Model:
    """3 convs with ReLU and a residual Add (input 1x3x12x12)."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = torch.nn.Conv2d(3, channels, 3, padding=1)
            self.c2 = torch.nn.Conv2d(channels, channels, 3, padding=1)
            self.head = torch.nn.Conv2d(channels, 3, 3, padding=1)

        def forward(self, x):
            a = torch.relu(self.c1(x))
            b = self.c2(a) + a
            return self.head(torch.relu(b))

    _seeded(0)
    return export(Net(), torch.rand(1, 3, 12, 12))


def mlp_net() -> ir.Model:
    """Gemm (Linear on 2-D), MatMul with constant weight (Linear on 3-D), activation x activation MatMul."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(16, 16)
            self.proj = torch.nn.Linear(16, 8, bias=False)

        def forward(self, x):
            h = torch.relu(self.fc(x))  # Gemm, transB=1
            t = self.proj(h.unsqueeze(0))  # MatMul with constant [16, 8] weight
            return torch.matmul(t, t.transpose(1, 2))  # MatMul of two activations

    _seeded(1)
    return export(Net(), torch.randn(4, 16))


def convtranspose_net(groups: int = 1) -> ir.Model:
    """Conv -> ReLU -> ConvTranspose (stride 2) with ``groups``."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.up = torch.nn.ConvTranspose2d(4, 6, 2, stride=2, groups=groups)

        def forward(self, x):
            return self.up(torch.relu(self.c(x)))

    _seeded(2)
    return export(Net(), torch.rand(1, 3, 8, 8))


def float_op_net() -> ir.Model:
    """Conv -> Sigmoid -> Resize (nearest x2) -> Conv: Sigmoid and Resize are not quantizable ops."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.c2 = torch.nn.Conv2d(4, 2, 3, padding=1)

        def forward(self, x):
            h = torch.nn.functional.interpolate(torch.sigmoid(self.c1(x)), scale_factor=2.0, mode="nearest")
            return self.c2(h)

    _seeded(3)
    return export(Net(), torch.rand(1, 3, 8, 8))


def two_consumer_net() -> ir.Model:
    """One tensor (the ReLU output) feeding two convs whose outputs are added."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c0 = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.a = torch.nn.Conv2d(4, 4, 1)
            self.b = torch.nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            r = torch.relu(self.c0(x))
            return self.a(r) + self.b(r)

    _seeded(4)
    return export(Net(), torch.rand(1, 3, 8, 8))


def run(model: ir.Model | str, feeds: dict[str, np.ndarray], level: str = "disable",
        optimized_path: str | None = None) -> dict[str, np.ndarray]:
    """Run ``model`` on ORT CPU (1 thread) at optimization ``level``."""
    options = SessionOptions(threads=1, graph_optimization=level, optimized_model_path=optimized_path)
    with get_backend("ort-cpu").open(model, options) as session:
        return session.run(feeds)


def minmax_ranges(model: ir.Model, names: list[str],
                  feeds: list[dict[str, np.ndarray]]) -> dict[str, TensorRange]:
    """Min/max ranges of ``names`` over ``feeds`` (float model run with the tensors exposed)."""
    exposed = ExposeTensorsPass(names)(model).model
    outs = [run(exposed, f) for f in feeds]
    ranges = {}
    for name in names:
        lo = float(min(o[name].min() for o in outs))
        hi = float(max(o[name].max() for o in outs))
        ranges[name] = TensorRange(name, lo, hi, lo, hi, 0.0, "minmax", len(outs))
    return ranges


def check_onnx(model: ir.Model) -> None:
    """Serialize and run the full ONNX checker (raises on failure)."""
    onnx.checker.check_model(ir.serde.serialize_model(model), full_check=True)


def op_types(model: ir.Model | onnx.ModelProto) -> list[str]:
    """Op types in graph order."""
    nodes = model.graph.node if isinstance(model, onnx.ModelProto) else model.graph
    return [n.op_type for n in nodes]
