"""Scale / zero-point arithmetic for QDQ quantization (pure numpy, no graph code).

Everything here follows the ONNX ``QuantizeLinear`` definition
``q = saturate(round_half_even(x / scale) + zp)`` and ``DequantizeLinear`` ``x' = (q - zp) * scale``, so
the numbers computed here are exactly what ONNX Runtime or TensorRT will use. Keeping the math free of
graph code means it can be unit-tested with plain arrays and reused by tools that only want to inspect
a calibration cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qdeploy.types import QuantTarget

__all__ = [
    "INT_DTYPES",
    "MIN_SCALE",
    "QParams",
    "activation_qparams",
    "dequantize_array",
    "int_range",
    "quantize_array",
    "quantize_bias",
    "quantize_weight",
]

#: Smallest scale ever emitted. A constant tensor (range [0, 0]) would otherwise give scale 0, which makes
#: ``x / scale`` undefined in QuantizeLinear; 1e-8 keeps any float32 activation representable without
#: overflow in ``x / scale`` for |x| up to ~1e30.
MIN_SCALE = 1e-8

#: Storage dtypes the QDQ passes emit (8-bit only: opset 13 QuantizeLinear supports no others; narrower
#: grids live inside them, see :attr:`QParams.qmin`).
INT_DTYPES = {"uint8": np.uint8, "int8": np.int8}


@dataclass(frozen=True)
class QParams:
    """Quantization parameters of one tensor: float32 ``scale``, integer ``zero_point`` and optional ``axis``.

    Per-tensor parameters are 0-d arrays and ``axis`` is None; per-channel parameters are 1-D arrays with
    one entry per slice along ``axis`` (what ``DequantizeLinear`` opset 13 expects).

    ``qmin``/``qmax`` are saturation limits narrower than the storage dtype's, set for sub-8-bit grids
    (e.g. 4 bits in uint8: [0, 15]); None means the dtype's limits. ``QuantizeLinear`` saturates only at
    the dtype's limits, so the activation QDQ pass reads these to saturate sub-8-bit tensors on their grid.
    """

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None = None
    qmin: int | None = None
    qmax: int | None = None

    @property
    def dtype(self) -> str:
        """Storage dtype name of the quantized tensor ("uint8", "int8" or "int32")."""
        return str(self.zero_point.dtype)


def int_range(bits: int, dtype: str, symmetric: bool) -> tuple[int, int]:
    """Integer grid [qmin, qmax] for ``bits`` stored in ``dtype``.

    Symmetric signed grids drop the most negative code so that zero sits in the middle (8 bits: [-127, 127],
    7 bits: [-63, 63]); unsigned symmetric grids are centred on 2**(bits-1) (8 bits: [1, 255], zp 128).
    Asymmetric grids use every code: int8 [-128, 127], uint8 [0, 255], 7-bit uint8 [0, 127].
    """
    if dtype not in INT_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(INT_DTYPES)}, got {dtype!r}")
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be in 2..8 for 8-bit storage, got {bits}")
    if dtype == "int8":
        half = 2 ** (bits - 1)
        return (-half + 1, half - 1) if symmetric else (-half, half - 1)
    top = 2**bits - 1
    if symmetric:
        mid = 2 ** (bits - 1)
        return mid - (mid - 1), mid + (mid - 1)
    return 0, top


def activation_qparams(lo: float, hi: float, target: QuantTarget, dtype: str) -> QParams:
    """Per-tensor parameters for an activation calibrated to [lo, hi].

    Asymmetric (ORT uint8): the range is widened to include 0 (so that zero padding and ReLU zeros are
    exact), ``scale = (hi - lo) / (qmax - qmin)`` and ``zp = round(qmin - lo / scale)`` clamped to the grid.
    Example: [-1, 3] -> scale 4/255 = 0.015686, zp = round(1 / 0.015686) = 64.

    Symmetric (TensorRT int8): ``scale = max(|lo|, |hi|) / qmax`` and zp 0 (uint8 symmetric: zp 128).
    Example: [-1, 3] -> scale 3/127 = 0.023622, zp 0.

    A degenerate range (e.g. an all-zero tensor) gets :data:`MIN_SCALE` instead of a zero scale.
    """
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"range bounds must be finite, got [{lo}, {hi}]")
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    qmin, qmax = int_range(target.bits, dtype, target.symmetric)
    np_dtype = INT_DTYPES[dtype]
    if target.symmetric:
        scale = max(max(-lo, hi) / ((qmax - qmin) / 2), MIN_SCALE)
        zp = (qmin + qmax) // 2
    else:
        scale = max((hi - lo) / (qmax - qmin), MIN_SCALE)
        zp = int(np.clip(np.round(qmin - lo / scale), qmin, qmax))
    narrow = target.bits < 8 * np.dtype(np_dtype).itemsize  # 8-bit grids saturate in the dtype itself
    return QParams(np.array(scale, np.float32), np.array(zp, np_dtype),
                   qmin=qmin if narrow else None, qmax=qmax if narrow else None)


def quantize_array(x: np.ndarray, qp: QParams) -> np.ndarray:
    """``QuantizeLinear`` in numpy (round half to even), saturating on the grid ``[qmin, qmax]`` when set.

    Without ``qmin``/``qmax`` this saturates at the storage dtype like ``QuantizeLinear``; with them it is
    what the QDQ graph computes for a sub-8-bit activation (grid Clip, then ``QuantizeLinear``).
    """
    scale, zp = _broadcast(qp, x.ndim)
    info = np.iinfo(qp.zero_point.dtype)
    low = info.min if qp.qmin is None else qp.qmin
    high = info.max if qp.qmax is None else qp.qmax
    q = np.rint(x.astype(np.float32) / scale) + zp.astype(np.float64)
    return np.clip(q, low, high).astype(qp.zero_point.dtype)


def dequantize_array(q: np.ndarray, qp: QParams) -> np.ndarray:
    """``DequantizeLinear`` in numpy: ``(q - zp) * scale`` as float32."""
    scale, zp = _broadcast(qp, q.ndim)
    return ((q.astype(np.int64) - zp.astype(np.int64)) * scale).astype(np.float32)


def _broadcast(qp: QParams, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    if qp.axis is None:
        return qp.scale, qp.zero_point
    shape = [1] * ndim
    shape[qp.axis] = -1
    return qp.scale.reshape(shape), qp.zero_point.reshape(shape)


def _grid(lo: np.ndarray, hi: np.ndarray, qmin: int, qmax: int, symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (scale, zero point) of the grid that spans [lo, hi] (both contain 0)."""
    if symmetric:
        scale = np.maximum(np.maximum(-lo, hi) / ((qmax - qmin) / 2), MIN_SCALE)
        return scale, np.full(scale.shape, (qmin + qmax) // 2)
    scale = np.maximum((hi - lo) / (qmax - qmin), MIN_SCALE)
    return scale, np.clip(np.round(qmin - lo / scale), qmin, qmax)


WEIGHT_CLIP_CANDIDATES = 100
"""Shrink factors tried per channel by ``clip="mse"`` (1.0 down to 0.2 in equal steps)."""


def _mse_shrink(rows: np.ndarray, lo: np.ndarray, hi: np.ndarray, qmin: int, qmax: int,
                symmetric: bool) -> np.ndarray:
    """Per-row factor in [0.2, 1] scaling [lo, hi] that minimises the weight's rounding + clipping MSE.

    Why: at 8 bits the max-abs grid is near optimal, but at 2-4 bits one outlier per channel stretches the
    few levels so far that most weights round to zero; clipping the outlier costs less than that. This is
    the weight half of DOBI's bound search (2DQuant searches weight bounds the same way), done per channel.
    """
    best_err = np.full(rows.shape[0], np.inf)
    best = np.ones(rows.shape[0])
    for factor in np.linspace(1.0, 0.2, WEIGHT_CLIP_CANDIDATES):
        scale, zp = _grid(lo * factor, hi * factor, qmin, qmax, symmetric)
        q = np.clip(np.rint(rows / scale[:, None]) + zp[:, None], qmin, qmax)
        err = np.square((q - zp[:, None]) * scale[:, None] - rows).sum(axis=1)
        better = err < best_err
        best_err[better], best[better] = err[better], factor
    return best


def quantize_weight(
    w: np.ndarray, axis: int | None, bits: int = 8, symmetric: bool = True, dtype: str = "int8",
    clip: str = "max",
) -> tuple[np.ndarray, QParams]:
    """Quantize a constant weight per channel along ``axis`` (or per tensor when ``axis`` is None).

    Symmetric int8, 8 bits: ``scale_c = max|w_c| / 127``, zp 0; e.g. a channel with max |w| 0.5 gets
    scale 0.003937 and w = 0.1 -> q = 25. With ``bits=7`` (ORT's ``reduce_range``) the grid is [-63, 63],
    which keeps the u8 x s8 pair sums of AVX2's ``vpmaddubsw`` inside int16 (2 * 255 * 63 = 32130 < 32767).
    Asymmetric grids use each channel's own [min, max] widened to include 0. ``clip="mse"`` shrinks each
    channel's range to the factor that minimises its quantization MSE (see :func:`_mse_shrink`).

    Returns:
        The integer array (same shape as ``w``) and its :class:`QParams`.
    """
    w = np.asarray(w, np.float32)
    moved = w.reshape(1, -1) if axis is None else np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    lo, hi = moved.min(axis=1, initial=0.0), moved.max(axis=1, initial=0.0)
    qmin, qmax = int_range(bits, dtype, symmetric)
    if clip == "mse":
        shrink = _mse_shrink(moved, lo, hi, qmin, qmax, symmetric)
        lo, hi = lo * shrink, hi * shrink
    elif clip != "max":
        raise ValueError(f"clip must be 'max' or 'mse', got {clip!r}")
    scale, zp = _grid(lo, hi, qmin, qmax, symmetric)
    scale = scale.astype(np.float32)
    zp = zp.astype(INT_DTYPES[dtype])
    qp = QParams(scale.reshape(()), zp.reshape(())) if axis is None else QParams(scale, zp, axis)
    q = quantize_array(w, qp)
    return np.clip(q, qmin, qmax).astype(INT_DTYPES[dtype]), qp


def quantize_bias(
    bias: np.ndarray, act_scale: float, weight_scale: np.ndarray
) -> tuple[np.ndarray, QParams] | None:
    """int32 bias for a fused integer kernel: ``scale = act_scale * weight_scale``, zero point 0.

    This is the accumulator scale of QLinearConv, so the kernel adds the bias straight into its int32
    sums. Example: act scale 0.02, weight scale 0.004, bias 0.3 -> scale 8e-5, q = 3750.

    Returns:
        The int32 array and its parameters (per channel along axis 0 when ``weight_scale`` has one entry
        per output channel), or None when a value would overflow int32 (the caller then keeps the bias
        float, which costs the fusion but not accuracy).
    """
    scale = (np.float32(act_scale) * np.asarray(weight_scale, np.float32)).astype(np.float32)
    scale = np.maximum(scale, np.float32(MIN_SCALE))
    q = np.rint(np.asarray(bias, np.float64) / scale.astype(np.float64))
    info = np.iinfo(np.int32)
    if q.size and (q.max() > info.max or q.min() < info.min):
        return None
    if scale.ndim == 0 or scale.size == 1:
        qp = QParams(scale.reshape(()), np.array(0, np.int32))
    else:
        qp = QParams(scale, np.zeros(scale.shape, np.int32), 0)
    return q.astype(np.int32), qp
