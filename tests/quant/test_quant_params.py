"""quant.params: the worked numbers in the docstrings, grids, min scale, round trips."""

from __future__ import annotations

import numpy as np
import pytest

from qdeploy.quant.params import (
    MIN_SCALE,
    QParams,
    activation_qparams,
    dequantize_array,
    int_range,
    quantize_array,
    quantize_bias,
    quantize_weight,
)
from qdeploy.types import QuantTarget

U8 = QuantTarget(8, symmetric=False)
S8 = QuantTarget(8, symmetric=True)


def test_asymmetric_uint8_worked_example() -> None:
    qp = activation_qparams(-1.0, 3.0, U8, "uint8")
    assert float(qp.scale) == pytest.approx(4 / 255)
    assert int(qp.zero_point) == 64 and qp.zero_point.dtype == np.uint8 and qp.axis is None


def test_symmetric_int8_worked_example() -> None:
    qp = activation_qparams(-1.0, 3.0, S8, "int8")
    assert float(qp.scale) == pytest.approx(3 / 127) and int(qp.zero_point) == 0


def test_range_widened_to_include_zero() -> None:
    qp = activation_qparams(2.0, 4.0, U8, "uint8")  # becomes [0, 4]
    assert float(qp.scale) == pytest.approx(4 / 255) and int(qp.zero_point) == 0
    neg = activation_qparams(-4.0, -2.0, U8, "uint8")  # becomes [-4, 0]
    assert int(neg.zero_point) == 255


def test_degenerate_range_gets_min_scale_and_non_finite_is_rejected() -> None:
    assert float(activation_qparams(0.0, 0.0, U8, "uint8").scale) == pytest.approx(MIN_SCALE)
    with pytest.raises(ValueError, match="finite"):
        activation_qparams(0.0, float("nan"), U8, "uint8")


def test_grids() -> None:
    assert int_range(8, "int8", True) == (-127, 127)
    assert int_range(8, "int8", False) == (-128, 127)
    assert int_range(7, "int8", True) == (-63, 63)
    assert int_range(8, "uint8", False) == (0, 255)
    assert int_range(8, "uint8", True) == (1, 255)


def test_round_trip_error_is_at_most_half_a_step() -> None:
    x = np.random.default_rng(0).uniform(-1, 3, 1000).astype(np.float32)
    qp = activation_qparams(-1.0, 3.0, U8, "uint8")
    err = np.abs(dequantize_array(quantize_array(x, qp), qp) - x)
    assert err.max() <= float(qp.scale) / 2 + 1e-6


def test_weight_per_channel_symmetric_example() -> None:
    w = np.array([[0.5, 0.1, -0.25], [2.0, -1.0, 0.0]], np.float32)
    q, qp = quantize_weight(w, axis=0)
    np.testing.assert_allclose(qp.scale, [0.5 / 127, 2.0 / 127], rtol=1e-6)
    assert q[0, 1] == 25 and q.dtype == np.int8 and qp.axis == 0
    assert np.abs(q).max() == 127


def test_weight_reduce_range_and_uint8_grid() -> None:
    w = np.random.default_rng(1).normal(size=(4, 8)).astype(np.float32)
    q7, _ = quantize_weight(w, axis=0, bits=7)
    assert np.abs(q7.astype(int)).max() == 63
    qu, qpu = quantize_weight(w, axis=0, dtype="uint8")
    q8, qp8 = quantize_weight(w, axis=0)
    np.testing.assert_array_equal(qu.astype(int) - 128, q8)  # u8 symmetric = s8 grid shifted by 128
    np.testing.assert_array_equal(qpu.zero_point, 128)
    np.testing.assert_array_equal(qpu.scale, qp8.scale)


def test_weight_per_tensor_is_scalar() -> None:
    _, qp = quantize_weight(np.ones((2, 3), np.float32), axis=None)
    assert qp.scale.shape == () and qp.axis is None


def test_bias_example_and_overflow() -> None:
    q, qp = quantize_bias(np.array([0.3], np.float32), 0.02, np.array(0.004, np.float32))
    assert int(q[0]) == 3750 and qp.zero_point.dtype == np.int32
    assert quantize_bias(np.array([1e9], np.float32), 1e-4, np.array(1e-4, np.float32)) is None


def test_qparams_dtype_name() -> None:
    assert QParams(np.array(1.0, np.float32), np.array(0, np.int8)).dtype == "int8"


def test_mse_weight_clip_beats_max_at_low_bits_and_keeps_the_grid() -> None:
    from qdeploy.quant.params import dequantize_array, quantize_weight

    rng = np.random.default_rng(0)
    w = rng.standard_t(3, size=(16, 64)).astype(np.float32)  # heavy-tailed rows, like trained weights
    errs = {}
    for clip in ("max", "mse"):
        q, qp = quantize_weight(w, axis=0, bits=3, clip=clip)
        assert q.min() >= -3 and q.max() <= 3  # still the 3-bit symmetric grid
        errs[clip] = float(np.square(dequantize_array(q, qp) - w).mean())
    assert errs["mse"] < 0.8 * errs["max"]
    q8, qp8 = quantize_weight(w, axis=0, bits=8, clip="mse")
    q8m, qp8m = quantize_weight(w, axis=0, bits=8, clip="max")
    err8 = float(np.square(dequantize_array(q8, qp8) - w).mean())
    assert err8 <= float(np.square(dequantize_array(q8m, qp8m) - w).mean()) + 1e-12
