"""RFDN-style x4 SR with enhanced spatial attention (ESA), on pixels in [0, 255].

Written for qdeploy (after Liu et al., "Residual Feature Distillation Network for Lightweight Image
Super-Resolution", ECCV-W 2020, and the ESA block of Liu et al., CVPR 2020); trained by qdeploy, not a
public checkpoint.

Why it is in the zoo: ESA computes its gate on a coarse grid (1x1 reduce, stride-2 conv, 7x7/3 max-pool,
convs), resizes it back with bilinear interpolation, adds a 1x1 branch, and multiplies
``sigmoid(conv1x1(...))`` into the block output. The max-pooled branch has a much wider range than the
features it gates, and the gate product is a Mul of two activations. The network takes and returns
0..255 pixels (it divides by 255 inside and multiplies back), so its ONNX input range is 0..255.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)
from torch import nn

__all__ = ["ESA", "RFDB", "RFDN"]

_LRELU_SLOPE = 0.05
PIXEL_MAX = 255.0


def _conv(c_in: int, c_out: int, k: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, k, padding=k // 2)


class ESA(nn.Module):
    """Enhanced spatial attention: a coarse (1/6-resolution) gate, bilinearly upsampled, times ``x``.

    Needs inputs of at least 17x17 pixels (the stride-2 conv and the 7x7 max-pool are unpadded).
    """

    def __init__(self, channels: int, reduced: int | None = None) -> None:
        super().__init__()
        f = reduced or channels // 4
        self.reduce = nn.Conv2d(channels, f, 1)
        self.skip = nn.Conv2d(f, f, 1)
        self.down = nn.Conv2d(f, f, 3, stride=2)
        self.conv_max = _conv(f, f, 3)
        self.conv3 = _conv(f, f, 3)
        self.conv3b = _conv(f, f, 3)
        self.expand = nn.Conv2d(f, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C, H, W), each value scaled by a gate in (0, 1)."""
        reduced = self.reduce(x)
        coarse = F.max_pool2d(self.down(reduced), kernel_size=7, stride=3)
        coarse = torch.relu(self.conv3(torch.relu(self.conv_max(coarse))))
        coarse = F.interpolate(self.conv3b(coarse), size=x.shape[2:], mode="bilinear", align_corners=False)
        gate = torch.sigmoid(self.expand(coarse + self.skip(reduced)))
        return x * gate


class RFDB(nn.Module):
    """Residual feature distillation block: three (1x1 distil, 3x3 shallow-residual) steps and a last
    3x3, the four distilled parts concatenated, fused by 1x1 and gated by ESA."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        dc = channels // 2
        self.distil = nn.ModuleList([nn.Conv2d(channels, dc, 1) for _ in range(3)])
        self.refine = nn.ModuleList([_conv(channels, channels, 3) for _ in range(3)])
        self.last = _conv(channels, dc, 3)
        self.fuse = nn.Conv2d(4 * dc, channels, 1)
        self.esa = ESA(channels)
        self.act = nn.LeakyReLU(_LRELU_SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C, H, W) (no block-level residual, as in RFDN)."""
        parts = []
        feat = x
        for distil, refine in zip(self.distil, self.refine):
            parts.append(self.act(distil(feat)))
            feat = self.act(refine(feat) + feat)
        parts.append(self.act(self.last(feat)))
        return self.esa(self.fuse(torch.cat(parts, dim=1)))


class RFDN(nn.Module):
    """Head conv, ``blocks`` RFDBs, 1x1 fusion + conv with a long skip, conv + pixel shuffle.

    RGB in [0, 255] in and out; 32 channels and 4 blocks give 184,112 parameters (the paper's RFDN is
    50 channels, 4 blocks, 550K).
    """

    def __init__(self, scale: int = 4, channels: int = 32, blocks: int = 4, colors: int = 3) -> None:
        super().__init__()
        self.head = _conv(colors, channels, 3)
        self.blocks = nn.ModuleList([RFDB(channels) for _ in range(blocks)])
        self.fuse = nn.Sequential(nn.Conv2d(channels * blocks, channels, 1), nn.LeakyReLU(_LRELU_SLOPE))
        self.body_end = _conv(channels, channels, 3)
        self.upsample = nn.Sequential(_conv(channels, colors * scale * scale, 3), nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 255] -> (N, 3, sH, sW) in about [0, 255]; H, W >= 17."""
        head = self.head(x / PIXEL_MAX)
        feat = head
        outs = []
        for block in self.blocks:
            feat = block(feat)
            outs.append(feat)
        body = self.body_end(self.fuse(torch.cat(outs, dim=1))) + head
        return self.upsample(body) * PIXEL_MAX
