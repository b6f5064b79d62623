"""Scale / zero-point arithmetic for QDQ quantization (pure numpy, no graph code).

Everything here follows the ONNX ``QuantizeLinear`` definition
``q = saturate(round_half_even(x / scale) + zp)`` and ``DequantizeLinear`` ``x' = (q - zp) * scale``, so
the numbers computed here are exactly what ONNX Runtime or TensorRT will use. Keeping the math free of graph code means it can be unit-tested with plain arrays and
reused by tools that only want to inspect a calibration cache.
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

#: Storage dtypes the QDQ passes emit (8-bit only: opset 13 QuantizeLinear supports no others).
INT_DTYPES = {"uint8": np.uint8, "int8": np.int8}


@dataclass(frozen=True)
class QParams:
    """Quantization parameters of one tensor: float32 ``scale``, integer ``zero_point`` and optional ``axis``.

    Per-tensor parameters are 0-d arrays and ``axis`` is None; per-channel parameters are 1-D arrays with
    one entry per slice along ``axis`` (what ``DequantizeLinear`` opset 13 expects).
    """

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None = None

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
    return QParams(np.array(scale, np.float32), np.array(zp, np_dtype))


def quantize_array(x: np.ndarray, qp: QParams) -> np.ndarray:
    """``QuantizeLinear`` in numpy (round half to even, saturate to the storage dtype)."""
    scale, zp = _broadcast(qp, x.ndim)
    info = np.iinfo(qp.zero_point.dtype)
    q = np.rint(x.astype(np.float32) / scale) + zp.astype(np.float64)
    return np.clip(q, info.min, info.max).astype(qp.zero_point.dtype)


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


def quantize_weight(
    w: np.ndarray, axis: int | None, bits: int = 8, symmetric: bool = True, dtype: str = "int8"
) -> tuple[np.ndarray, QParams]:
    """Quantize a constant weight per channel along ``axis`` (or per tensor when ``axis`` is None).

    Symmetric int8, 8 bits: ``scale_c = max|w_c| / 127``, zp 0; e.g. a channel with max |w| 0.5 gets
    scale 0.003937 and w = 0.1 -> q = 25. With ``bits=7`` (ORT's ``reduce_range``) the grid is [-63, 63],
    which keeps the u8 x s8 pair sums of AVX2's ``vpmaddubsw`` inside int16 (2 * 255 * 63 = 32130 < 32767).
    Asymmetric grids use each channel's own [min, max] widened to include 0.

    Returns:
        The integer array (same shape as ``w``) and its :class:`QParams`.
    """
    w = np.asarray(w, np.float32)
    if axis is None:
        lo, hi = np.array([w.min(initial=0.0)]), np.array([w.max(initial=0.0)])
    else:
        moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
        lo, hi = moved.min(axis=1, initial=0.0), moved.max(axis=1, initial=0.0)
    qmin, qmax = int_range(bits, dtype, symmetric)
    if symmetric:
        scale = np.maximum(np.maximum(-lo, hi) / ((qmax - qmin) / 2), MIN_SCALE)
        zp = np.full(scale.shape, (qmin + qmax) // 2)
    else:
        scale = np.maximum((hi - lo) / (qmax - qmin), MIN_SCALE)
        zp = np.clip(np.round(qmin - lo / scale), qmin, qmax)
    scale = scale.astype(np.float32)
    zp = zp.astype(INT_DTYPES[dtype])
    if axis is None:
        qp = QParams(scale.reshape(()), zp.reshape(()))
    else:
        qp = QParams(scale, zp, axis)
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
