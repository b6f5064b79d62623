"""graph.select: node filters (op type, include/exclude regex) and per-op input layout."""

from __future__ import annotations

import pytest
from qdq_models import conv_net, from_text, mlp_net

from qdeploy.graph.select import NodeFilter, activation_slots, activation_tensors, bias_slot, select_nodes, weight_slot


def test_filter_by_op_type_and_regex() -> None:
    model = conv_net()
    convs = [n.name for n in select_nodes(model.graph, NodeFilter())]
    assert convs == ["/c1/Conv", "/c2/Conv", "/head/Conv"]
    no_head = select_nodes(model.graph, NodeFilter(exclude_nodes=("head",)))
    assert [n.name for n in no_head] == ["/c1/Conv", "/c2/Conv"]
    only_c2 = select_nodes(model.graph, NodeFilter(include_nodes=(r"^/c2/",)))
    assert [n.name for n in only_c2] == ["/c2/Conv"]
    assert select_nodes(model.graph, NodeFilter(exclude_op_types=("Conv",))) == []


def test_invalid_filter_values_raise_value_error() -> None:
    with pytest.raises(ValueError, match="cannot be quantized"):
        NodeFilter(op_types=("Relu",))
    with pytest.raises(ValueError, match="invalid node-name pattern"):
        NodeFilter(include_nodes=("(",))


def test_mlp_layout() -> None:
    graph = mlp_net().graph
    nodes = {n.op_type + str(i): n for i, n in enumerate(select_nodes(graph, NodeFilter()))}
    gemm, matmul_w, matmul_act = nodes.values()
    assert gemm.op_type == "Gemm" and weight_slot(gemm) == (1, 0) and bias_slot(gemm) == 2
    assert activation_slots(matmul_w) == [0] and weight_slot(matmul_w) == (1, 1)  # W is [K=16, N=8]
    assert activation_slots(matmul_act) == [0, 1] and weight_slot(matmul_act) is None


GEMM_T0 = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2, 4] a) => (float[2, 3] y) <float[4, 3] w = {1,2,3,4,5,6,7,8,9,10,11,12}> {
  y = Gemm <transB = 0> (a, w)
}
"""


def test_gemm_trans_b0_axis_and_per_tensor_option() -> None:
    gemm = next(iter(from_text(GEMM_T0).graph))
    assert weight_slot(gemm) == (1, 1)
    assert weight_slot(gemm, per_channel=False) == (1, None)
    assert bias_slot(gemm) is None


def test_activation_tensors_folds_relu_and_keeps_order() -> None:
    graph = conv_net().graph
    plain = activation_tensors(graph, NodeFilter())
    assert plain[0] == "x" and len(plain) == 3
    with_out = activation_tensors(graph, NodeFilter(), outputs=True, through_relu=True)
    assert with_out[0] == "x" and with_out[-1] == "y"
    assert "/Relu_output_0" in with_out and "/c1/Conv_output_0" not in with_out  # ReLU folded
