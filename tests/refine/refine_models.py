"""Tiny exported SR models (ABPN, SwinIR) and calibrated QDQ versions for the refine/torchexec tests.

Exported with the dynamo exporter (what ``qdeploy export`` uses) at static 1x3xHxW, so the graphs hold
the ops real exports hold (windowed attention: Reshape/Transpose/Slice/Gather/Pad/Softmax/Erf...).
(A uniquely named module, not conftest, so importing it cannot collide with other folders' helpers.)
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import onnx_ir as ir

from qdeploy.calib.base import make_observer
from qdeploy.calib.collect import collect_ranges
from qdeploy.quant import quantize, tensors_to_calibrate
from qdeploy.quant.config import QuantConfig
from qdeploy.types import QuantTarget

__all__ = ["ABPN_SHAPE", "SWIN_SHAPE", "W4A4", "export_abpn", "export_swin", "qdq", "samples"]

ABPN_SHAPE = (1, 3, 8, 8)  # pixels in [0, 255]
SWIN_SHAPE = (1, 3, 16, 16)  # RGB in [0, 1]
W4A4 = QuantConfig(weight_bits=4, activation=QuantTarget(4, False))


def _export(module: object, shape: tuple[int, ...], scale: float, path: Path) -> ir.Model:
    import torch

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        example = (torch.rand(shape) * scale,)
        program = torch.onnx.export(module.eval(), example, dynamo=True, opset_version=18, optimize=True,
                                    verbose=False)
    program.save(str(path))
    return ir.load(str(path))


def export_abpn(path: Path) -> ir.Model:
    """ABPN x3 with 8 features, seeded random weights."""
    import torch
    from qdeploy_models.abpn import ABPN

    torch.manual_seed(0)
    return _export(ABPN(features=8), ABPN_SHAPE, 255.0, path)


def export_swin(path: Path) -> ir.Model:
    """A one-stage SwinIR x2 (dim 12, 2 blocks, 2 heads, window 4), seeded random weights."""
    import torch
    from qdeploy_models.swinir import SwinIR

    torch.manual_seed(0)
    return _export(SwinIR(scale=2, dim=12, depths=(2,), heads=2, window=4), SWIN_SHAPE, 1.0, path)


def samples(model: ir.Model, shape: tuple[int, ...], scale: float, count: int, seed: int) -> list[dict]:
    """``count`` smooth image-like feeds (a random low-resolution field upsampled plus noise)."""
    rng = np.random.default_rng(seed)
    name = model.graph.inputs[0].name
    out = []
    for _ in range(count):
        coarse = rng.random((*shape[:2], shape[2] // 4, shape[3] // 4))
        smooth = np.kron(coarse, np.ones((4, 4)))
        image = np.clip(smooth + 0.1 * rng.standard_normal(shape), 0, 1)
        out.append({name: (image * scale).astype(np.float32)})
    return out


def qdq(model: ir.Model, config: QuantConfig, feeds: list[dict]) -> ir.Model:
    """``model`` quantized with min/max ranges observed on ``feeds``."""
    names = tensors_to_calibrate(model, config)
    ranges = collect_ranges(model, names, lambda: feeds, lambda: make_observer("minmax"), config.activation)
    return quantize(model, ranges, config)
