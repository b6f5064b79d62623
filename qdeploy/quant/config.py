"""QuantConfig: every knob of a quantization recipe in one frozen, validated, serializable object."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from qdeploy.graph.select import QUANTIZABLE_OP_TYPES, NodeFilter
from qdeploy.quant.params import INT_DTYPES
from qdeploy.types import QuantTarget

__all__ = ["QuantConfig"]

_TUPLE_FIELDS = ("op_types", "include_nodes", "exclude_nodes", "exclude_op_types")


@dataclass(frozen=True)
class QuantConfig:
    """How to quantize a model; presets (``qdeploy.quant.presets``) are named instances of this.

    Attributes:
        name: Preset name (recorded in the quantized model's metadata).
        activation: Activation grid; ``symmetric=True`` gives zero point 0 (TensorRT).
        weight_bits: Weight grid bits (2..8, stored in ``weight_dtype``).
        weight_symmetric: Zero-point-free weights (needed by TensorRT and by ORT's s8 kernels).
        per_channel: One weight scale per output channel (axis chosen per op type).
        op_types: Op types to quantize (subset of Conv, ConvTranspose, MatMul, Gemm).
        include_nodes: Node-name regexes (``re.search``); empty selects every node.
        exclude_nodes: Node-name regexes to keep in float (e.g. ``("head",)``).
        exclude_op_types: Op types to keep float even if listed in ``op_types``.
        dedicated_qdq_pairs: One Q->DQ pair per consumer (TensorRT) instead of one shared pair per tensor.
        activation_dtype: "uint8" (ORT asymmetric) or "int8" (TensorRT).
        weight_dtype: "int8" or "uint8" (ORT's u8u8 kernels).
        reduce_range: Use ``weight_bits - 1`` bits for weights (ORT's fix for int16 saturation on AVX2).
        quantize_bias: int32 bias through DQ (ORT's canonical QLinearConv form); TensorRT wants float.
        quantize_outputs: Also put Q->DQ on the outputs of quantized ops, required for ORT's QLinearConv /
            QLinearMatMul fusions (DQ -> op -> Q); with asymmetric activations a following Relu is folded.
        isa: Which CPU variant of a preset was chosen (e.g. "avx2-no-vnni"); informational.
        shift_one_sided: Quantize ``t - (lo + hi) / 2`` instead of a never-negative (or never-positive)
            tensor ``t`` read by Conv/Gemm/MatMul with constant weights, folding the shift into their
            biases (exact in float; see ``qdeploy.graph.passes.shift_activations``): a symmetric grid
            then gains the bit it wasted on the empty side. Symmetric activations only.
        full_integer: After quantizing, move residual Adds, data movement (Reshape/Expand/DepthToSpace...)
            and a final Clip onto the integer side (``qdeploy.graph.passes.integer_tail``), so ORT runs
            QLinearAdd and uint8 copies instead of full-resolution float ops. ORT style only.
        avoid_pair_saturation: Shrink int8 conv weights just enough that no ``vpmaddubsw`` pair can
            overflow int16 on AVX2 without VNNI (``qdeploy.graph.passes.pair_saturation``): saturation-free
            u8s8 kernels at (per channel) between 7 and 8 weight bits. Symmetric int8 weights only.
        weight_clip: "max" (grid spans each channel's max |w|) or "mse" (each channel's range shrunk to
            the factor minimising its quantization MSE; matters at 2-4 bits, ~no change at 8).
        shift_qk: Quantize ``q - mu_q`` and ``k - mu_k`` (per-head means calibrated on the data) at the
            attention score MatMuls, with the per-key term ``mu_q . k`` added back in float so attention
            is unchanged before rounding (``qdeploy.graph.passes.shift_qk``; Q-SCI's shift made exact):
            the per-tensor grid stops spending its codes on the channels' offsets. Needs the means
            (``quantize(..., qk_means=...)``; ``calibrate_model`` collects them in one extra pass).
        rotate_inputs: Rotate each quantized Linear's input by an orthogonal (randomized Hadamard) matrix
            and its weight by the transpose (``qdeploy.graph.passes.rotate_inputs``; exact in float), so
            an outlier channel is spread over all channels before the per-tensor grid. The rotation is
            an extra float ``K x K`` MatMul per Linear at run time. Helps low bits on un-normalised inputs.
            Attention (when MatMuls are quantized) is rotated too: ``P @ V = (P R_N)(R_N^T V R_d) R_d^T``
            (``qdeploy.graph.passes.rotate_attention``), so peaky probabilities and outlier value
            channels share their grids better.
        smooth_alpha: When > 0, centre and rescale each quantized Linear's input channels from their
            calibrated ranges before quantizing (``qdeploy.quant.smoothing``: shift into the bias, scale
            ``range^alpha / weight^(1-alpha)`` into the weight; exact in float), then rotate with
            ``rotate_inputs``. Needs calibration data (one extra streamed pass). 0 = off.
        integer_region: Also quantize the ops *between* quantized layers that ONNX Runtime CPU has integer
            kernels for (Add, Mul, Concat, LeakyRelu, Sigmoid, AveragePool; Split, MaxPool and nearest
            Resize on uint8), where that removes a ``DQ -> float op -> Q`` island
            (``qdeploy.graph.passes.integer_region``); sigmoid outputs use the fixed grid [0, 1]; a PRelu
            with one slope becomes the LeakyRelu it is. ORT placement only. Off: only ``op_types`` nodes.
        float_pooled_convs: Keep Convs on pooled ``N x C x 1 x 1`` tensors (channel-attention squeeze and
            excite) in float: INT8 cannot speed them up and their outputs gate whole channels.
        convtranspose_as_conv: Rewrite each 2-D ``ConvTranspose`` (group 1, equal strides) as the
            equivalent ``Conv -> DepthToSpace (-> Slice)`` before quantizing (exact in float;
            ``qdeploy.graph.passes.convtranspose``), so it runs as QLinearConv: ORT 1.31 has no QDQ
            fusion for ConvTranspose. Needs ``Conv`` in ``op_types``.
    """

    name: str = "custom"
    activation: QuantTarget = field(default_factory=lambda: QuantTarget(8, False))
    weight_bits: int = 8
    weight_symmetric: bool = True
    per_channel: bool = True
    op_types: tuple[str, ...] = QUANTIZABLE_OP_TYPES
    include_nodes: tuple[str, ...] = ()
    exclude_nodes: tuple[str, ...] = ()
    exclude_op_types: tuple[str, ...] = ()
    dedicated_qdq_pairs: bool = False
    activation_dtype: str = "uint8"
    weight_dtype: str = "int8"
    reduce_range: bool = False
    quantize_bias: bool = False
    quantize_outputs: bool = False
    isa: str = "generic"
    shift_one_sided: bool = False
    full_integer: bool = False
    avoid_pair_saturation: bool = False
    weight_clip: str = "max"
    shift_qk: bool = False
    rotate_inputs: bool = False
    smooth_alpha: float = 0.0
    integer_region: bool = False
    float_pooled_convs: bool = False
    convtranspose_as_conv: bool = False

    def __post_init__(self) -> None:
        for name in _TUPLE_FIELDS:
            value = getattr(self, name)
            if isinstance(value, str):
                raise ValueError(f"{name} must be a sequence of strings, got the string {value!r}")
            object.__setattr__(self, name, tuple(value))
        if not isinstance(self.activation, QuantTarget):
            raise ValueError(f"activation must be a QuantTarget, got {self.activation!r}")
        if self.activation.bits > 8:
            raise ValueError(f"activation bits must be <= 8 (8-bit storage), got {self.activation.bits}")
        if not 2 <= self.weight_bits <= 8:
            raise ValueError(f"weight_bits must be in 2..8, got {self.weight_bits}")
        if self.reduce_range and self.weight_bits < 3:
            raise ValueError("reduce_range needs weight_bits >= 3")
        for name in ("activation_dtype", "weight_dtype"):
            if getattr(self, name) not in INT_DTYPES:
                raise ValueError(f"{name} must be one of {sorted(INT_DTYPES)}, got {getattr(self, name)!r}")
        if self.shift_one_sided and not self.activation.symmetric:
            raise ValueError("shift_one_sided needs symmetric activations (an asymmetric grid already fits "
                             "a one-sided range through its zero point)")
        if self.full_integer and (not self.quantize_outputs or self.dedicated_qdq_pairs):
            raise ValueError("full_integer needs quantize_outputs=True and shared QDQ pairs (ORT placement)")
        if self.integer_region and (not self.quantize_outputs or self.dedicated_qdq_pairs):
            raise ValueError("integer_region needs quantize_outputs=True and shared QDQ pairs (ORT placement)")
        if self.convtranspose_as_conv and ("Conv" not in self.op_types or "Conv" in self.exclude_op_types):
            raise ValueError("convtranspose_as_conv turns ConvTranspose into a Conv to quantize: it needs Conv "
                             "in op_types")
        if self.avoid_pair_saturation and (self.weight_dtype != "int8" or not self.weight_symmetric):
            raise ValueError("avoid_pair_saturation applies to symmetric int8 weights (u8s8 kernels) only")
        if self.weight_clip not in ("max", "mse"):
            raise ValueError(f"weight_clip must be 'max' or 'mse', got {self.weight_clip!r}")
        if not self.op_types:
            raise ValueError("op_types is empty: nothing would be quantized")
        if self.shift_qk and ("MatMul" not in self.op_types or "MatMul" in self.exclude_op_types):
            raise ValueError("shift_qk shifts the inputs of attention MatMuls: it needs MatMul in op_types")
        if not 0.0 <= self.smooth_alpha <= 1.0:
            raise ValueError(f"smooth_alpha must be in [0, 1] (0 = off), got {self.smooth_alpha}")
        if self.rotate_inputs and not {"Gemm", "MatMul"} & (set(self.op_types) - set(self.exclude_op_types)):
            raise ValueError("rotate_inputs rotates the inputs of Linears (Gemm/MatMul): it needs one of them "
                             "in op_types")
        self.node_filter  # noqa: B018 (validates op types and regexes)

    @property
    def node_filter(self) -> NodeFilter:
        """The node selection this config describes."""
        return NodeFilter(self.op_types, self.include_nodes, self.exclude_nodes, self.exclude_op_types)

    @property
    def effective_weight_bits(self) -> int:
        """Bits actually used by weights (one less with ``reduce_range``)."""
        return self.weight_bits - 1 if self.reduce_range else self.weight_bits

    @property
    def fold_relu(self) -> bool:
        """Whether output Q goes after a following Relu (Q clamping at zp = grid minimum *is* the Relu)."""
        return self.quantize_outputs and not self.activation.symmetric

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (tuples become lists) for manifests and ``--json``."""
        data = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}
