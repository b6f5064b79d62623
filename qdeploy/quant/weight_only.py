"""Weight-only block-wise quantization (INT4 by default): ``quantize_weights_only(model, config)``.

Why weight-only: for MatMul-heavy models (transformers, MLPs) on memory-bound hardware the weights, not
the activations, dominate traffic and file size; INT4 weights with float activations need no calibration
data and cost little accuracy when each block of 32-128 weights gets its own scale. The output is the
opset-21 ``DequantizeLinear(block_size)`` form that TensorRT's INT4 weight-only path and ONNX Runtime's
``MatMulNBits`` fusion consume (see :mod:`qdeploy.graph.passes.weight_only_int4`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_ir as ir

from qdeploy.errors import UnsupportedModelError
from qdeploy.graph.passes import CleanupGraphPass, NameGraphPass
from qdeploy.graph.passes.weight_only_int4 import WEIGHT_ONLY_OPSET, BlockwiseWeightQuantPass
from qdeploy.graph.select import NodeFilter

__all__ = [
    "CLIP_CANDIDATES",
    "METADATA_KEY",
    "WeightOnlyConfig",
    "blockwise_quantize",
    "quantize_weights_only",
    "upgrade_opset",
    "weight_only_summary",
]

METADATA_KEY = "qdeploy.weight_only"

#: Fractions of each block's max |w| tried by the clip search (1.0 = plain max scaling).
CLIP_CANDIDATES = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7)

#: Block sizes TensorRT's INT4 weight-only kernels and ORT's MatMulNBits accept (powers of two >= 16).
_BLOCK_SIZES = (16, 32, 64, 128, 256)
_WEIGHT_ONLY_OPS = ("MatMul", "Gemm")


@dataclass(frozen=True)
class WeightOnlyConfig:
    """How to quantize MatMul/Gemm weights block-wise (activations stay float).

    Attributes:
        bits: 4 (INT4/UINT4 storage, the point of this mode) or 8 (INT8/UINT8, block-wise).
        block_size: Weights per scale along the reduction axis K; a power of two in 16..256 because
            that is what TensorRT's and ORT's INT4 kernels take. Smaller = more accurate, larger file.
        symmetric: Zero-point-free codes (INT4, TensorRT's requirement); False stores UINT4 codes plus
            a per-block UINT4 zero point (ORT's MatMulNBits default form, better for skewed blocks).
        op_types: Subset of ("MatMul", "Gemm").
        include_nodes: Node-name regexes (``re.search``); empty selects every node.
        exclude_nodes: Node-name regexes to keep float (e.g. a final projection).
        clip_search: Per block and column, pick the clip of max |w| among :data:`CLIP_CANDIDATES`
            that minimises the squared weight error: rounding error shrinks with the step, and one
            outlier no longer stretches the grid of the other weights in its block.
    """

    bits: int = 4
    block_size: int = 32
    symmetric: bool = True
    op_types: tuple[str, ...] = _WEIGHT_ONLY_OPS
    include_nodes: tuple[str, ...] = ()
    exclude_nodes: tuple[str, ...] = ()
    clip_search: bool = True

    def __post_init__(self) -> None:
        for name in ("op_types", "include_nodes", "exclude_nodes"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise ValueError(f"{name} must be a sequence of strings, got the string {value!r}")
            object.__setattr__(self, name, tuple(value))
        if self.bits not in (4, 8):
            raise ValueError(f"bits must be 4 or 8, got {self.bits}")
        if self.block_size not in _BLOCK_SIZES:
            raise ValueError(f"block_size must be one of {_BLOCK_SIZES}, got {self.block_size}")
        unknown = sorted(set(self.op_types) - set(_WEIGHT_ONLY_OPS))
        if unknown or not self.op_types:
            raise ValueError(
                f"op_types must be a non-empty subset of {_WEIGHT_ONLY_OPS}, got {self.op_types}")
        self.node_filter  # noqa: B018 (validates the regexes now, not at quantize time)

    @property
    def node_filter(self) -> NodeFilter:
        """The node selection as the passes take it."""
        return NodeFilter(self.op_types, self.include_nodes, self.exclude_nodes)

    @property
    def storage(self) -> ir.DataType:
        """ONNX storage type of the codes (and zero points)."""
        if self.bits == 4:
            return ir.DataType.INT4 if self.symmetric else ir.DataType.UINT4
        return ir.DataType.INT8 if self.symmetric else ir.DataType.UINT8

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (stored in the model's metadata)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def _blocks(w: np.ndarray, block_size: int) -> np.ndarray:
    """[K, N] -> [nb, B, N], zero-padding a partial last block (zeros never raise a block's max)."""
    k, n = w.shape
    nb = -(-k // block_size)
    padded = np.zeros((nb * block_size, n), np.float32)
    padded[:k] = w
    return padded.reshape(nb, block_size, n)


def _grid(lo: np.ndarray, hi: np.ndarray, bits: int, symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    """(scale, zero point) per block for the range [lo, hi] (both [nb, 1, N])."""
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        scale = np.maximum(np.abs(lo), np.abs(hi)) / qmax
        zero = np.zeros_like(scale)
    else:
        qmax = 2**bits - 1
        lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
        scale = (hi - lo) / qmax
        zero = np.clip(np.round(-lo / np.where(scale > 0, scale, 1.0)), 0, qmax)
    return np.where(scale > 0, scale, 1.0).astype(np.float32), zero


def _codes(blocks: np.ndarray, scale: np.ndarray, zero: np.ndarray, bits: int, symmetric: bool) -> np.ndarray:
    qmin, qmax = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)
    return np.clip(np.round(blocks / scale) + zero, qmin, qmax)


def blockwise_quantize(w: np.ndarray, block_size: int, bits: int = 4, symmetric: bool = True,
                       clip_search: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Quantize a [K, N] weight in blocks of ``block_size`` rows per column.

    Returns (codes [K, N] int8 or uint8, scale [ceil(K/B), N] float32, zero point [ceil(K/B), N] or None
    when symmetric). Symmetric scale = max|w| / (2^(bits-1) - 1) (-8 stays reachable only by clipping);
    asymmetric scale = (max - min) / (2^bits - 1) over a range that includes 0. With ``clip_search`` the
    range is shrunk by the candidate in :data:`CLIP_CANDIDATES` minimising each block-column's error.
    """
    if w.ndim != 2:
        raise ValueError(f"expected a 2-D [K, N] weight, got shape {w.shape}")
    k = w.shape[0]
    blocks = _blocks(w.astype(np.float32), block_size)
    lo, hi = blocks.min(axis=1, keepdims=True), blocks.max(axis=1, keepdims=True)
    best_err = np.full(lo.shape, np.inf, np.float64)
    scale = zero = np.empty(0)
    for frac in CLIP_CANDIDATES if clip_search else (1.0,):
        s, z = _grid(lo * frac, hi * frac, bits, symmetric)
        q = _codes(blocks, s, z, bits, symmetric)
        err = np.sum(((q - z) * s - blocks) ** 2, axis=1, keepdims=True)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        scale = s if scale.size == 0 else np.where(better, s, scale)
        zero = z if zero.size == 0 else np.where(better, z, zero)
    codes = _codes(blocks, scale, zero, bits, symmetric).reshape(-1, w.shape[1])[:k]
    int_type = np.int8 if symmetric else np.uint8
    return (codes.astype(int_type), scale[:, 0, :].astype(np.float32),
            None if symmetric else zero[:, 0, :].astype(int_type))


def upgrade_opset(model: ir.Model, version: int = WEIGHT_ONLY_OPSET) -> None:
    """Raise the default-domain opset to ``version`` in place (onnxscript's converter adapts the ops).

    INT4 types also need IR version >= 10, which is set too. Raises UnsupportedModelError when the
    converter cannot adapt an op, naming the error.
    """
    from onnxscript.version_converter import convert_version

    if model.opset_imports.get("", 0) < version:
        try:
            convert_version(model, version, fallback=False)
        except Exception as exc:  # the converter raises several internal types
            raise UnsupportedModelError(
                f"cannot upgrade the model from opset {model.opset_imports.get('', 0)} to {version}: {exc}",
                f"re-export the model with opset {version} (`qdeploy export --opset {version}`)",
            ) from None
        model.opset_imports[""] = version
        model.graph.opset_imports[""] = version
    model.ir_version = max(model.ir_version or 0, 10)


def quantize_weights_only(model: ir.Model, config: WeightOnlyConfig) -> ir.Model:
    """A copy of ``model`` with selected MatMul/Gemm weights stored block-wise in ``config.bits`` bits.

    No calibration data: only weights change. The opset is raised to 21 where lower. What was quantized
    and what was left alone (with reasons) is stored in the metadata; read it with
    :func:`weight_only_summary`. Raises UnsupportedModelError when nothing could be quantized.
    """
    out = model.clone()
    upgrade_opset(out)
    NameGraphPass()(out)
    CleanupGraphPass()(out)
    quantizer = _quantizer(config)
    rewrite = BlockwiseWeightQuantPass(config.node_filter, quantizer, config.block_size, config.storage)
    rewrite(out)
    CleanupGraphPass()(out)
    decisions = rewrite.decisions
    done = [d for d in decisions if d.quantized]
    if not done:
        reasons = "; ".join(f"{d.node}: {d.reason}" for d in decisions[:3]) or "no MatMul/Gemm selected"
        raise UnsupportedModelError(
            f"no weight could be quantized ({reasons})",
            "weight-only quantization needs MatMul/Gemm nodes with constant 2-D float weights; check "
            "--include/--exclude patterns",
        )
    out.metadata_props[METADATA_KEY] = json.dumps({
        "config": config.to_dict(),
        "quantized": [d.node for d in done],
        "skipped": {d.node: d.reason for d in decisions if not d.quantized},
    }, sort_keys=True)
    return out


def _quantizer(config: WeightOnlyConfig):
    def quantize(w: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        return blockwise_quantize(w, block_size, config.bits, config.symmetric, config.clip_search)

    return quantize


def weight_only_summary(model: ir.Model) -> dict[str, Any]:
    """What :func:`quantize_weights_only` did (config, quantized nodes, skipped nodes with reasons).

    Empty dict for a model it did not produce.
    """
    text = model.metadata_props.get(METADATA_KEY)
    return json.loads(text) if text else {}
