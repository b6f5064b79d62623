"""TinySR: a three-conv x2 super-resolution net, small enough to export and run in well under a second.

It exists for tests and for demos on machines without trained weights: same structure as real SR nets
(convs, ReLU, PixelShuffle) so the export, QDQ and profiling paths see realistic ops, at ~1k parameters.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["TinySR"]


class TinySR(nn.Module):
    """conv3x3 -> ReLU -> conv3x3 -> ReLU -> conv3x3 -> PixelShuffle(``scale``); RGB in, RGB out."""

    def __init__(self, scale: int = 2, features: int = 8, colors: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(colors, features, 3, padding=1), nn.ReLU(),
            nn.Conv2d(features, features, 3, padding=1), nn.ReLU(),
            nn.Conv2d(features, colors * scale * scale, 3, padding=1),
        )
        self.upsample = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C, scale*H, scale*W)."""
        return self.upsample(self.body(x))
