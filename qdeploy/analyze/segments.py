"""Prefix reuse for the sensitivity sweep: start each run at the last cut point before its tensor.

Why: "only tensor i quantized" computes the float model up to tensor i, and "only tensor i float" the
all-quantized model up to it; those prefixes are the same for every tensor after them. On a deep model
(SwinIR-light: 24 transformer blocks) a run that starts at the block of its tensor does on average half
the work. ORT cannot be fed an intermediate tensor, so each cut point gets its own *suffix model*: the
switch graph with the nodes before the cut removed and the values crossing the cut (few: a residual
stream, a skip feature, shape scalars) turned into graph inputs, fed from a cache filled by two full
runs per sample (mask all on, all off) that expose those values.

A cut is a position in the top-level node order where at most ``max_live`` computed values cross it.
Nodes that depend only on initializers and the mask (mask Gathers, weight DQ + Where switches) are
kept in every suffix model, so a weight's switch always takes effect. Results are the same as full runs
(same graph, same inputs; tested), the cost is one ORT session per cut and the cached tensors.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx_ir as ir

from qdeploy.analyze.switch import MASK_INPUT, SwitchGraph

__all__ = ["PrefixRunner"]

_INF = 1 << 30


def _consumed(node: ir.Node) -> set[str]:
    """Names of outer values ``node`` reads: its inputs and what its subgraphs read from outside."""
    names = {v.name for v in node.inputs if v is not None}
    for attr in node.attributes.values():
        graphs = [attr.value] if attr.type == ir.AttributeType.GRAPH else (
            list(attr.value) if attr.type == ir.AttributeType.GRAPHS else [])
        for graph in graphs:
            inner = {v.name for n in ir.traversal.RecursiveGraphIterator(graph) for v in n.outputs}
            inner |= {v.name for v in graph.inputs}
            for sub in ir.traversal.RecursiveGraphIterator(graph):
                names |= {v.name for v in sub.inputs if v is not None and v.name not in inner}
    return names


class _Layout:
    """Positions, constant-only nodes and liveness of the switch graph's top-level node order."""

    def __init__(self, switch: SwitchGraph) -> None:
        graph = switch.model.graph
        self.nodes = list(graph)
        const = set(graph.initializers) | {MASK_INPUT}
        self.constant: list[bool] = []
        self.reads: list[set[str]] = []
        for node in self.nodes:
            reads = _consumed(node)
            is_const = reads <= const
            if is_const:
                const |= {v.name for v in node.outputs}
            self.constant.append(is_const)
            self.reads.append(reads)
        self.const_names = const
        born = {v.name: -1 for v in graph.inputs if v.name != MASK_INPUT}
        for k, node in enumerate(self.nodes):
            if not self.constant[k]:
                born |= {v.name: k for v in node.outputs}
        last = dict.fromkeys(born, -1)
        for k, reads in enumerate(self.reads):
            for name in reads & born.keys():
                last[name] = k
        for out in graph.outputs:
            last[out.name] = _INF
        self.born, self.last = born, last
        self._live: dict[int, list[str]] = {}
        self.starts = self._tensor_starts(switch)
        self._model = switch.model
        self._shapes: dict[str, ir.Shape] | None = None

    def shape(self, name: str) -> ir.Shape | None:
        """The inferred shape of value ``name`` (inference runs once, only for graphs without shapes)."""
        if self._shapes is None:
            self._shapes = _inferred_shapes(self._model)
        return self._shapes.get(name)

    def live(self, k: int) -> list[str]:
        """Computed values produced before position ``k`` and read at or after it."""
        if k not in self._live:
            self._live[k] = sorted(n for n, b in self.born.items() if b < k <= self.last[n])
        return self._live[k]

    def _tensor_starts(self, switch: SwitchGraph) -> list[int]:
        """Per tensor: the first non-constant node its mask entry reaches (through constant-only nodes)."""
        flags: dict[int, str] = {}
        for node in self.nodes:
            if node.op_type == "Gather" and node.inputs[0] is not None and node.inputs[0].name == MASK_INPUT:
                index = node.inputs[1].const_value
                flags[int(index.numpy())] = node.outputs[0].name
        starts = []
        for i in range(len(switch.tensors)):
            reached, start = {flags[i]}, _INF
            for k, node in enumerate(self.nodes):
                if self.reads[k] & reached:
                    if self.constant[k]:
                        reached |= {v.name for v in node.outputs}
                    else:
                        start = k
                        break
            starts.append(start)
        return starts


def _inferred_shapes(model: ir.Model) -> dict[str, ir.Shape]:
    """Value shapes ONNX shape inference finds in ``model`` (for graphs saved without value_info)."""
    import onnx

    try:
        proto = onnx.shape_inference.infer_shapes(ir.to_proto(model), data_prop=True)
    except (onnx.shape_inference.InferenceError, ValueError):  # an unknown op, or a model over 2 GB
        return {}
    shapes = {}
    for info in [*proto.graph.value_info, *proto.graph.output]:
        tensor = info.type.tensor_type
        if tensor.HasField("shape"):
            shapes[info.name] = ir.Shape([d.dim_value if d.HasField("dim_value") else None
                                          for d in tensor.shape.dim])
    return shapes


def _cut_shape(known: ir.Shape | None, example: np.ndarray) -> ir.Shape:
    """The shape of a value crossing the cut as a graph input: its known static dims, the rest dynamic.

    Why keep static dims: shape vectors cross cuts too (e.g. the ``sizes`` of a Resize computed from
    ``Shape(x)`` by a dynamic-H/W export), and ONNX's Resize shape inference reads a ``sizes`` input of
    unknown length as 0 elements and rejects the model ("Number of elements of input 'sizes' (0) must be
    same as rank of input 'X'"). A dim is kept only where the cached value agrees, so feeding it never
    trips ONNX Runtime's input check; symbolic dims stay dynamic.
    """
    dims = list(known.dims) if known is not None and len(known) == example.ndim else [None] * example.ndim
    return ir.Shape([d if isinstance(d, int) and d == example.shape[j] else None for j, d in enumerate(dims)])


def _suffix_model(switch: SwitchGraph, layout: _Layout, k: int, examples: dict[str, np.ndarray]) -> ir.Model:
    """The switch graph from position ``k`` on; values crossing the cut become graph inputs."""
    model = switch.model.clone()
    graph = model.graph
    nodes = list(graph)
    values = {v.name: v for v in graph.inputs} | {v.name: v for n in nodes for v in n.outputs}
    new_inputs = []
    for name in layout.live(k):
        old = values[name]
        if old.is_graph_input():
            continue  # a model input read after the cut is simply fed again
        old.name = f"{name}__prefix"
        example = examples[name]  # dtype and rank from the cached value
        new = ir.Value(name=name, type=ir.TensorType(ir.DataType.from_numpy(example.dtype)),
                       shape=_cut_shape(old.shape if old.shape is not None else layout.shape(name), example))
        old.replace_all_uses_with(new, replace_graph_outputs=True)
        new_inputs.append(new)
    # not safe=True: the removed If nodes' branches read removed values, which the check counts as outside uses
    graph.remove([n for j, n in enumerate(nodes[:k]) if not layout.constant[j]])
    for value in list(graph.inputs):
        if value.name != MASK_INPUT and not value.uses() and not value.is_graph_output():
            graph.inputs.remove(value)
    graph.inputs.extend(new_inputs)
    return model


class PrefixRunner:
    """Runs mask configurations from the last cut before a tensor, fed from cached prefixes.

    ``fill(on)`` runs every sample through the full graph with mask all ``on`` (exposing the values
    that cross the chosen cuts) and returns the outputs; ``run(mask, i, on, b)`` evaluates sample ``b``
    with ``mask`` starting at tensor ``i``'s cut, on top of the ``fill(on)`` prefix.
    """

    def __init__(self, switch: SwitchGraph, batches: Sequence[dict[str, np.ndarray]],
                 open_session: Callable[[ir.Model], Any], max_live: int = 16, max_cuts: int = 32,
                 max_cache_bytes: int = 1 << 30) -> None:
        self.switch, self.batches, self.open = switch, batches, open_session
        self.layout = _Layout(switch)
        self.max_cuts, self.max_cache_bytes = max_cuts, max_cache_bytes
        eligible = [k for k in sorted(set(self.layout.starts)) if k < _INF
                    and len(self.layout.live(k)) <= max_live]
        self.cuts = self._thin(eligible, max_cuts)
        self.cache: dict[bool, list[dict[str, np.ndarray]]] = {True: [], False: []}
        self.sessions: dict[int, Any] = {}
        #: Seconds each suffix session took to open: on a large graph opening dominates a tensor's own runs,
        #: so the sweep's estimate counts it once per cut, not once per tensor.
        self.open_seconds: list[float] = []
        self.out_names = [v.name for v in switch.model.graph.outputs]
        self.cache_bytes = 0
        work = np.array([not c for c in self.layout.constant], dtype=np.int64)
        self._nodes_from = np.cumsum(work[::-1])[::-1]  # non-constant nodes at or after each position

    @staticmethod
    def _thin(cuts: list[int], keep: int) -> list[int]:
        if len(cuts) <= keep:
            return cuts
        picks = np.linspace(0, len(cuts) - 1, keep).round().astype(int)
        return sorted({cuts[p] for p in picks})

    def fill(self, on: bool) -> list[dict[str, np.ndarray]]:
        """Full runs with mask all ``on``; caches the crossing values, returns the model outputs."""
        from qdeploy.graph.passes import ExposeTensorsPass

        if 0 not in self.sessions:
            self.sessions[0] = self.open(self.switch.model)
        names = self._crossing()
        exposed = self.open(ExposeTensorsPass(names)(self.switch.model.clone()).model) if names else None
        outputs = []
        for feeds in self.batches:
            got = (exposed or self.sessions[0]).run({**feeds, MASK_INPUT: self.switch.mask(on)})
            if not self.cache[True] and not self.cache[False] and not outputs:
                self._fit_budget(got)  # sized on the first sample: values of one cut are ~sample-sized
            names = self._crossing()
            self.cache[on].append({n: got[n] for n in names})
            outputs.append({n: got[n] for n in self.out_names})
        self.cache_bytes = sum(a.nbytes for c in self.cache.values() for d in c for a in d.values())
        return outputs

    def _crossing(self) -> list[str]:
        inputs = {v.name for v in self.switch.model.graph.inputs}
        return sorted({n for k in self.cuts for n in self.layout.live(k)} - inputs)

    def _fit_budget(self, sample: dict[str, np.ndarray]) -> None:
        """Halve the cuts until two bases x all samples of their crossing values fit ``max_cache_bytes``."""
        def need() -> int:
            return 2 * len(self.batches) * sum(sample[n].nbytes for n in self._crossing())

        while self.cuts and need() > self.max_cache_bytes:
            self.cuts = self._thin(self.cuts, len(self.cuts) // 2)

    def cut_of(self, i: int) -> int:
        """The position tensor ``i``'s runs start at (0: the full model)."""
        start = self.layout.starts[i]
        return max((k for k in self.cuts if k <= start), default=0)

    def unopened_cuts(self, n: int) -> int:
        """How many suffix sessions tensors ``0..n-1`` will still open (cut 0 is the full model's)."""
        return len({self.cut_of(i) for i in range(n)} - {0} - set(self.sessions))

    def share(self, i: int) -> float:
        """Rough share of a full run's work that tensor ``i``'s runs do: the non-constant nodes from its cut on
        (node counts, not FLOPs: good enough for an estimate of the sweep's time)."""
        k, nodes = self.cut_of(i), self._nodes_from
        if not len(nodes) or not nodes[0] or k >= len(nodes):
            return 1.0
        return float(nodes[k] / nodes[0])

    def run(self, mask: np.ndarray, i: int, on: bool, b: int) -> dict[str, np.ndarray]:
        """Sample ``b`` with ``mask``, starting at tensor ``i``'s cut on the ``fill(on)`` prefix."""
        k = self.cut_of(i)
        if not k:
            return self.sessions[0].run({**self.batches[b], MASK_INPUT: mask}, self.out_names)
        cached = self.cache[on][b]
        if k not in self.sessions:
            start = time.perf_counter()
            session = self.open(_suffix_model(self.switch, self.layout, k, cached))
            self.open_seconds.append(time.perf_counter() - start)
            self.sessions[k] = (session, {spec.name for spec in session.inputs})
        session, inputs = self.sessions[k]
        feeds = {n: v for n, v in self.batches[b].items() if n in inputs}
        feeds |= {n: cached[n] for n in self.layout.live(k) if n in cached}
        return session.run({**feeds, MASK_INPUT: mask}, self.out_names)
