"""Readable tensor names (qdeploy.graph.names) on hand-made graphs: what each exporter leaves, the stored map,
the guesses for values the map misses, and the fallback when nothing was recorded."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from qdeploy.graph.io import model_from_bytes, model_to_bytes
from qdeploy.graph.names import (
    NAMES_KEY,
    TOP,
    attach_modules,
    complete_modules,
    labels,
    module_of_node,
    readable_names,
    record_modules,
)


def _node(name: str, scopes: str | None = None) -> ir.Node:
    node = ir.Node("", "Relu", [ir.Value(name="x")], name=name)
    if scopes is not None:
        node.metadata_props["pkg.torch.onnx.name_scopes"] = scopes
    return node


@pytest.mark.parametrize(("name", "scopes", "module"), [
    ("/layers.0/blocks/blocks.1/blocks.1.0/Conv", None, "layers.0.blocks.1.0"),  # TorchScript, nested containers
    ("/body/body.2/c3/Conv", None, "body.2.c3"),
    ("/c3/Conv", None, "c3"),
    ("/Slice", None, ""),  # the top-level module's own op
    ("node_conv2d_1", "['', 'blocks', 'blocks.0', 'blocks.0.conv', 'conv2d_1']", "blocks.0.conv"),  # dynamo
    ("node_cat", "['', 'cat']", ""),
    ("node_conv2d", None, None),  # nothing recorded
    ("node_conv2d", "not a list", None),
])
def test_module_of_node(name: str, scopes: str | None, module: str | None) -> None:
    assert module_of_node(_node(name, scopes)) == module


def _graph(names: dict[str, str] | None = None, weight: str = "val_3", node_names: bool = False,
           bias: str = "blocks.0.conv.bias") -> ir.Model:
    """x -> Conv(weight, blocks.0.conv.bias) -> a -> Relu -> b -> Add(b, a) -> c -> Reshape(shape) -> y."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), weight),
        numpy_helper.from_array(np.zeros(4, np.float32), bias),
        numpy_helper.from_array(np.array([1, -1], np.int64), "shape"),
    ]
    prefix = "/blocks/blocks.0/" if node_names else "node_"
    nodes = [
        helper.make_node("Conv", ["x", weight, bias], ["a"], f"{prefix}conv/Conv", pads=[1] * 4),
        helper.make_node("Relu", ["a"], ["b"], f"{prefix}act/Relu"),
        helper.make_node("Add", ["b", "a"], ["c"], f"{prefix}Add"),
        helper.make_node("Reshape", ["c", "shape"], ["y"], "Reshape_0"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    if names is not None:
        helper.set_model_props(proto, {NAMES_KEY: json.dumps(names)})
    onnx.checker.check_model(proto)
    return ir.serde.deserialize_model(proto)


STORED = {"a": "blocks.0.conv", "b": "blocks.0.act", "c": "blocks.0", "val_3": "blocks.0.conv"}


def test_stored_map_names_activations_and_weights() -> None:
    model = _graph(STORED)
    names, shown = readable_names(model), labels(model)
    assert names["a"] == "blocks.0.conv" and names["c"] == "blocks.0"
    assert names["val_3"] == "blocks.0.conv.weight"  # a folded weight is named after its layer
    assert names["blocks.0.conv.bias"] == "blocks.0.conv.bias"  # already a parameter path
    assert names["x"] == "x" and names["shape"] == "shape"  # inputs and shape constants keep their names
    assert shown["a"] == "blocks.0.conv (Conv)" and shown["b"] == "blocks.0.act (Relu)"
    assert shown["y"] == "blocks.0 (Reshape)"  # not in the map: joins the module of its input


def test_guess_prefers_consumers_and_numbers_repeats() -> None:
    model = _graph({"y": "blocks.0", "a": "blocks.0.conv"})
    done = complete_modules(model.graph, {"y": "blocks.0", "a": "blocks.0.conv"})
    assert done["c"] == "blocks.0" and done["b"] == "blocks.0"  # from the consumer chain, back to front
    shown = labels(model)
    assert shown["a"] == "blocks.0.conv (Conv)" and shown["y"] == "blocks.0 (Reshape)"


def test_torchscript_node_names_need_no_map() -> None:
    shown = labels(_graph(None, node_names=True))
    assert shown["a"] == "blocks.0.conv (Conv)" and shown["c"] == "blocks.0 (Add)"
    assert shown["val_3"] == "blocks.0.conv.weight"


def test_without_metadata_falls_back_to_node_and_parameter_names() -> None:
    model = _graph(None, weight="blocks.0.conv.weight")
    shown = labels(model)
    assert shown["a"] == "blocks.0.conv (Conv)"  # the layer's own parameter names say which module it is
    assert shown["b"] == "node_act/Relu (Relu)" and shown["y"] == "Reshape_0 (Reshape)"  # op and node name
    assert labels(_graph(None))["val_3"] == "blocks.0.conv.weight"  # the bias's name placed the layer
    bare = labels(_graph(None, bias="val_4"))
    assert bare["a"] == "node_conv/Conv (Conv)" and bare["val_3"] == "val_3"


def test_attach_keeps_present_names_and_survives_clone_and_bytes() -> None:
    model = _graph(None)
    count = attach_modules(model, {**STORED, "gone": "elsewhere"})
    stored = json.loads(model.metadata_props[NAMES_KEY])
    assert "gone" not in stored and stored["a"] == "blocks.0.conv" and stored["y"] == "blocks.0"
    assert count == len(stored)
    again = model_from_bytes(model_to_bytes(model.clone()))
    assert labels(again)["b"] == "blocks.0.act (Relu)"


def test_record_reads_node_metadata_and_weight_consumers() -> None:
    model = _graph(None)
    for node, scopes in zip(model.graph, ("['', 'blocks', 'blocks.0', 'blocks.0.conv', 'conv2d']",
                                          "['', 'blocks', 'blocks.0', 'blocks.0.act', 'relu']",
                                          "['', 'blocks', 'blocks.0', 'add']", "['', 'view']")):
        node.metadata_props["pkg.torch.onnx.name_scopes"] = scopes
    recorded = record_modules(model)
    assert recorded["a"] == "blocks.0.conv" and recorded["val_3"] == "blocks.0.conv" and recorded["y"] == ""
    assert labels(model)["y"] == f"{TOP} (Reshape)"
