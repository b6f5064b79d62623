"""Tiny real ONNX conv models for the profile tests, plus an independent numpy recomputation of them.

Built from ONNX text (``onnx.parser``) with numpy weights, so tests can recompute outputs in float64 numpy
without going through ONNX Runtime or qdeploy. (A uniquely named module, not conftest, so that importing
it from tests cannot collide with another folder's conftest.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from qdeploy.graph.io import save_model

C_IN, C_OUT, K = 3, 4, 3


def conv_weights(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Float32 conv weight (C_OUT, C_IN, K, K) and bias (C_OUT,)."""
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 0.3, (C_OUT, C_IN, K, K)).astype(np.float32),
            rng.normal(0, 0.1, (C_OUT,)).astype(np.float32))


def _floats(a: np.ndarray) -> str:
    return ", ".join(repr(float(v)) for v in a.ravel())


def conv_model_text(w: np.ndarray, b: np.ndarray, input_shape: str = "1, 3, 8, 8") -> str:
    """ONNX text of y = Relu(Conv(x, w, b)) with 'same' padding; ``input_shape`` may use symbols."""
    return f"""
    <ir_version: 8, opset_import: ["" : 17]>
    net (float[{input_shape}] x) => (float[{input_shape.split(',')[0]}, {C_OUT}, ?, ?] y)
    <float[{C_OUT}, {C_IN}, {K}, {K}] w = {{{_floats(w)}}}, float[{C_OUT}] b = {{{_floats(b)}}}>
    {{
        c = Conv <pads = [1, 1, 1, 1], kernel_shape = [{K}, {K}]> (x, w, b)
        y = Relu (c)
    }}
    """


def numpy_conv_relu(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Independent float64 reference of the model: 'same' 3x3 conv + bias + relu."""
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (K, K), axis=(2, 3))  # N, C, H, W, K, K
    y = np.einsum("nchwij,ocij->nohw", win, w.astype(np.float64)) + b.astype(np.float64)[None, :, None, None]
    return np.maximum(y, 0.0)


def write_conv_model(path: Path, w: np.ndarray, b: np.ndarray, input_shape: str = "1, 3, 8, 8") -> Path:
    """Save the conv+relu model with weights ``w``, ``b`` to ``path``."""
    model = ir.serde.deserialize_model(onnx.parser.parse_model(conv_model_text(w, b, input_shape)))
    return save_model(model, path)
