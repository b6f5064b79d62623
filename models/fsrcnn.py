"""FSRCNN-style x2 SR on the luma (Y) channel: PReLU everywhere and a transposed-conv upsampler.

Written for qdeploy (after Dong et al., "Accelerating the Super-Resolution Convolutional Neural
Network", ECCV 2016: d=56, s=12, m=4); trained by qdeploy, not a public checkpoint.

Why it is in the zoo: it is the classic one-channel SR net. Its input is Y in [0, 1] (really
[16/255, 235/255]), its activations are PReLU (a learned negative slope, so activations are signed and
asymmetric), and its only upsampler is a 9x9 stride-2 ConvTranspose whose output is the image itself
(no residual): INT8 error in the last layer lands directly on the pixels.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FSRCNN"]

_DECONV_INIT_STD = 1e-3
"""The paper's Gaussian init of the deconvolution (a larger one makes early training unstable)."""
_CUBIC_A = -0.5
"""MATLAB's bicubic kernel parameter."""


def _cubic(x: torch.Tensor) -> torch.Tensor:
    ax = x.abs()
    near = (_CUBIC_A + 2) * ax**3 - (_CUBIC_A + 3) * ax**2 + 1
    far = _CUBIC_A * ax**3 - 5 * _CUBIC_A * ax**2 + 8 * _CUBIC_A * ax - 4 * _CUBIC_A
    return torch.where(ax <= 1, near, torch.where(ax < 2, far, torch.zeros_like(ax)))


def _identity_(conv: nn.Conv2d, channel: int = 0) -> None:
    """Make output ``channel`` of ``conv`` an exact copy of its input ``channel``."""
    with torch.no_grad():
        conv.weight[channel].zero_()
        conv.weight[channel, channel, conv.kernel_size[0] // 2, conv.kernel_size[1] // 2] = 1.0
        if conv.bias is not None:
            conv.bias[channel] = 0.0


def _conv_prelu(c_in: int, c_out: int, k: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, k, padding=k // 2), nn.PReLU(c_out)]


class FSRCNN(nn.Module):
    """5x5 feature conv, 1x1 shrink, ``m`` 3x3 maps, 1x1 expand (all + PReLU), 9x9 ConvTranspose.

    One channel in and out; d=56, s=12, m=4 give 12,809 parameters at x2.
    """

    def __init__(self, scale: int = 2, d: int = 56, s: int = 12, m: int = 4, colors: int = 1) -> None:
        super().__init__()
        layers = _conv_prelu(colors, d, 5) + _conv_prelu(d, s, 1)
        for _ in range(m):
            layers += _conv_prelu(s, s, 3)
        layers += _conv_prelu(s, d, 1)
        self.body = nn.Sequential(*layers)
        self.deconv = nn.ConvTranspose2d(d, colors, 9, stride=scale, padding=4, output_padding=scale - 1)
        nn.init.normal_(self.deconv.weight, std=_DECONV_INIT_STD)
        nn.init.zeros_(self.deconv.bias)
        self._init_as_bicubic(scale)

    def _init_as_bicubic(self, scale: int) -> None:
        """Start as bicubic upscaling: channel 0 carries the input through every layer (Y > 0, so PReLU
        passes it) and the deconvolution's channel-0 kernel is the cubic kernel at the x``scale`` phases.

        Why: from the paper's Gaussian init a few thousand CPU iterations stayed 0.9 dB below bicubic on
        Set5 (the paper trains for days); from here training only has to learn the correction. The
        trained weights are a plain FSRCNN, and the image still flows through every layer.
        """
        for layer in self.body:
            if isinstance(layer, nn.Conv2d):
                _identity_(layer)
        k = self.deconv.kernel_size[0]
        pad = self.deconv.padding[0]
        dist = (torch.arange(k, dtype=torch.float32) - pad - (scale - 1) / 2) / scale
        taps = _cubic(dist)
        with torch.no_grad():
            self.deconv.weight[0, 0] = taps[:, None] * taps[None, :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) Y in [0, 1] -> (N, 1, sH, sW)."""
        return self.deconv(self.body(x))
