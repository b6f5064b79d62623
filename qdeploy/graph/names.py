"""Readable tensor names: which PyTorch module computed an ONNX value (``blocks.1.conv``, not ``conv2d_29``).

ONNX value names are what the QDQ passes, the calibration cache and the precision maps key on, so they never
change; this module only *describes* them. Where the module path comes from:

- the dynamo exporter records ``pkg.torch.onnx.name_scopes`` on every node (module qualified names, then
  the FX node name), and the TorchScript exporter names nodes ``/blocks/blocks.1/conv/Conv``;
- both are lost on the way (onnxsim drops node metadata and renames the nodes it rewrites), so the export
  records ``{value name: module path}`` from the raw exporter output (:func:`record_modules`) and stores
  it, completed for the final graph, as model-level metadata (:data:`NAMES_KEY`, :func:`attach_modules`),
  which onnxsim, ``model.clone()`` and the quantization passes keep;
- values the map does not know (nodes onnxsim fused, Q/DQ pairs, later rewrites) take the module of their
  weights, their consumers or their inputs (:func:`complete_modules`): a guess, but on the module that
  owns the data flow, which is what a reader needs to find the layer in the PyTorch source.

:func:`readable_names` gives ``value -> module path`` (weights ``<module>.weight``); :func:`labels` adds
the op and makes labels unique (``blocks.0 (Add)``, ``blocks.0 (Add #2)``) for tables and reports.
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import onnx_ir as ir

__all__ = [
    "NAMES_KEY",
    "TOP",
    "attach_modules",
    "complete_modules",
    "labels",
    "merged_labels",
    "module_of_node",
    "readable_names",
    "record_modules",
    "stored_modules",
]

#: How the top-level module's own ops (``torch.cat`` in the model's ``forward``) are labelled.
TOP = "top-level"
#: Model ``metadata_props`` key holding the JSON map ``{ONNX value name: module path}``.
NAMES_KEY = "qdeploy.module_names"

_SCOPES_KEY = "pkg.torch.onnx.name_scopes"
_QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
#: Which input slot of a layer holds which PyTorch parameter (a constant there is named after it).
_PARAM_SLOTS: dict[str, dict[int, str]] = {
    **{op: {1: "weight", 2: "bias"} for op in ("Conv", "ConvTranspose", "Gemm", "LayerNormalization",
                                               "InstanceNormalization", "GroupNormalization")},
    "MatMul": {1: "weight"},
    "PRelu": {1: "weight"},
    "BatchNormalization": {1: "weight", 2: "bias", 3: "running_mean", 4: "running_var"},
}
_PARAM_NAME = re.compile(r"[A-Za-z_]\w*(\.\w+)+")
_DERIVED = re.compile(r"(_quantized(_\d+)?|_prequant)$")
_SWEEPS = 4


def module_of_node(node: ir.Node) -> str | None:
    """The module path of the PyTorch module that emitted ``node``, from what the exporters left on it.

    Dynamo: the last module scope of ``pkg.torch.onnx.name_scopes`` (the final entry is the FX node).
    TorchScript: the scopes of the node name ``/layers.0/blocks/blocks.1/conv/Conv``; a container child
    repeats its parent's attribute name (``blocks`` then ``blocks.1``), so that prefix is not doubled.
    ``""`` for the top-level module's own ops; None when the node carries neither.
    """
    scopes = node.metadata_props.get(_SCOPES_KEY)
    if scopes:
        try:
            parsed = ast.literal_eval(scopes)
        except (ValueError, SyntaxError):
            parsed = None
        if isinstance(parsed, list) and parsed:
            return next((s for s in reversed(parsed[:-1]) if isinstance(s, str) and s), "")
    name = node.name or ""
    if not name.startswith("/"):
        return None
    path, previous = "", ""
    for part in name.split("/")[1:-1]:
        if previous and part.startswith(previous + "."):
            path += part[len(previous):]
        elif part:
            path = f"{path}.{part}" if path else part
        previous = part
    return path


def _constants(graph: ir.Graph) -> dict[str, ir.Value]:
    """The graph's constant values by name: initializers and Constant node outputs."""
    out = {v.name: v for n in graph if n.op_type == "Constant" and n.domain == "" for v in n.outputs if v.name}
    out.update(graph.initializers)
    return out


def record_modules(model: ir.Model) -> dict[str, str]:
    """``{value name: module path}`` of a raw exporter output, before anything strips the node metadata.

    Node outputs take their node's module; constants (weights) the module of their first consumer that
    has one, because onnxsim folds e.g. a Linear's transposed weight into a new initializer read by a
    node it renamed: the weight's recorded module is then what places that node.
    """
    graph = model.graph
    out: dict[str, str] = {}
    for node in graph:
        module = module_of_node(node)
        if module is not None:
            out.update({v.name: module for v in node.outputs if v.name})
    constants = _constants(graph)
    for node in graph:
        module = out.get(node.outputs[0].name or "") if node.outputs else None
        for value in node.inputs:
            if module is not None and value is not None and value.name in constants:
                out.setdefault(value.name, module)
    return out


def _common(modules: Iterable[str]) -> str | None:
    """Deepest module containing all of ``modules`` (dotted-path prefix, ``""`` the top); None for none."""
    parts = [m.split(".") for m in modules]
    if not parts:
        return None
    common: list[str] = []
    for level in zip(*parts):
        if any(p != level[0] for p in level):
            break
        common.append(level[0])
    return ".".join(common)


def _base(name: str) -> str:
    """The float name behind a name the QDQ passes derived (``w_quantized``, ``y_prequant``)."""
    return _DERIVED.sub("", name)


def _weight(value: ir.Value, constants: Mapping[str, ir.Value]) -> str | None:
    """Name of the constant ``value`` is, or is dequantized from (``DQ(w_quantized)`` -> ``w``)."""
    producer = value.producer()
    if producer is not None and producer.op_type in _QDQ_OPS and producer.inputs:
        value = producer.inputs[0] or value
    if value.name in constants and len(value.uses()) == 1:
        return _base(value.name or "")
    return None


def _guess(node: ir.Node, modules: Mapping[str, str], constants: Mapping[str, ir.Value]) -> str | None:
    """Module of a node the map does not know: its own weights', then its consumers', then its inputs'.

    Q/DQ nodes belong to the tensor they quantize. Only unshared constants count as "its own weights"
    (a shape constant read by every Reshape of the model says nothing about any one of them).
    """
    data = [v for v in node.inputs if v is not None and v.name]
    if node.op_type in _QDQ_OPS and data:
        return modules.get(data[0].name, modules.get(_base(data[0].name)))
    weights = {_weight(v, constants) for v in data}
    own = {modules[w] for w in weights if w in modules}
    if len(own) == 1:
        return own.pop()
    users = []
    for out in node.outputs:
        for use in out.uses():
            outs = use.node.outputs
            if outs and outs[0].name in modules:
                users.append(modules[outs[0].name])
    guess = _common(users)
    if guess is None:
        guess = _common(modules[v.name] for v in data if v.name not in constants and v.name in modules)
    return guess


def complete_modules(graph: ir.Graph, modules: Mapping[str, str]) -> dict[str, str]:
    """``modules`` plus a guessed module for every node output it lacks (see :func:`_guess`).

    Consumers are visited before producers (reverse graph order), a few sweeps until nothing changes, so a
    chain of unknown nodes in front of a known layer (onnxsim's Reshape -> Gemm -> Reshape) all join it.
    """
    out = dict(modules)
    nodes = list(graph)
    constants = _constants(graph)
    for _ in range(_SWEEPS):
        changed = False
        for node in reversed(nodes):
            missing = [v for v in node.outputs if v.name and v.name not in out]
            for value in missing:
                if _base(value.name) in out:
                    out[value.name] = out[_base(value.name)]
            missing = [v for v in missing if v.name not in out]
            if not missing:
                continue
            module = _guess(node, out, constants)
            if module is not None:
                out.update({v.name: module for v in missing})
                changed = True
        if not changed:
            break
    return out


def attach_modules(model: ir.Model, recorded: Mapping[str, str]) -> int:
    """Store the module map for ``model`` (the final export) in its metadata; returns how many values it names.

    Only names present in ``model`` are kept (onnxsim removed some); the rest are completed by
    :func:`complete_modules` on ``model``'s own graph. Nothing is stored when nothing is known.
    """
    graph = model.graph
    present = set(graph.initializers) | {v.name for n in graph for v in n.outputs if v.name}
    present |= {v.name for v in graph.inputs if v.name}
    kept = {k: v for k, v in recorded.items() if k in present}
    done = {k: v for k, v in complete_modules(graph, kept).items() if k in present}
    if done:
        model.metadata_props[NAMES_KEY] = json.dumps(done, sort_keys=True, separators=(",", ":"))
    return len(done)


def stored_modules(model: ir.Model) -> dict[str, str]:
    """The map :func:`attach_modules` stored, plus what node metadata / names still say (empty if neither)."""
    try:
        stored = json.loads(model.metadata_props.get(NAMES_KEY, "{}"))
    except ValueError:
        stored = {}
    out = {str(k): str(v) for k, v in stored.items()} if isinstance(stored, dict) else {}
    for key, value in record_modules(model).items():
        out.setdefault(key, value)
    return out


def _layer_use(use: Any) -> tuple[ir.Node, int]:
    """The layer reading a constant and the input slot, looking through a DQ (``DQ(w_quantized)``)."""
    node, slot = use.node, use.idx
    if node.op_type in _QDQ_OPS and node.outputs:
        for inner in node.outputs[0].uses():
            if inner.node.op_type in _PARAM_SLOTS:
                return inner.node, inner.idx
    return node, slot


def _role(value: ir.Value, modules: Mapping[str, str]) -> str | None:
    """``<module>.weight`` / ``.bias`` (...) for a constant a layer reads as a parameter, else None."""
    for use in value.uses():
        node, slot = _layer_use(use)
        param = _PARAM_SLOTS.get(node.op_type, {}).get(slot)
        module = modules.get(node.outputs[0].name or "") if node.outputs else None
        if param and module is not None:
            return f"{module}.{param}" if module else param
    return None


def _constant_name(value: ir.Value, modules: Mapping[str, str]) -> str:
    """A weight's readable name: its own when it is already a parameter path, else from its layer.

    Other constants (shapes, axes, scalars) keep their ONNX names: nothing quantizes or ranks them.
    """
    name = value.name or ""
    base = _base(name)
    if _PARAM_NAME.fullmatch(base) and not base.startswith("onnx"):
        return base
    return _role(value, modules) or name


def _from_weights(graph: ir.Graph, modules: dict[str, str]) -> None:
    """Layers the map misses take the module their parameter names spell (``c3.weight`` -> ``c3``).

    A fact, not a guess, so it also serves models exported before the map existed (or by other tools);
    unlike :func:`complete_modules` it does not spread to neighbours, which could mislead without a map.
    """
    for node in graph:
        slots = _PARAM_SLOTS.get(node.op_type)
        if not slots or not node.outputs or node.outputs[0].name in modules:
            continue
        for slot, param in slots.items():
            value = node.inputs[slot] if slot < len(node.inputs) else None
            producer = value.producer() if value is not None else None
            if producer is not None and producer.op_type in _QDQ_OPS and producer.inputs:
                value = producer.inputs[0]
            name = _base(value.name or "") if value is not None else ""
            if name.endswith(f".{param}") and _PARAM_NAME.fullmatch(name):
                modules.update({v.name: name[: -len(param) - 1] for v in node.outputs if v.name})
                break


def _resolve(model: ir.Model) -> tuple[dict[str, str], dict[str, str], set[str]]:
    """(readable names, module map, names of weights and of their Q/DQ outputs) of ``model``."""
    graph = model.graph
    modules = complete_modules(graph, stored_modules(model))
    _from_weights(graph, modules)
    constants = _constants(graph)
    names = {v.name: v.name for v in graph.inputs if v.name}
    weights = set(constants)
    for name, value in constants.items():
        names[name] = _constant_name(value, modules)
        names.setdefault(_base(name), names[name])
    for node in graph:
        first = node.inputs[0] if node.inputs else None
        for value in node.outputs:
            if not value.name or value.name in constants:
                continue
            if node.op_type in _QDQ_OPS and first is not None and first.name in names:
                names[value.name] = names[first.name or ""]  # a Q/DQ carries its input's name
                if first.name in weights:
                    weights.add(value.name)
                continue
            module = modules.get(value.name)
            if module is not None:
                names[value.name] = module or TOP
            else:
                names[value.name] = f"{node.name or node.op_type} ({node.op_type})"
    return names, modules, weights


def readable_names(model: ir.Model) -> dict[str, str]:
    """``{ONNX value name: readable name}`` for every value of ``model``'s main graph.

    Activations: the module path that computed them (``blocks.1.conv``); unknown ones fall back to the
    producing node's name and op (``node_cat_4 (Concat)``). Weights: ``<module>.weight`` / ``.bias``
    (their own name when it already is a parameter path), also for their DQ outputs; a quantized weight
    ``w_quantized`` is also listed under ``w``, the name analysis and calibration use for it. Graph inputs
    keep their names. Works on the float export and on QDQ models derived from it (the map travels in
    the metadata).
    """
    return _resolve(model)[0]


def labels(model: ir.Model) -> dict[str, str]:
    """``{ONNX value name: display label}``: ``blocks.1.conv (Conv)`` for activations, unique per model.

    A module that computes several values of one op gets ``#2``, ``#3`` in graph order (Q/DQ nodes are
    not counted, so a QDQ model numbers like its float model); a node's second output ``(Split:1)``.
    Weights and values of unknown module keep their :func:`readable_names` name.
    """
    names, modules, weights = _resolve(model)
    out = dict(names)
    seen: Counter[tuple[str, str]] = Counter()
    for node in model.graph:
        first = node.inputs[0] if node.inputs else None
        for i, value in enumerate(node.outputs):
            if not value.name or value.name in weights:
                continue
            if node.op_type in _QDQ_OPS and first is not None and first.name in out:
                out[value.name] = out[first.name or ""]  # the label of the tensor it quantizes
                continue
            if value.name not in modules:
                continue
            op = node.op_type + (f":{i}" if i else "")
            key = (modules[value.name] or TOP, op)
            seen[key] += 1
            out[value.name] = f"{key[0]} ({op}{f' #{seen[key]}' if seen[key] > 1 else ''})"
    return out


def merged_labels(*models: ir.Model) -> dict[str, str]:
    """:func:`labels` of several models in one map, the first model's label winning.

    The analysis names a tensor as the float model does (its Q input, its float initializer); a QDQ model
    adds the names only it has (e.g. tensors a rewrite created), so both are asked, the float one first.
    """
    out: dict[str, str] = {}
    for model in models:
        for key, value in labels(model).items():
            out.setdefault(key, value)
    return out
