"""ConvTransposeToConvPass and UniformPReluToLeakyReluPass: exact in float, eligible cases only."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from qdq_models import check_onnx, export, op_types, run

from qdeploy.graph.passes import ConvTransposeToConvPass, UniformPReluToLeakyReluPass

#: Float summation order differs between ConvTranspose and the sub-pixel Conv; nothing else may.
MAX_ABS_ERR = 1e-5

CASES = [(k, s, p, op) for k, s, p, op in itertools.product((1, 2, 3, 4, 9), (1, 2, 3), (0, 1, 4), (0, 1, 2))
         if op < s and p < k]


def _deconv(k: int, s: int, p: int, op: int, groups: int = 1, dilation: int = 1):
    import torch

    torch.manual_seed(k * 100 + s * 10 + p + op)
    module = torch.nn.ConvTranspose2d(4, 2 * groups, k, stride=s, padding=p, output_padding=op, groups=groups,
                                      dilation=dilation)
    return export(module, torch.rand(1, 4, 7, 6))


@pytest.mark.parametrize(("k", "s", "p", "op"), CASES)
def test_subpixel_conv_equals_conv_transpose(k: int, s: int, p: int, op: int) -> None:
    model = _deconv(k, s, p, op)
    x = {"x": np.random.default_rng(0).uniform(-1, 1, (1, 4, 7, 6)).astype(np.float32)}
    ref = run(model, x)["y"]
    rewrite = ConvTransposeToConvPass()
    assert rewrite(model).modified
    check_onnx(model)
    assert "ConvTranspose" not in op_types(model) and "Conv" in op_types(model)
    assert ("DepthToSpace" in op_types(model)) == (s > 1)
    got = run(model, x)["y"]
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=MAX_ABS_ERR)
    (phases,) = rewrite.aliases
    assert rewrite.aliases[phases] == "y" and model.graph.outputs[0].name == "y"


@pytest.mark.parametrize("kwargs", [{"groups": 2}, {"dilation": 2}])
def test_ineligible_conv_transpose_is_left_alone(kwargs: dict) -> None:
    model = _deconv(3, 2, 1, 1, **kwargs)
    assert not ConvTransposeToConvPass()(model).modified
    assert "ConvTranspose" in op_types(model)


def test_uniform_prelu_becomes_leaky_relu_and_per_channel_stays() -> None:
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.uniform, self.per_channel = torch.nn.PReLU(1, init=0.2), torch.nn.PReLU(4)
            with torch.no_grad():
                self.per_channel.weight.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4]))

        def forward(self, x):
            return self.per_channel(self.uniform(self.c(x)))

    model = export(Net(), torch.rand(1, 3, 6, 6))
    x = {"x": np.random.default_rng(1).uniform(-1, 1, (1, 3, 6, 6)).astype(np.float32)}
    ref = run(model, x)["y"]
    assert UniformPReluToLeakyReluPass()(model).modified
    check_onnx(model)
    assert op_types(model).count("PRelu") == 1 and op_types(model).count("LeakyRelu") == 1
    (leaky,) = [n for n in model.graph if n.op_type == "LeakyRelu"]
    assert leaky.attributes.get_float("alpha") == pytest.approx(0.2)
    np.testing.assert_array_equal(run(model, x)["y"], ref)
