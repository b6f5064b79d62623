"""PAN-style x3 SR: self-calibrated pixel-attention blocks and pixel-attention upsampling.

Written for qdeploy (after Zhao et al., "Efficient Image Super-Resolution Using Pixel Attention",
ECCV-W 2020); trained by qdeploy, not a public checkpoint.

Why it is in the zoo: pixel attention multiplies a full-resolution ``sigmoid(conv1x1(x))`` map into
the features (a Mul of two activations per block, one of them in [0, 1] with most mass near the ends),
the upsampler resizes features inside the body (nearest Resize) and the output adds a bilinear-upsampled
copy of the input, so the last Add sums a small residual and a full-range image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)
from torch import nn

__all__ = ["PAN", "SCPA", "PAConv", "PixelAttention"]

_LRELU_SLOPE = 0.2


def _conv(c_in: int, c_out: int, k: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=bias)


class PixelAttention(nn.Module):
    """``x * sigmoid(conv1x1(x))``: a per-pixel, per-channel gate."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gate = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Gate ``x`` by itself."""
        return x * torch.sigmoid(self.gate(x))


class PAConv(nn.Module):
    """``k4(k3(x) * sigmoid(k2(x)))``: a 3x3 conv gated by pixel attention, then another 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.k2 = nn.Conv2d(channels, channels, 1)
        self.k3 = _conv(channels, channels, 3, bias=False)
        self.k4 = _conv(channels, channels, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C, H, W)."""
        return self.k4(self.k3(x) * torch.sigmoid(self.k2(x)))


class SCPA(nn.Module):
    """Self-calibrated block: a plain 3x3 branch and a PAConv branch on halves, concat, 1x1, residual."""

    def __init__(self, channels: int, reduction: int = 2) -> None:
        super().__init__()
        half = channels // reduction
        self.reduce_a = nn.Conv2d(channels, half, 1, bias=False)
        self.reduce_b = nn.Conv2d(channels, half, 1, bias=False)
        self.k1 = _conv(half, half, 3, bias=False)
        self.pa = PAConv(half)
        self.merge = nn.Conv2d(2 * half, channels, 1, bias=False)
        self.act = nn.LeakyReLU(_LRELU_SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C, H, W)."""
        a = self.act(self.k1(self.act(self.reduce_a(x))))
        b = self.act(self.pa(self.act(self.reduce_b(x))))
        return self.merge(torch.cat([a, b], dim=1)) + x


class PAN(nn.Module):
    """Head conv, ``blocks`` SC-PA blocks, trunk conv with a long skip, U-PA upsampling (nearest resize,
    conv, pixel attention, conv), output conv, plus the bilinear-upsampled input.

    RGB in [0, 1]; 32/16 channels and 6 blocks give 73,187 parameters (the paper's PAN is 40/24 and 16
    blocks, 272K). One U-PA stage at the full factor, as the paper does for x3.
    """

    def __init__(self, scale: int = 3, channels: int = 32, up_channels: int = 16, blocks: int = 6,
                 colors: int = 3) -> None:
        super().__init__()
        self.scale = scale
        self.head = _conv(colors, channels, 3)
        self.body = nn.Sequential(*[SCPA(channels) for _ in range(blocks)])
        self.trunk = _conv(channels, channels, 3)
        self.up_conv = _conv(channels, up_channels, 3)
        self.up_att = PixelAttention(up_channels)
        self.hr_conv = _conv(up_channels, up_channels, 3)
        self.tail = _conv(up_channels, colors, 3)
        self.act = nn.LeakyReLU(_LRELU_SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, 3, sH, sW)."""
        feat = self.head(x)
        feat = feat + self.trunk(self.body(feat))
        feat = self.up_conv(F.interpolate(feat, scale_factor=self.scale, mode="nearest"))
        feat = self.act(self.hr_conv(self.act(self.up_att(feat))))
        base = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return self.tail(feat) + base
