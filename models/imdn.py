"""IMDN-style x2 SR: information multi-distillation blocks with contrast-aware channel attention.

Written for qdeploy (after Hui et al., "Lightweight Image Super-Resolution with Information
Multi-distillation Network", ACM MM 2019); trained by qdeploy, not a public checkpoint.

Why it is in the zoo: it is the textbook case where post-training INT8 breaks on gated CNNs. Each
block splits its features (a Split feeding four Concat inputs with different ranges), pools a
per-channel mean and standard deviation over the whole image (ReduceMean, Sub, Mul, Sqrt), and gates
the features with a Sigmoid multiplied into them (a Mul of two activations). A per-tensor INT8 scale
has to cover all of those distributions at once.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["IMDN", "CCALayer", "IMDBlock"]

_LRELU_SLOPE = 0.05
_STD_EPS = 1e-8
"""Keeps the sqrt differentiable on constant channels (the reference has no epsilon)."""


def _conv(c_in: int, c_out: int, k: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, k, padding=k // 2)


class CCALayer(nn.Module):
    """Contrast-aware channel attention: ``x * sigmoid(up(relu(down(mean + std))))`` over H, W."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.down = nn.Conv2d(channels, hidden, 1)
        self.up = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scale each channel by a gate computed from its global mean and contrast (std)."""
        mean = x.mean(dim=(2, 3), keepdim=True)
        std = ((x - mean) ** 2).mean(dim=(2, 3), keepdim=True).add(_STD_EPS).sqrt()
        gate = torch.sigmoid(self.up(torch.relu(self.down(mean + std))))
        return x * gate


class IMDBlock(nn.Module):
    """Three conv3x3+LeakyReLU steps, each splitting off a quarter of its channels (the distilled part);
    a last conv3x3 makes the fourth part; the concatenated parts go through CCA and a 1x1 fuse, plus
    the block input."""

    def __init__(self, channels: int, distill: float = 0.25) -> None:
        super().__init__()
        self.d = int(channels * distill)
        self.r = channels - self.d
        self.convs = nn.ModuleList([_conv(channels, channels, 3), _conv(self.r, channels, 3),
                                    _conv(self.r, channels, 3)])
        self.last = _conv(self.r, self.d, 3)
        self.act = nn.LeakyReLU(_LRELU_SLOPE)
        self.cca = CCALayer(4 * self.d)
        self.fuse = nn.Conv2d(4 * self.d, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C, H, W)."""
        parts = []
        feat = x
        for conv in self.convs:
            distilled, feat = torch.split(self.act(conv(feat)), (self.d, self.r), dim=1)
            parts.append(distilled)
        parts.append(self.last(feat))
        return self.fuse(self.cca(torch.cat(parts, dim=1))) + x


class IMDN(nn.Module):
    """Head conv, ``blocks`` IMDBs, 1x1 fusion of all block outputs, conv, long skip, pixel shuffle.

    RGB in [0, 1] in and out; 32 channels and 4 blocks give 122,100 parameters (the paper's IMDN is
    64 channels, 6 blocks, 694K).
    """

    def __init__(self, scale: int = 2, channels: int = 32, blocks: int = 4, colors: int = 3) -> None:
        super().__init__()
        self.head = _conv(colors, channels, 3)
        self.blocks = nn.ModuleList([IMDBlock(channels) for _ in range(blocks)])
        self.fuse = nn.Sequential(nn.Conv2d(channels * blocks, channels, 1), nn.LeakyReLU(_LRELU_SLOPE))
        self.body_end = _conv(channels, channels, 3)
        self.upsample = nn.Sequential(_conv(channels, colors * scale * scale, 3), nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, 3, sH, sW)."""
        head = self.head(x)
        feat = head
        outs = []
        for block in self.blocks:
            feat = block(feat)
            outs.append(feat)
        body = self.body_end(self.fuse(torch.cat(outs, dim=1))) + head
        return self.upsample(body)
