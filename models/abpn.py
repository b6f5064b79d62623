"""ABPN: anchor-based plain net for mobile SR (Du et al., MAI 2021 winner; ``shared/docs/seeds.md`` §4).

Seven 3x3 convs on RGB in [0, 255] (no normalisation), an *anchor* that adds the LR pixel to every
sub-pixel before depth-to-space, then a clip to [0, 255]. The anchor is what makes ABPN INT8-friendly:
the convs only learn the residual, so quantization error lands on a small signal.

PyTorch's ``PixelShuffle`` uses CRD channel order, so the anchor is ``repeat_interleave(s*s)`` per
channel (a plain ``cat`` of 9 copies would be the TF/DCR form and is wrong here).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ABPN"]


class ABPN(nn.Module):
    """ABPN with ``features`` channels and ``scale`` upscaling (x3, 28 features: 42,539 parameters)."""

    def __init__(self, scale: int = 3, features: int = 28, colors: int = 3) -> None:
        super().__init__()
        out = colors * scale * scale
        layers: list[nn.Module] = [nn.Conv2d(colors, features, 3, padding=1), nn.ReLU()]
        for _ in range(4):
            layers += [nn.Conv2d(features, features, 3, padding=1), nn.ReLU()]
        layers += [nn.Conv2d(features, out, 3, padding=1), nn.ReLU(), nn.Conv2d(out, out, 3, padding=1)]
        self.body = nn.Sequential(*layers)
        self.upsample = nn.PixelShuffle(scale)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map an LR batch (N, 3, H, W) in [0, 255] to SR (N, 3, sH, sW) in [0, 255]."""
        anchor = torch.repeat_interleave(x, self.scale * self.scale, dim=1)
        return torch.clamp(self.upsample(self.body(x) + anchor), 0.0, 255.0)
