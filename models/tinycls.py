"""TinyCls: an 18.6k-parameter image classifier (BatchNorm, depthwise convs, SiLU, residuals, global pool).

Written and trained by qdeploy (not a public checkpoint). The zoo's SR nets are all plain-conv image to
image; this gives the quantizer the other common CNN shape: BatchNorm folded into convs at export,
depthwise 3x3 convs (per-channel weight ranges differ wildly), SiLU (x * sigmoid(x), unbounded below
zero by a little), residual Adds, a GlobalAveragePool and a Gemm head whose logits decide an argmax.
What it classifies is in ``weights/tinycls.json`` (which of 10 BSD200 photos a 32x32 crop came from).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DWBlock", "TinyCls"]


class DWBlock(nn.Module):
    """Depthwise 3x3 + BN + SiLU, pointwise 1x1 + BN, plus the input when shapes allow, then SiLU."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.dw = nn.Sequential(nn.Conv2d(c_in, c_in, 3, stride=stride, padding=1, groups=c_in, bias=False),
                                nn.BatchNorm2d(c_in), nn.SiLU())
        self.pw = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.residual = stride == 1 and c_in == c_out
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) -> (N, C_out, H/stride, W/stride)."""
        out = self.pw(self.dw(x))
        return self.act(out + x if self.residual else out)


class TinyCls(nn.Module):
    """Stem conv3x3 (BN, SiLU), five DWBlocks (two stride-2), global average pool, Linear.

    RGB in [0, 1], any H, W (trained at 32x32); 16/32/64/96 channels give 18,586 parameters.
    """

    def __init__(self, classes: int = 10, colors: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(colors, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.SiLU())
        self.blocks = nn.Sequential(DWBlock(16, 16), DWBlock(16, 32, stride=2), DWBlock(32, 32),
                                    DWBlock(32, 64, stride=2), DWBlock(64, 64), DWBlock(64, 96))
        self.head = nn.Linear(96, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> logits (N, classes)."""
        feat = self.blocks(self.stem(x)).mean(dim=(2, 3))
        return self.head(feat)
