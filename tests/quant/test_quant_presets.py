"""quant.presets and QuantConfig: registry, overrides, validation, ISA detection."""

from __future__ import annotations

import dataclasses

import pytest

from qdeploy.errors import InputError
from qdeploy.quant import QuantConfig, cpu_has_vnni, get_preset, preset_names
from qdeploy.quant.presets import ort_cpu_int8
from qdeploy.types import QuantTarget


def test_names_and_unknown_preset_lists_them() -> None:
    assert preset_names() == ["lowbit-sim", "ort-cpu-int8", "tensorrt-int8"]
    with pytest.raises(InputError) as info:
        get_preset("tflite")
    assert "ort-cpu-int8" in info.value.hint and "tensorrt-int8" in info.value.hint


def test_overrides_like_the_calibrate_pipeline() -> None:
    config = get_preset("ort-cpu-int8", op_types=("Conv", "MatMul"), exclude_nodes=("head.*",),
                        include_nodes=(), bits=8, per_channel=None)
    assert config.op_types == ("Conv", "MatMul") and config.exclude_nodes == ("head.*",)
    assert config.activation.bits == 8 and config.weight_bits == 8 and config.per_channel is True
    assert get_preset("tensorrt-int8", bits=6).activation == QuantTarget(6, symmetric=True)


def test_bad_overrides_are_input_errors() -> None:
    with pytest.raises(InputError, match="unknown quantization option"):
        get_preset("ort-cpu-int8", colour="red")
    with pytest.raises(InputError, match="cannot be quantized"):
        get_preset("ort-cpu-int8", op_types=("Relu",))


def test_integer_region_options_are_validated() -> None:
    with pytest.raises(ValueError, match="integer_region needs quantize_outputs"):
        QuantConfig(integer_region=True)
    with pytest.raises(InputError, match="integer_region"):
        get_preset("tensorrt-int8", integer_region=True)
    with pytest.raises(InputError, match="needs Conv"):
        get_preset("ort-cpu-int8", convtranspose_as_conv=True, op_types=("MatMul",))
    assert get_preset("ort-cpu-int8", convtranspose_as_conv=True).convtranspose_as_conv


def test_config_validation_and_frozen() -> None:
    with pytest.raises(ValueError, match="weight_bits"):
        QuantConfig(weight_bits=9)
    with pytest.raises(ValueError, match="activation_dtype"):
        QuantConfig(activation_dtype="int16")
    with pytest.raises(ValueError, match="sequence of strings"):
        QuantConfig(exclude_nodes="head")
    config = QuantConfig(include_nodes=["a"])
    assert config.include_nodes == ("a",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.name = "x"  # type: ignore[misc]
    assert config.to_dict()["include_nodes"] == ["a"]


def test_preset_contents() -> None:
    trt = get_preset("tensorrt-int8")
    assert trt.activation.symmetric and trt.activation_dtype == "int8" and trt.dedicated_qdq_pairs
    assert not trt.quantize_bias and not trt.quantize_outputs
    no_vnni, vnni = ort_cpu_int8(vnni=False), ort_cpu_int8(vnni=True)
    assert (no_vnni.weight_dtype, no_vnni.isa) == ("uint8", "avx2-no-vnni")
    assert (vnni.weight_dtype, vnni.isa) == ("int8", "vnni")
    assert no_vnni.quantize_outputs and no_vnni.quantize_bias and not no_vnni.activation.symmetric
    assert no_vnni.integer_region and no_vnni.float_pooled_convs and not no_vnni.convtranspose_as_conv
    for other in (trt, get_preset("lowbit-sim")):
        assert not (other.integer_region or other.float_pooled_convs or other.convtranspose_as_conv)
    assert get_preset("ort-cpu-int8").isa == ("vnni" if cpu_has_vnni() else "avx2-no-vnni")


@pytest.mark.parametrize(("text", "expected"), [
    ("flags\t\t: fpu sse avx2 fma\n", False),
    ("flags\t\t: fpu avx2 avx512f avx512_vnni\n", True),
    ("flags\t\t: fpu avx2 avx_vnni\n", True),
    ("flags\t\t: fpu avx2 amx_int8 amx_tile\n", True),
    ("Features\t: fp asimd evtstrm aes asimddp\n", True),
    ("Features\t: fp asimd evtstrm aes\n", False),
])
def test_cpu_has_vnni_parses_flags(text: str, expected: bool) -> None:
    assert cpu_has_vnni(text) is expected


def test_lowbit_sim_quantizes_inputs_of_linear_and_batched_matmuls_only() -> None:
    config = get_preset("lowbit-sim", bits=4)
    assert config.op_types == ("MatMul", "Gemm") and config.weight_clip == "mse"
    assert config.activation == QuantTarget(4, symmetric=False) and config.weight_bits == 4
    assert not config.quantize_outputs and not config.quantize_bias and not config.full_integer
