"""Graph passes (onnx_ir ``PassBase`` subclasses) and the ordered pipelines built from them.

Each pass does one rewrite and documents its cases; ``qdeploy.quant.quantize`` instantiates
:data:`QUANTIZE_PIPELINE` in order with arguments derived from a ``QuantConfig``. The order matters:

1. ``NameGraphPass`` / ``CleanupGraphPass``: unique node names for regex selection, topological order so
   "in graph order" means producers first;
2. ``QuantizeWeightsPass``: weights become ``DQ(int initializer)``;
3. ``InsertActivationQDQPass``: activation ``Q -> DQ`` pairs from calibrated ranges;
3b. ``SinkDQPass`` (only for an integer region with Split/MaxPool/Resize): moves their input DQ below
   them, so the layers reading their outputs see a DQ (the bias step needs its scale);
4. ``QuantizeBiasPass`` (only when the config quantizes biases): needs the activation and weight DQs of
   steps 2 and 3 to read their scales;
5. ``DedicateQDQPass`` (only for dedicated pairs, TensorRT): splits the shared pairs of step 3;
6. ``CleanupGraphPass``: drops the replaced float weights and restores topological order.

``ShiftOneSidedActivationsPass`` is not a pipeline step: ``quantize`` runs it (config ``shift_one_sided``)
on the prepared graph *before* computing activation parameters, because it creates the tensors
(``t - c``) that step 3 then quantizes, with ranges only it knows. ``ShiftQKPass`` (config ``shift_qk``)
runs even earlier, inside the preparation, because its shifted attention q/k must be calibrated themselves.

``ConvTransposeToConvPass`` and ``UniformPReluToLeakyReluPass`` (configs ``convtranspose_as_conv``,
``integer_region``) run in the preparation too: they are exact float rewrites whose new Conv/LeakyRelu
must be selected like the model's own. ``RotateLinearInputsPass`` (configs ``rotate_inputs``,
``smooth_alpha``) too, before them: the rotated tensors are what the observers must see.

``AvoidPairSaturationPass`` and ``IntegerTailPass`` are not pipeline steps either: ``quantize`` runs them on
the finished QDQ graph (configs ``avoid_pair_saturation``, ``full_integer``), which they read.
"""

from __future__ import annotations

from onnx_ir.passes import PassBase

from qdeploy.graph.passes.cleanup import CleanupGraphPass, NameGraphPass
from qdeploy.graph.passes.dedicate_qdq import DedicateQDQPass
from qdeploy.graph.passes.exact_rewrites import ConvTransposeToConvPass, UniformPReluToLeakyReluPass
from qdeploy.graph.passes.expose_tensors import ExposeTensorsPass
from qdeploy.graph.passes.insert_activation_qdq import InsertActivationQDQPass
from qdeploy.graph.passes.integer_tail import IntegerTailPass
from qdeploy.graph.passes.pair_saturation import AvoidPairSaturationPass
from qdeploy.graph.passes.precision_map import ApplyPrecisionMapPass
from qdeploy.graph.passes.quantize_bias import QuantizeBiasPass
from qdeploy.graph.passes.quantize_weights import QuantizeWeightsPass
from qdeploy.graph.passes.rotate_attention import RotateAttentionValuesPass
from qdeploy.graph.passes.rotate_inputs import RotateLinearInputsPass
from qdeploy.graph.passes.shift_activations import ShiftOneSidedActivationsPass
from qdeploy.graph.passes.shift_qk import ShiftQKPass
from qdeploy.graph.passes.sink_dq import SinkDQPass
from qdeploy.graph.passes.strip_qdq import StripQDQPass
from qdeploy.graph.passes.weight_only_int4 import BlockwiseWeightQuantPass

__all__ = [
    "ALL_PASSES",
    "OPTIONAL_PASSES",
    "PREPARE_PIPELINE",
    "QUANTIZE_PIPELINE",
    "STRIP_PIPELINE",
    "ApplyPrecisionMapPass",
    "AvoidPairSaturationPass",
    "BlockwiseWeightQuantPass",
    "CleanupGraphPass",
    "ConvTransposeToConvPass",
    "DedicateQDQPass",
    "ExposeTensorsPass",
    "InsertActivationQDQPass",
    "IntegerTailPass",
    "NameGraphPass",
    "QuantizeBiasPass",
    "QuantizeWeightsPass",
    "RotateAttentionValuesPass",
    "RotateLinearInputsPass",
    "ShiftOneSidedActivationsPass",
    "ShiftQKPass",
    "SinkDQPass",
    "StripQDQPass",
    "UniformPReluToLeakyReluPass",
]

#: Every pass qdeploy defines (for docs and the CLI's ``--help``).
ALL_PASSES: tuple[type[PassBase], ...] = (
    ExposeTensorsPass, NameGraphPass, CleanupGraphPass, QuantizeWeightsPass, InsertActivationQDQPass,
    QuantizeBiasPass, DedicateQDQPass, StripQDQPass, ShiftOneSidedActivationsPass, AvoidPairSaturationPass,
    IntegerTailPass, BlockwiseWeightQuantPass, ShiftQKPass, SinkDQPass, ConvTransposeToConvPass,
    UniformPReluToLeakyReluPass, RotateLinearInputsPass,
    RotateAttentionValuesPass,
)

#: Run before selecting nodes or tensors: names for regex matching, producers before consumers.
PREPARE_PIPELINE: tuple[type[PassBase], ...] = (NameGraphPass, CleanupGraphPass)

#: The full quantization rewrite, in order (see the module docstring for why this order).
QUANTIZE_PIPELINE: tuple[type[PassBase], ...] = (
    *PREPARE_PIPELINE,
    QuantizeWeightsPass,
    InsertActivationQDQPass,
    SinkDQPass,
    QuantizeBiasPass,
    DedicateQDQPass,
    CleanupGraphPass,
)

#: Passes of :data:`QUANTIZE_PIPELINE` that a config can switch off (``quantize_bias``,
#: ``dedicated_qdq_pairs``, ``integer_region`` with pass-through ops); all others always run.
OPTIONAL_PASSES: tuple[type[PassBase], ...] = (QuantizeBiasPass, DedicateQDQPass, SinkDQPass)

#: Back to float (weights keep their rounding): for debugging accuracy.
STRIP_PIPELINE: tuple[type[PassBase], ...] = (StripQDQPass, CleanupGraphPass)
