"""ExposeTensorsPass: extra outputs are exact, original outputs stay first, errors name the tensor."""

from __future__ import annotations

import numpy as np
import pytest
from qdq_models import check_onnx, run

from qdeploy.errors import InputError
from qdeploy.graph.passes import ExposeTensorsPass


def _relu_and_conv(model):
    relu = next(n for n in model.graph if n.op_type == "Relu")
    return relu.outputs[0].name, relu.inputs[0].name


def test_exposed_values_are_exact_and_originals_first(conv_model, conv_feeds) -> None:
    relu_out, conv_out = _relu_and_conv(conv_model)
    exposed = ExposeTensorsPass([relu_out, conv_out, "y"])(conv_model).model
    check_onnx(exposed)
    assert [v.name for v in exposed.graph.outputs] == ["y", relu_out, conv_out]
    assert [v.name for v in conv_model.graph.outputs] == ["y"]  # functional: input untouched
    got, ref = run(exposed, conv_feeds[0]), run(conv_model, conv_feeds[0])
    np.testing.assert_array_equal(got["y"], ref["y"])
    np.testing.assert_array_equal(got[relu_out], np.maximum(got[conv_out], 0))
    assert got[conv_out].min() < 0 < got[conv_out].max()  # a real pre-ReLU tensor


def test_graph_input_can_be_exposed(conv_model, conv_feeds) -> None:
    got = run(ExposeTensorsPass(["x"])(conv_model).model, conv_feeds[0])
    np.testing.assert_array_equal(got["x"], conv_feeds[0]["x"])


def test_nothing_to_add_reports_unmodified(conv_model) -> None:
    assert ExposeTensorsPass(["y"])(conv_model).modified is False


@pytest.mark.parametrize("name", ["no_such_tensor", ""])
def test_unknown_name_is_input_error(conv_model, name: str) -> None:
    with pytest.raises(InputError, match="not in the model"):
        ExposeTensorsPass([name])(conv_model)


def test_constant_is_input_error(conv_model) -> None:
    weight = next(iter(conv_model.graph.initializers))
    with pytest.raises(InputError, match="constant"):
        ExposeTensorsPass([weight])(conv_model)
