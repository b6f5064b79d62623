"""AvoidPairSaturationPass: make int8 conv weights safe for AVX2's ``vpmaddubsw`` (u8 x s8 without VNNI).

Without VNNI, ONNX Runtime's u8 x s8 kernels (MLAS ConvSym / QGEMM on AVX2) multiply uint8 activations
by int8 weights with ``vpmaddubsw``, which adds each *pair* of products into a saturating int16. With
activation codes up to 255 a same-sign pair ``|a| + |b| > 128`` can overflow 32767 and the output is
silently wrong. ``reduce_range`` (7-bit weights) avoids this by halving every weight's resolution; this
pass only touches the pairs that can actually overflow, keeping 8-bit weights everywhere else.

Which weights form a pair was measured on ORT 1.31 (AVX2, no VNNI): ORT packs a QLinearConv's weight as
``[Cout, kh, kw, Cin]`` (NHWC) and pairs flat elements ``(2j, 2j+1)`` of each output channel's
``kh*kw*Cin`` vector, straddling taps when Cin is odd (checked for Cin = 3, 27 and 28).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qdeploy.graph.select import constant_array

__all__ = ["MAX_PAIR_SUM", "AvoidPairSaturationPass", "limit_pair_sums", "max_pair_sums"]

#: Largest ``|a| + |b|`` of a same-sign int8 weight pair with ``255 * (|a| + |b|) <= 32767``.
MAX_PAIR_SUM = 128


def limit_pair_sums(flat: np.ndarray, limit: int = MAX_PAIR_SUM) -> tuple[np.ndarray, int]:
    """Shrink same-sign pairs ``(2j, 2j+1)`` of each row of int ``flat`` so that ``|a| + |b| <= limit``.

    Each violating pair is moved to the nearest point of ``|a| + |b| = limit`` (both magnitudes lowered
    by the same amount, the smaller one not below zero), i.e. the least-squares fix in the weight
    domain. Returns the new int8 array and the number of pairs changed.
    """
    rows = flat.astype(np.int32)
    if rows.shape[1] % 2:
        rows = np.concatenate([rows, np.zeros((rows.shape[0], 1), np.int32)], axis=1)
    a, b = rows[:, 0::2], rows[:, 1::2]
    bad = (np.sign(a) == np.sign(b)) & (np.abs(a) + np.abs(b) > limit)
    if not bad.any():
        return flat.astype(np.int8), 0
    sign = np.sign(a)
    big_a = np.abs(a) >= np.abs(b)
    hi, lo = np.where(big_a, np.abs(a), np.abs(b)), np.where(big_a, np.abs(b), np.abs(a))
    excess = (hi + lo - limit) / 2.0
    new_lo = np.clip(np.round(lo - excess), 0, None).astype(np.int32)
    new_hi = limit - new_lo
    new_a = np.where(big_a, new_hi, new_lo) * sign
    new_b = np.where(big_a, new_lo, new_hi) * sign
    rows[:, 0::2] = np.where(bad, new_a, a)
    rows[:, 1::2] = np.where(bad, new_b, b)
    return rows[:, : flat.shape[1]].astype(np.int8), int(bad.sum())


class AvoidPairSaturationPass(ir.passes.InPlacePass):
    """Rewrite int8 Conv weights (``DQ(int8 initializer)``, zero point 0) so no u8 x s8 pair can saturate.

    Cases: only Conv with ``group == 1`` whose weight is a DequantizeLinear of a constant int8 tensor with
    zero point 0 (the u8s8 symmetric form) is changed; uint8 weights (u8u8 kernels cannot saturate),
    grouped/depthwise convs (other packing) and MatMul/Gemm are left alone. ``pairs_changed`` holds the
    count of the last run (0: the weights were already safe, ``modified=False``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.pairs_changed = 0

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        """Rewrite the weight initializers in place."""
        self.pairs_changed = 0
        for node in model.graph:
            if node.op_type != "Conv" or node.domain != "" or node.attributes.get_int("group", 1) != 1:
                continue
            dq = node.inputs[1].producer() if len(node.inputs) > 1 and node.inputs[1] is not None else None
            if dq is None or dq.op_type != "DequantizeLinear" or dq.domain != "":
                continue
            self.pairs_changed += self._fix(node, dq)
        return ir.passes.PassResult(model, modified=self.pairs_changed > 0)

    @staticmethod
    def _fix(conv: ir.Node, dq: ir.Node) -> int:
        weight, scale_value = dq.inputs[0], dq.inputs[1]
        q, scale = constant_array(weight), constant_array(scale_value)
        zp = constant_array(dq.inputs[2]) if len(dq.inputs) > 2 and dq.inputs[2] is not None else None
        if q is None or scale is None or q.dtype != np.int8 or q.ndim < 3 or weight.const_value is None:
            return 0
        if (zp is not None and np.any(zp != 0)) or scale.size not in (1, q.shape[0]):
            return 0
        nhwc = np.moveaxis(q, 1, -1).reshape(q.shape[0], -1)  # ORT's packing order [Cout, k..., Cin]
        shrink = np.minimum(1.0, MAX_PAIR_SUM / np.maximum(max_pair_sums(nhwc), 1))
        if scale.size == 1:
            shrink = np.full_like(shrink, shrink.min())
        if np.all(shrink == 1.0):
            return 0
        rescaled = np.round(nhwc * shrink[:, None]).astype(np.int32)
        fixed, _ = limit_pair_sums(rescaled)
        changed = int(np.count_nonzero(shrink < 1.0))
        back = np.moveaxis(fixed.reshape(np.moveaxis(q, 1, -1).shape), -1, 1)
        weight.const_value = ir.tensor(np.ascontiguousarray(back), name=weight.name)
        new_scale = (scale.reshape(-1) / shrink).astype(np.float32).reshape(scale.shape)
        scale_value.const_value = ir.tensor(new_scale, name=scale_value.name)
        _rescale_int32_bias(conv, shrink)
        return changed


def max_pair_sums(rows: np.ndarray) -> np.ndarray:
    """Per row, the largest int16 pair magnitude ``|a| + |b|`` (same sign) or ``max(|a|, |b|)``."""
    rows = rows.astype(np.int32)
    if rows.shape[1] % 2:
        rows = np.concatenate([rows, np.zeros((rows.shape[0], 1), np.int32)], axis=1)
    a, b = rows[:, 0::2], rows[:, 1::2]
    same = np.sign(a) == np.sign(b)
    sums = np.where(same, np.abs(a) + np.abs(b), np.maximum(np.abs(a), np.abs(b)))
    return sums.max(axis=1)


def _rescale_int32_bias(conv: ir.Node, shrink: np.ndarray) -> None:
    """Keep an int32 bias DQ (scale = input scale x weight scale) consistent with the new weight scale."""
    if len(conv.inputs) < 3 or conv.inputs[2] is None:
        return
    dq = conv.inputs[2].producer()
    if dq is None or dq.op_type != "DequantizeLinear":
        return
    codes, scale = constant_array(dq.inputs[0]), constant_array(dq.inputs[1])
    if codes is None or scale is None or codes.dtype != np.int32 or scale.size != codes.size:
        return
    dq.inputs[0].const_value = ir.tensor(np.round(codes * shrink).astype(np.int32), name=dq.inputs[0].name)
    dq.inputs[1].const_value = ir.tensor((scale / shrink).astype(np.float32), name=dq.inputs[1].name)
