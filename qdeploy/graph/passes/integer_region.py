"""Integer regions: which ops *between* quantized layers also get Q/DQ, so ONNX Runtime CPU runs them in uint8.

Quantizing only Conv/MatMul/Gemm inputs and outputs leaves every LeakyRelu, Sigmoid, gate Mul, residual
Add and Concat of a gated CNN as ``DQ -> float op -> Q``: two extra full-resolution passes per op, which
made IMDN/PAN/RFDN-style INT8 graphs slower than float on ORT CPU (issue 11). ORT 1.31's QDQ selectors turn
``DQ -> op -> Q`` into QLinearAdd / QLinearMul / QLinearConcat / QLinearLeakyRelu / QLinearSigmoid /
QLinearAveragePool, and run Split / MaxPool / Resize on uint8 when input and output share one grid.

:func:`plan_integer_region` decides, on the float graph, which of those ops join the integer region:

- **QLinear ops** (:data:`QLINEAR_OP_TYPES`) get Q/DQ on their inputs and their output (one calibrated
  range per tensor: QLinearConcat and QLinearAdd requantize each input, so differently-scaled branches
  keep their own grids). A Sigmoid output gets the fixed grid [0, 1] (scale 1/255, zero point 0): it
  needs no calibration and loses nothing to an unlucky range.
- **Pass-through ops** (:data:`PASS_THROUGH_OP_TYPES`) get no new Q/DQ: the input's DequantizeLinear is
  moved below them (:class:`~qdeploy.graph.passes.sink_dq.SinkDQPass`), exact for Split, MaxPool and
  nearest Resize. Their outputs are *aliases*: a conv reading a Split output reuses the Split input's grid
  instead of requantizing it (ORT's Split fusion needs equal grids, else the Split runs in float).
- An op joins only if it removes a float island: every data input comes from the integer region (a
  quantized layer, a region op, a graph input, a tensor a quantized layer reads anyway, or a pooled
  ``N x C x 1 x 1`` tensor whose Q costs nothing), and every consumer of its output is in the region,
  except consumers that only compute pooled statistics (``ReduceMean``, ``x - mean``, ``Pow`` ... down to
  a ``1 x 1`` tensor) or a ``Shape``. Graph outputs and float consumers (LayerNorm, Softmax, Erf...) keep
  it float, so transformers (SwinIR) and graphs without these patterns are not changed.
  The set is the greatest fixed point: ops are dropped until every remaining one satisfies the rule.
- Linear Resize is *not* a pass-through op: ORT's uint8 linear Resize truncates (measured: mean error
  -0.47 LSB, up to -1 LSB, vs the float result), a bias on every resized value; it stays float.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import onnx_ir as ir

from qdeploy.graph.select import activation_slots, constant_array

__all__ = [
    "PASS_THROUGH_OP_TYPES",
    "QLINEAR_OP_TYPES",
    "SIGMOID_RANGE",
    "RegionPlan",
    "Shapes",
    "inferred_shapes",
    "is_pooled",
    "plan_integer_region",
    "pooled_convs",
]

#: Ops ORT 1.31 CPU fuses from ``DQ -> op -> Q`` into a com.microsoft QLinear* kernel (uint8/int8).
QLINEAR_OP_TYPES = frozenset({"Add", "Mul", "Concat", "LeakyRelu", "Sigmoid", "AveragePool"})
#: Ops that run on uint8 with the input's grid (ORT kernels exist for uint8; the result is exact).
PASS_THROUGH_OP_TYPES = frozenset({"Split", "MaxPool", "Resize"})
#: The fixed grid of a sigmoid output: exactly [0, 1] with 256 codes.
SIGMOID_RANGE = (0.0, 1.0)

_BINARY = frozenset({"Add", "Mul"})


@dataclass(frozen=True)
class RegionPlan:
    """What :func:`plan_integer_region` decided (names are tensor or node names of the planned graph).

    Attributes:
        tensors: Extra activation tensors to calibrate and quantize, in graph order.
        fixed: Tensors quantized on a fixed range instead of a calibrated one (sigmoid outputs).
        aliases: Outputs of pass-through ops: they reuse their input's grid and get no Q/DQ of their own.
        pass_through: Pass-through nodes whose input DequantizeLinear is moved below them, in graph order.
        qlinear: Nodes expected to run as QLinear kernels (for reports and tests).
    """

    tensors: tuple[str, ...] = ()
    fixed: dict[str, tuple[float, float]] = field(default_factory=dict)
    aliases: frozenset[str] = frozenset()
    pass_through: tuple[str, ...] = ()
    qlinear: tuple[str, ...] = ()


Shapes = Mapping[str, ir.Value]
"""Values of a shape-inferred copy by name, for graphs whose values carry no type or shape (TorchScript)."""


def _known(value: ir.Value, shapes: Shapes | None) -> ir.Value:
    """``value``, or its shape-inferred twin when ``value`` itself has no type or shape."""
    if (value.shape is None or value.type is None) and shapes is not None and value.name in shapes:
        return shapes[value.name]
    return value


def inferred_shapes(model: ir.Model) -> Shapes | None:
    """Shape-inferred values by name when some tensor carries no type or shape (None: the values suffice).

    Inference runs on a copy: the quantized model must not gain value_info the float model lacked.
    """
    if all(out.shape is not None and out.type is not None for node in model.graph for out in node.outputs):
        return None
    from onnx_ir.passes.common import ShapeInferencePass

    clone = model.clone()
    try:
        ShapeInferencePass()(clone)
    except Exception:  # inference is best effort: without shapes nothing counts as pooled
        return None
    return {out.name: out for node in clone.graph for out in node.outputs if out.name}


def is_pooled(value: ir.Value | None, shapes: Shapes | None = None) -> bool:
    """True for a tensor of static shape ``N x C x 1 x 1`` (rank >= 3, every spatial dim exactly 1)."""
    shape = _known(value, shapes).shape if value is not None else None
    if shape is None or len(shape) < 3:
        return False
    return all(isinstance(d, int) and d == 1 for d in shape.dims[2:])


def pooled_convs(graph: ir.Graph, matches: Callable[[ir.Node], bool], shapes: Shapes | None = None) -> list[str]:
    """Names of selected Convs whose input is pooled (``N x C x 1 x 1``): the *pooled-stay-float* rule.

    Why float: such a conv costs C_in x C_out multiply-adds per image, nothing INT8 could speed up, while
    its output (an attention logit in IMDN/RCAN-style channel attention) scales a whole channel: a rounding
    error there is a systematic gain error on every pixel of that channel, not noise that averages out.
    """
    return [n.name for n in graph
            if n.op_type == "Conv" and n.name and matches(n) and is_pooled(n.inputs[0], shapes)]


def _is_float(value: ir.Value | None, shapes: Shapes | None = None) -> bool:
    if value is None or constant_array(value) is not None:
        return False
    return _known(value, shapes).dtype == ir.DataType.FLOAT


def _data_inputs(node: ir.Node) -> list[ir.Value | None]:
    """Inputs that carry the tensor data (not Resize scales, Split sizes, ...)."""
    if node.op_type in _BINARY or node.op_type == "Concat":
        return list(node.inputs)
    return list(node.inputs[:1])


def _candidate(node: ir.Node, shapes: Shapes | None = None) -> bool:
    """Whether ``node`` has the form an ORT integer kernel takes (before looking at its neighbours)."""
    if node.domain != "" or node.op_type not in QLINEAR_OP_TYPES | PASS_THROUGH_OP_TYPES:
        return False
    data = _data_inputs(node)
    if not data or not all(_is_float(v, shapes) for v in data):
        return False
    if node.op_type in _BINARY and len(node.inputs) != 2:
        return False
    if node.op_type == "Resize":
        return node.attributes.get_string("mode", "nearest") == "nearest"
    if node.op_type == "MaxPool":
        return len(node.outputs) == 1 or not list(node.outputs[1].uses())
    return all(_is_float(out, shapes) for out in node.outputs)


class _Planner:
    """The fixed-point computation behind :func:`plan_integer_region` (state shared by its rules)."""

    def __init__(self, graph: ir.Graph, matches: Callable[[ir.Node], bool], shapes: Shapes | None) -> None:
        self.graph = graph
        self.shapes = shapes
        self.anchors = {n for n in graph if matches(n) and activation_slots(n)}
        self.anchor_inputs = {id(n.inputs[i]) for n in self.anchors for i in activation_slots(n)}
        self.members = {n for n in graph if _candidate(n, shapes)}
        self._bound: dict[int, bool] = {}

    def run(self) -> None:
        """Drop members that violate the rule until none does."""
        changed = True
        while changed:
            changed = False
            for node in [n for n in self.graph if n in self.members]:
                if not (self._inputs_ok(node) and self._outputs_ok(node)):
                    self.members.discard(node)
                    self._bound.clear()  # a dropped member may now be a float statistics op
                    changed = True

    def in_region(self, node: ir.Node | None) -> bool:
        """A quantized layer or a region op."""
        return node is not None and (node in self.anchors or node in self.members)

    def folded_relu(self, value: ir.Value) -> ir.Node | None:
        """The Relu that follows ``value``'s region producer and is folded into its output Q (zp = 0)."""
        uses = list(value.uses())
        if len(uses) != 1 or value.is_graph_output() or not self.in_region(value.producer()):
            return None
        node = uses[0].node
        return node if node.op_type == "Relu" and node.domain == "" else None

    def quantized_output(self, node: ir.Node) -> ir.Value:
        """The tensor a region op's output Q goes on: after a folded Relu, like the convs."""
        relu = self.folded_relu(node.outputs[0])
        return relu.outputs[0] if relu is not None else node.outputs[0]

    def from_region(self, value: ir.Value | None) -> bool:
        """``value`` is already integer: produced in the region (or through a folded Relu)."""
        producer = value.producer() if value is not None else None
        if producer is None:
            return False
        if producer.op_type == "Relu" and producer.domain == "" and producer.inputs[0] is not None:
            return self.folded_relu(producer.inputs[0]) is producer
        return self.in_region(producer)

    def source_ok(self, value: ir.Value | None, pooled_ok: bool) -> bool:
        """Can ``value`` enter the region at no full-resolution float cost?"""
        if value is None or self.from_region(value):
            return True
        if value.is_graph_input() or id(value) in self.anchor_inputs:
            return True
        return pooled_ok and is_pooled(value, self.shapes)

    def _inputs_ok(self, node: ir.Node) -> bool:
        """Every data input is integer; a pooled float input may be quantized, except a sigmoid's logits."""
        pooled_ok = node.op_type in QLINEAR_OP_TYPES and node.op_type != "Sigmoid"
        return all(self.source_ok(v, pooled_ok) for v in _data_inputs(node))

    def _outputs_ok(self, node: ir.Node) -> bool:
        outputs = [self.quantized_output(node)] if node.op_type in QLINEAR_OP_TYPES else list(node.outputs)
        verdicts = [self._consumers(v) for v in outputs if v.uses() or v.is_graph_output()]
        return bool(verdicts) and all(v is not None for v in verdicts) and any(verdicts)

    def _consumers(self, value: ir.Value) -> bool | None:
        """None if some consumer is a float op that needs the full tensor; else whether one is in the region."""
        if value.is_graph_output():
            return None
        region = False
        for use in value.uses():
            if self._region_use(use):
                region = True
            elif not (use.node.op_type == "Shape" or self._pooled_bound(use.node)):
                return None
        return region

    def _region_use(self, use: ir.Usage) -> bool:
        """The use reads a data input of a quantized layer or of a region op."""
        if use.node in self.anchors:
            return use.idx in activation_slots(use.node)
        return use.node in self.members and use.idx < len(_data_inputs(use.node))

    def _pooled_bound(self, node: ir.Node) -> bool:
        """A float op whose every result ends, through float ops only, in pooled (``1 x 1``) tensors."""
        key = id(node)
        if key not in self._bound:
            self._bound[key] = not self.in_region(node) and node.domain == "" and all(
                self._pooled_value(out) for out in node.outputs)
        return self._bound[key]

    def _pooled_value(self, value: ir.Value) -> bool:
        if value.is_graph_output():
            return False
        return is_pooled(value, self.shapes) or all(self._pooled_bound(u.node) for u in value.uses())


def plan_integer_region(graph: ir.Graph, matches: Callable[[ir.Node], bool],
                        shapes: Shapes | None = None) -> RegionPlan:
    """Plan the integer region around the quantized layers ``matches`` selects (see the module docstring).

    ``graph`` must be the prepared graph (named, topologically sorted) with value shapes where known;
    without shapes (on the values or in ``shapes``) no tensor counts as pooled. The graph is not modified.
    """
    planner = _Planner(graph, matches, shapes)
    planner.run()
    order = {id(n): i for i, n in enumerate(graph)}
    qlinear = [n for n in graph if n in planner.members and n.op_type in QLINEAR_OP_TYPES]
    passing = [n for n in graph if n in planner.members and n.op_type in PASS_THROUGH_OP_TYPES]
    tensors: dict[str, ir.Value] = {}
    for node in [n for n in graph if n in planner.members]:
        produced = [planner.quantized_output(node)] if node.op_type in QLINEAR_OP_TYPES else []
        entering = [v for v in _data_inputs(node) if v is not None and not planner.from_region(v)]
        tensors.update((v.name, v) for v in [*entering, *produced] if v.name)
    fixed = {name: SIGMOID_RANGE for name, v in tensors.items() if _sigmoid_output(v)}
    aliases = frozenset(out.name for n in passing for out in n.outputs if out.name)

    def position(value: ir.Value) -> int:
        producer = value.producer()
        return -1 if producer is None else order.get(id(producer), -1)

    ordered = sorted(tensors.values(), key=position)
    return RegionPlan(tuple(v.name for v in ordered if v.name not in fixed and v.name not in aliases), fixed,
                      aliases, _names(passing), _names(qlinear))


def _sigmoid_output(value: ir.Value) -> bool:
    producer = value.producer()
    return producer is not None and producer.op_type == "Sigmoid" and producer.domain == ""


def _names(nodes: Iterable[ir.Node]) -> tuple[str, ...]:
    return tuple(n.name for n in nodes if n.name)
