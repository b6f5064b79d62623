"""Named quantization recipes (``--preset``): each factory returns a :class:`QuantConfig` and says why.

Factories (not constants) so that machine-dependent choices, such as the CPU's dot-product instructions,
are decided when a preset is requested, on the machine that will run the model.
"""

from __future__ import annotations

import dataclasses
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qdeploy.errors import InputError
from qdeploy.quant.config import QuantConfig
from qdeploy.registry import Registry
from qdeploy.types import QuantTarget

__all__ = ["PRESETS", "cpu_has_vnni", "get_preset", "ort_cpu_int8", "preset_names", "tensorrt_int8"]

PRESETS: Registry[Callable[[], QuantConfig]] = Registry("quantization preset")

_X86_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "amx_tile")


def cpu_has_vnni(cpuinfo: str | None = None) -> bool:
    """Whether the CPU has 8-bit dot-product instructions that accumulate in int32 without saturation.

    x86: AVX512-VNNI, AVX-VNNI or AMX (``/proc/cpuinfo`` flags). ARM: ``asimddp`` (SDOT/UDOT); Apple
    silicon always has it. Without them ORT's u8 x s8 kernels use ``vpmaddubsw``, whose int16 pair sums
    saturate (see :func:`ort_cpu_int8`). ``cpuinfo`` overrides the file (for tests).
    """
    if cpuinfo is None:
        if sys.platform == "darwin" and platform.machine() == "arm64":
            return True
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return False
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return any(f in flags for f in _X86_DOT_FLAGS) or "asimddp" in flags


@PRESETS.register("ort-cpu-int8")
def ort_cpu_int8(vnni: bool | None = None) -> QuantConfig:
    """ONNX Runtime CPU: QDQ placed so that ORT's fusions produce real integer kernels.

    - uint8 asymmetric activations: ORT's QLinearConv/QLinearMatMul kernels take u8 activations, and the
      asymmetric grid spends all 256 codes on ReLU outputs (zero point 0 makes Q clamp == ReLU, so ORT's
      ReluQuantFusion removes the ReLU and the conv still fuses).
    - Q->DQ on the outputs of quantized ops: ORT fuses DQ -> Conv -> Q into QLinearConv (and MatMul into
      QLinearMatMul) only when the output goes into a Q. int32 bias through a DQ: the canonical QDQ conv
      form; ORT 1.31 fused a float bias too with identical SQNR, older releases need the int32 one.
    - Layers: Conv, MatMul and Gemm. ORT 1.31's CPU provider has no QDQ fusion for ConvTranspose (it ran
      as DQ + float ConvTranspose when tried), so it stays float; ``convtranspose_as_conv=True`` rewrites
      it exactly as Conv + DepthToSpace (QLinearConv), off by default because it did not pay on this CPU:
      u8u8 weights, 32->32 k4 s2 at 96x96, 1 thread, under load: INT8/FP32 1.35 rewritten vs 1.23 float
      ConvTranspose (1.07 with int8 weights + ``avoid_pair_saturation``); FSRCNN's 56->1 9x9 deconv became
      a 4-output-channel QLinearConv that ran ~3.5x slower than the float ConvTranspose.
    - ``integer_region`` (issue 11): the ops *between* layers that ORT has integer kernels for get Q/DQ
      too (Add, Mul, Concat, LeakyRelu, Sigmoid, AveragePool -> QLinear*; Split, MaxPool, nearest Resize
      run on uint8 with their input's grid), but only where that removes a DQ -> float op -> Q island
      (``qdeploy.graph.passes.integer_region``). Sigmoid outputs use the fixed grid [0, 1]; a one-slope
      PRelu becomes LeakyRelu; per-channel PRelu and linear Resize stay float (no integer kernel / ORT's
      uint8 linear Resize truncates). ``float_pooled_convs``: convs on pooled ``N x C x 1 x 1`` statistics
      (channel attention) and so their pre-sigmoid logits stay float (quantized, IMDN lost 1.1 dB SQNR
      through the real kernels); full-resolution gate logits are quantized (float logits: PAN +0.2 dB,
      ESA -0.3 dB, both ~15% slower). Measured on the trained zoo nets (1x3x256x256, 1 thread, interleaved,
      with other jobs on the 2-core machine, so +-15%): IMDN / PAN / RFDN-ESA INT8/FP32 went from
      1.35-1.43 / 1.43-1.46 / 1.25-1.26 to 1.06-1.19 / 1.32 / 1.05-1.08 with 34 / 35 / 57 float islands
      removed and SQNR +1.1 / -0.2 / +0.2 dB; the rest is the u8u8 kernel (QLinearConv u8u8 is no faster
      than float Conv on AVX2 without VNNI; int8 weights + ``avoid_pair_saturation`` ran 0.62-0.82 at
      -0.4 to -0.8 dB). Graphs without these patterns (ABPN x3, SwinIR-light) get identical Q/DQ graphs
      (only the recorded config gains the new keys).
    - Weights per output channel. With VNNI/AMX/dotprod: int8 symmetric (u8s8, the fast path).
      Without VNNI (this project's AVX2 machine): uint8 *symmetric* weights (zero point 128), i.e. ORT's
      u8u8 kernel, which ORT documents as the non-VNNI recommendation. The u8 grid is the s8 grid shifted
      by 128, so the model's accuracy is exactly the ideal int8 QDQ accuracy.

    Measured (a 4-conv ReLU net with a residual Add, Laplace "trained-like" weights, pixel inputs
    0-255, 3 seeds; SQNR vs float in dB, plain QDQ math (ORT_DISABLE_ALL) / real kernels (ORT_ENABLE_ALL);
    all variants fused to 4 QLinearConv + QLinearAdd):

    =========================  =============  =============  =============
    weights                    seed 0         seed 1         seed 2
    =========================  =============  =============  =============
    int8 sym (u8s8)            32.0 / 22.9    34.9 / 27.2    33.9 / 25.7   <- int16 saturation
    int8 reduce_range (7-bit)  24.6 / 24.6    33.5 / 33.5    30.8 / 30.8
    uint8 sym, zp 128 (u8u8)   32.0 / 32.0    34.9 / 34.9    33.9 / 33.9   <- chosen
    uint8 asym (u8u8)          33.9 / 33.9    36.8 / 36.8    30.3 / 30.3
    =========================  =============  =============  =============

    The same holds for the test nets (inputs in [0, 1]): int8 weights give 22.2 dB on real kernels vs
    37.9 dB QDQ for a 3-conv residual net, 6.4 vs 40.2 dB for a Gemm/MatMul MLP; uint8 weights give 37.9
    and 40.2 on both.

    The project's ABPN x3 (weights models/weights/abpn_x3.pt as of writing, 8 B100 96x96 crops, min/max
    ranges from 4, PSNR on the other 4 vs the float model): uint8 weights 55.6 dB QDQ / 55.6 dB fused,
    int8 weights 55.6 / 42.6 dB fused (7 QLinearConv either way).

    uint8 symmetric never loses accuracy to the kernel and matches int8 QDQ; reduce_range loses 1.4-7.4 dB
    to 7-bit weights; asymmetric uint8 was inconsistent. The cost is speed: u8u8 ran ~1.4-1.9x slower than
    u8s8 on the tiny net (0.54-0.74 vs 0.38 ms), but only ~7% on ABPN 1x3x96x96, 1 thread (median 14.7 vs
    13.7 ms; float 14.1 ms on the same shared 2-core machine), a price paid for not corrupting the output.

    Opt-in speed options (``get_preset("ort-cpu-int8", full_integer=True, ...)``; ABPN x3 at 1x3x360x640,
    2 threads, benchmarks/results/abpn_speed_notes.md): ``full_integer`` keeps the anchor, residual Add,
    DepthToSpace and Clip in uint8; with int8 weights, ``avoid_pair_saturation`` makes the u8s8 kernels
    exact on AVX2 (Set5 -0.028 dB vs -0.009 dB for u8u8). Their speed-ups (INT8/FP32 0.99 -> 0.90, and
    0.80) were measured while another job held the second core; on the idle machine the default INT8
    graph ran at 0.93-1.05 of float time, so no reliable CPU speed-up is claimed on AVX2 without VNNI.
    ``full_integer`` is on by default (it only rewrites the pattern it recognises and leaves other graphs
    alone); ``avoid_pair_saturation`` stays opt-in for explicit methods. ``calibrate``'s default
    (``--method auto``) goes further without VNNI: after its held-out check it measures the pair-safe int8
    form of the group-1 convs (:mod:`qdeploy.quant.kernel_forms`) and keeps it only if it still meets the
    bar (``--exact-weights`` keeps the uint8 form).
    """
    has_vnni = cpu_has_vnni() if vnni is None else vnni
    common = dict(  # noqa: C408 (keyword form reads like the QuantConfig call it feeds)
        name="ort-cpu-int8", op_types=("Conv", "MatMul", "Gemm"), activation=QuantTarget(8, symmetric=False),
        activation_dtype="uint8",
        weight_bits=8, weight_symmetric=True, per_channel=True, quantize_bias=True, quantize_outputs=True,
        dedicated_qdq_pairs=False, full_integer=True, integer_region=True, float_pooled_convs=True,
    )
    if has_vnni:
        return QuantConfig(weight_dtype="int8", isa="vnni", **common)
    return QuantConfig(weight_dtype="uint8", isa="avx2-no-vnni", **common)


@PRESETS.register("tensorrt-int8")
def tensorrt_int8() -> QuantConfig:
    """TensorRT explicit quantization (QDQ placement after NVIDIA's guidance).

    - int8 symmetric activations and weights (zero point 0 everywhere): TensorRT supports no other zero
      point; per-channel weights on the output-channel axis as ``DQ(int8 initializer)``.
    - Q->DQ only on the *inputs* of quantized ops, one dedicated pair per consumer: TensorRT fuses each DQ
      into its consumer and decides output precision itself; a shared DQ would force a reformat.
    - float bias: TensorRT folds the bias into the int8 kernel's epilogue itself.
    - ``shift_one_sided``: a never-negative input of a Conv/Gemm/MatMul (RGB in [0, 255], a ReLU output) is
      quantized as ``t - (lo + hi) / 2`` with the shift folded into the bias (exact in float; padded convs
      get an explicit ``Pad(value=-c)``), so the symmetric grid stops wasting its negative half. Measured
      on ABPN x3 (weights snapshot of models/weights/abpn_x3.pt, 32 BSD200 96x96 crops, mse; Y-PSNR vs the
      float model): Set5 -0.050 -> -0.017 dB, Set14 -0.018 -> -0.001 dB; output SQNR vs float +2.7 to
      +5.7 dB per Set5 image. Cost: a Sub per shifted tensor and a Pad per padded conv (TensorRT fuses a
      Pad into a conv only for zero padding); not yet timed on TensorRT. Pass ``shift_one_sided=False``
      for the plain placement.
    - Needs opset >= 13 (per-axis DQ); export with opset 17.
    """
    return QuantConfig(
        name="tensorrt-int8", activation=QuantTarget(8, symmetric=True), activation_dtype="int8",
        weight_bits=8, weight_symmetric=True, weight_dtype="int8", per_channel=True, quantize_bias=False,
        quantize_outputs=False, dedicated_qdq_pairs=True, isa="tensorrt", shift_one_sided=True,
    )


@PRESETS.register("lowbit-sim")
def lowbit_sim() -> QuantConfig:
    """Accuracy simulation at any bit width (W8A8 down to W2A2), the placement 2DQuant evaluates.

    - Q->DQ on the *inputs* of MatMul/Gemm only: every Linear's input and weight, and both operands of the
      attention batched matmuls (q, k, v and the softmax output). Convolutions stay float unless
      ``op_types`` adds ``Conv`` (2DQuant keeps them float: they are 14% of SwinIR-light's operations).
    - asymmetric activations (post-softmax and post-GELU tensors are one-sided), symmetric per-channel
      weights (deployable on TensorRT and ORT, unlike 2DQuant's per-tensor asymmetric weights), float
      bias, no output Q/DQ; per-channel MSE-searched weight clipping (``weight_clip="mse"``).
    - Below 8 bits the grid is emulated honestly in 8-bit storage (values saturate at the low-bit grid).
      No CPU runtime has W4A4 kernels: this preset measures accuracy, not speed; judge it with plain Q/DQ
      math (``graph_optimization="disable"``).
    """
    return QuantConfig(
        name="lowbit-sim", op_types=("MatMul", "Gemm"), activation=QuantTarget(8, symmetric=False),
        activation_dtype="uint8", weight_bits=8, weight_symmetric=True, weight_dtype="int8", per_channel=True,
        quantize_bias=False, quantize_outputs=False, dedicated_qdq_pairs=False, isa="simulation",
        weight_clip="mse",
    )


def preset_names() -> list[str]:
    """Names accepted by ``get_preset`` / ``--preset``."""
    return PRESETS.names()


def get_preset(name: str, **overrides: Any) -> QuantConfig:
    """The preset ``name`` with ``overrides`` applied (None values are ignored so CLI defaults pass through).

    ``bits=N`` is shorthand for ``activation.bits = weight_bits = N``. Unknown presets or fields, and values
    the config rejects, raise :class:`InputError`.
    """
    config = PRESETS.get(name)()
    changes = {k: v for k, v in overrides.items() if v is not None}
    bits = changes.pop("bits", None)
    if bits is not None:
        changes["weight_bits"] = bits
        changes["activation"] = dataclasses.replace(config.activation, bits=bits)
    fields = {f.name for f in dataclasses.fields(QuantConfig)}
    unknown = sorted(set(changes) - fields)
    if unknown:
        raise InputError(f"unknown quantization option(s) {unknown}",
                         f"valid options: bits, {', '.join(sorted(fields))}")
    try:
        return dataclasses.replace(config, **changes)
    except ValueError as exc:
        raise InputError(f"invalid quantization option for preset {name!r}: {exc}",
                         "fix the option value (see `qdeploy quantize --help`)") from exc
