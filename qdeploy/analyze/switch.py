"""The *switchable* QDQ graph: one ONNX Runtime session that can turn each quantized tensor on or off.

Why this is the core of the fast analysis: the per-tensor questions ("only this tensor quantized",
"only this tensor float") need 2N + 2 different graphs for N tensors. Building and loading 2N models costs
an ORT session creation each (graph resolve, kernel setup, allocation planning: often longer than one
inference on a small input). Instead each activation's ``[Clip ->] Q -> DQ`` nodes move into the
then-branch of an ``If(mask[i])`` whose else-branch passes the float tensor through, and each weight DQ
``d`` becomes ``Where(mask[i], d, w_float)``; ``mask`` is one extra boolean graph input of length N. All
2N + 2 configurations then run through *one* session and differ only in the ``mask`` feed; ``mask = all
ones`` computes exactly what the QDQ graph computes, bit for bit.

What stays quantized whatever the mask: int32 bias DQs (their step is ``act_scale * weight_scale``, far
below the activation's own step, so their error is negligible) and Qs without a DQ.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import TopologicalSortPass

from qdeploy.graph.passes._qdq import NameSet, add_initializer
from qdeploy.graph.qdq_inventory import FloatLookup, QuantizedTensor, quantized_tensors

__all__ = ["MASK_INPUT", "SwitchGraph", "build_switch_graph"]

#: Name of the boolean mask input (one entry per quantized tensor, in :attr:`SwitchGraph.tensors` order).
MASK_INPUT = "qdeploy_quant_mask"


@dataclass(frozen=True, eq=False)
class SwitchGraph:
    """The switchable model and what each mask entry controls.

    Attributes:
        model: the QDQ model with a ``Where`` behind every DQ and the extra input :data:`MASK_INPUT`.
        tensors: the quantized tensors (of ``model``), mask entry ``i`` switches ``tensors[i]``.
        source_names: tensor name -> name of its float value in ``model`` (activations: the Q's input;
            weights: the float initializer, or "" when no float weight was found: then the switch is a
            no-op and the tensor's sensitivity reads as zero).
        dequantized_names: tensor name -> name of its (first) DQ output in ``model``.
    """

    model: ir.Model
    tensors: tuple[QuantizedTensor, ...]
    source_names: dict[str, str]
    dequantized_names: dict[str, str]

    @property
    def names(self) -> list[str]:
        """Tensor names in mask order."""
        return [t.name for t in self.tensors]

    def mask(self, on: bool = True, flip: int | None = None) -> np.ndarray:
        """All entries ``on``, except entry ``flip`` (None: none) which is the opposite."""
        mask = np.full(len(self.tensors), on, dtype=bool)
        if flip is not None:
            mask[flip] = not on
        return mask


def _reroute(old: ir.Value, new: ir.Value, graph: ir.Graph, skip: ir.Node) -> None:
    """Every use of ``old`` except by ``skip`` reads ``new``; a graph output moves to ``new`` (named)."""
    for use in list(old.uses()):
        if use.node is not skip:
            use.node.replace_input_with(use.idx, new)
    if old.is_graph_output():
        for i, out in enumerate(graph.outputs):
            if out is old:
                graph.outputs[i] = new
        name = old.name
        old.name = f"{name}_switch_in"
        new.name = name


def build_switch_graph(qdq_model: ir.Model, float_model: ir.Model | None) -> SwitchGraph:
    """Clone ``qdq_model`` and make every quantized tensor switchable (see the module docstring).

    ``float_model`` provides the float weights (the QDQ graph only holds integers); without it weights
    cannot be switched off.
    """
    model = qdq_model.clone()
    graph = model.graph
    tensors = tuple(quantized_tensors(graph))
    names = NameSet(graph)
    floats = FloatLookup(float_model)
    mask = ir.Value(name=MASK_INPUT, shape=ir.Shape([len(tensors)]), type=ir.TensorType(ir.DataType.BOOL))
    graph.inputs.append(mask)
    sources: dict[str, str] = {}
    dequantized: dict[str, str] = {}
    for i, t in enumerate(tensors):
        index = add_initializer(graph, names, f"{t.name}_mask_index", np.array(i, np.int64))
        gather = ir.node("Gather", [mask, index], name=names.fresh(f"{t.name}_mask_Gather"))
        gather.outputs[0].name = names.fresh(f"{t.name}_mask")
        gather.outputs[0].type = ir.TensorType(ir.DataType.BOOL)
        graph.append(gather)
        if t.kind == "activation" and not t.integer_uses:
            sources[t.name] = t.source.name
            dequantized[t.name] = _switch_pairs(graph, names, t, gather.outputs[0])
            continue
        source = t.source
        if source is None:
            w = floats.weight(t) if float_model is not None else None
            source = None if w is None else add_initializer(graph, names, f"{t.name}_float", w)
        sources[t.name] = "" if source is None else source.name
        dequantized[t.name] = _switch_where(graph, names, t, gather.outputs[0], source)
    TopologicalSortPass()(model)  # new nodes were appended; the sort puts them after their producers
    return SwitchGraph(model, tensors, sources, dequantized)


def _switch_where(
    graph: ir.Graph, names: NameSet, t: QuantizedTensor, flag: ir.Value, source: ir.Value | None
) -> str:
    """``Where(flag, DQ(..), float)`` behind each DQ: for weights (small, so the Where costs nothing
    measurable) and for activations whose Q also feeds integer ops (the Q must stay in the main graph;
    those integer paths stay quantized whatever the mask)."""
    if source is None:
        return t.dq_nodes[0].outputs[0].name
    for dq in t.dq_nodes:
        out = dq.outputs[0]
        where = ir.node("Where", [flag, out, source], name=names.fresh(f"{t.name}_Switch"))
        where.outputs[0].name = names.fresh(f"{out.name}_switched")
        where.outputs[0].type, where.outputs[0].shape = out.type, out.shape
        _reroute(out, where.outputs[0], graph, where)
        graph.append(where)
    return t.dq_nodes[0].outputs[0].name


def _switch_pairs(graph: ir.Graph, names: NameSet, t: QuantizedTensor, flag: ir.Value) -> str:
    """Move the tensor's ``[Clip ->] Q -> DQ`` nodes into the then-branch of an ``If(flag)`` whose
    else-branch passes the float source through: an off pair costs no Q/DQ arithmetic at all (a ``Where``
    would compute both sides and copy), which makes "only this tensor quantized" runs as cheap as float.

    Returns the name of the If output standing for the (first) dequantized value.
    """
    dq_outs = [dq.outputs[0] for dq in t.dq_nodes]
    branch_nodes = [*t.clips, *t.q_nodes, *t.dq_nodes]
    if_node = ir.node("If", [flag], num_outputs=len(dq_outs), name=names.fresh(f"{t.name}_Switch"))
    for k, (out, switched) in enumerate(zip(dq_outs, if_node.outputs, strict=True)):
        switched.name = names.fresh(f"{out.name}_switched" if k else f"{t.name}_switch")
        switched.type, switched.shape = out.type, out.shape
        _reroute(out, switched, graph, if_node)
    graph.remove(branch_nodes)
    identities = [
        ir.node("Identity", [t.source], name=names.fresh(f"{t.name}_float_{k}")) for k in range(len(dq_outs))
    ]
    for node, out in zip(identities, dq_outs, strict=True):
        node.outputs[0].name = names.fresh(f"{out.name}_float")
        node.outputs[0].type, node.outputs[0].shape = out.type, out.shape
    then_branch = ir.Graph((), dq_outs, nodes=branch_nodes, name=names.fresh(f"{t.name}_quantized_branch"))
    else_branch = ir.Graph(
        (), [n.outputs[0] for n in identities], nodes=identities, name=names.fresh(f"{t.name}_float_branch")
    )
    if_node.attributes["then_branch"] = ir.AttrGraph("then_branch", then_branch)
    if_node.attributes["else_branch"] = ir.AttrGraph("else_branch", else_branch)
    graph.append(if_node)
    return if_node.outputs[0].name
