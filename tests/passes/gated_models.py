"""Small gated SR-style nets for the integer-region tests, one per pattern of issue 11.

Each is a few layers of the public architecture it is named after, with torch's default init (seeded):
enough to place Q/DQ and time kernels, not to judge image quality. Inputs are 1x3xHxW in [0, 1].
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from qdq_models import export

__all__ = ["GATED_NETS", "cca_net", "esa_net", "feeds", "pixel_attention_net", "prelu_net", "transformer_block"]


def _seeded(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def cca_net() -> ir.Model:
    """IMDN-style: conv + LeakyReLU, channel split, concat of differently-scaled parts, contrast channel
    attention ``x * sigmoid(up(relu(down(mean + std))))`` on pooled statistics, 1x1 fuse, residual Add."""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self, c: int = 16, d: int = 4) -> None:
            super().__init__()
            self.d, self.r = d, c - d
            self.head = nn.Conv2d(3, c, 3, padding=1)
            self.c1 = nn.Conv2d(c, c, 3, padding=1)
            self.c2 = nn.Conv2d(c - d, d, 3, padding=1)
            self.down, self.up = nn.Conv2d(2 * d, 2, 1), nn.Conv2d(2, 2 * d, 1)
            self.fuse = nn.Conv2d(2 * d, c, 1)
            self.tail = nn.Conv2d(c, 3, 3, padding=1)
            self.act = nn.LeakyReLU(0.05)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.head(x)
            kept, rest = torch.split(self.act(self.c1(h)), (self.d, self.r), dim=1)
            cat = torch.cat([kept, self.c2(rest)], dim=1)
            mean = cat.mean(dim=(2, 3), keepdim=True)
            std = ((cat - mean) ** 2).mean(dim=(2, 3), keepdim=True).add(1e-8).sqrt()
            gate = torch.sigmoid(self.up(torch.relu(self.down(mean + std))))
            return self.tail(self.fuse(cat * gate) + h)

    _seeded(11)
    return export(Net(), torch.rand(1, 3, 16, 16))


def pixel_attention_net() -> ir.Model:
    """PAN-style: ``x * sigmoid(conv1x1(x))`` at full resolution, two branches concatenated, nearest x2
    upsampling inside the body, LeakyReLU(0.2)."""
    import torch
    import torch.nn.functional as F  # noqa: N812
    from torch import nn

    class Net(nn.Module):
        def __init__(self, c: int = 12) -> None:
            super().__init__()
            self.head = nn.Conv2d(3, c, 3, padding=1)
            self.a = nn.Conv2d(c, c, 3, padding=1)
            self.gate = nn.Conv2d(c, c, 1)
            self.merge = nn.Conv2d(2 * c, c, 1)
            self.up = nn.Conv2d(c, c, 3, padding=1)
            self.tail = nn.Conv2d(c, 3, 3, padding=1)
            self.act = nn.LeakyReLU(0.2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.act(self.head(x))
            attended = h * torch.sigmoid(self.gate(h))
            body = self.merge(torch.cat([self.act(self.a(h)), attended], dim=1)) + h
            up = self.act(self.up(F.interpolate(body, scale_factor=2.0, mode="nearest")))
            return self.tail(up)

    _seeded(12)
    return export(Net(), torch.rand(1, 3, 16, 16))


def esa_net() -> ir.Model:
    """RFDN/ESA-style: 1x1 reduce, stride-2 conv, 3x3/2 max-pool, conv, bilinear Resize back, + a 1x1 skip,
    1x1 expand, ``x * sigmoid(...)``."""
    import torch
    import torch.nn.functional as F  # noqa: N812
    from torch import nn

    class Net(nn.Module):
        def __init__(self, c: int = 16, f: int = 4) -> None:
            super().__init__()
            self.head = nn.Conv2d(3, c, 3, padding=1)
            self.reduce, self.skip = nn.Conv2d(c, f, 1), nn.Conv2d(f, f, 1)
            self.down = nn.Conv2d(f, f, 3, stride=2)
            self.mid = nn.Conv2d(f, f, 3, padding=1)
            self.expand = nn.Conv2d(f, c, 1)
            self.tail = nn.Conv2d(c, 3, 3, padding=1)
            self.act = nn.LeakyReLU(0.05)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.act(self.head(x))
            reduced = self.reduce(h)
            coarse = torch.relu(self.mid(F.max_pool2d(self.down(reduced), 3, stride=2)))
            coarse = F.interpolate(coarse, size=(24, 24), mode="bilinear", align_corners=False)
            gate = torch.sigmoid(self.expand(coarse + self.skip(reduced)))
            return self.tail(h * gate)

    _seeded(13)
    return export(Net(), torch.rand(1, 3, 24, 24))


def prelu_net() -> ir.Model:
    """FSRCNN-style: conv + per-channel PReLU, conv + single-slope PReLU, 9x9 stride-2 ConvTranspose."""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self, c: int = 12) -> None:
            super().__init__()
            self.c1, self.p1 = nn.Conv2d(3, c, 5, padding=2), nn.PReLU(c)
            self.c2, self.p2 = nn.Conv2d(c, c, 3, padding=1), nn.PReLU(1, init=0.1)
            self.deconv = nn.ConvTranspose2d(c, 3, 9, stride=2, padding=4, output_padding=1)
            with torch.no_grad():
                self.p1.weight.copy_(torch.linspace(0.05, 0.4, c))  # trained slopes differ per channel

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.deconv(self.p2(self.c2(self.p1(self.c1(x)))))

    _seeded(14)
    return export(Net(), torch.rand(1, 3, 16, 16))


def transformer_block() -> ir.Model:
    """A SwinIR-like block (LayerNorm, attention with Softmax, GELU MLP, residual Adds) after a conv."""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self, c: int = 16) -> None:
            super().__init__()
            self.embed = nn.Conv2d(3, c, 3, padding=1)
            self.norm1, self.norm2 = nn.LayerNorm(c), nn.LayerNorm(c)
            self.qkv, self.proj = nn.Linear(c, 3 * c), nn.Linear(c, c)
            self.mlp = nn.Sequential(nn.Linear(c, 2 * c), nn.GELU(), nn.Linear(2 * c, c))
            self.out = nn.Conv2d(c, 3, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            f = self.embed(x)
            n, c, h, w = f.shape
            t = f.flatten(2).transpose(1, 2)
            q, k, v = self.qkv(self.norm1(t)).chunk(3, dim=-1)
            attn = torch.softmax(q @ k.transpose(1, 2) * c**-0.5, dim=-1)
            t = t + self.proj(attn @ v)
            t = t + self.mlp(self.norm2(t))
            return self.out(t.transpose(1, 2).reshape(n, c, h, w)) + x

    _seeded(15)
    return export(Net(), torch.rand(1, 3, 8, 8))


#: name -> (builder, input shape)
GATED_NETS = {
    "cca": (cca_net, (1, 3, 16, 16)),
    "pixel_attention": (pixel_attention_net, (1, 3, 16, 16)),
    "esa": (esa_net, (1, 3, 24, 24)),
    "prelu": (prelu_net, (1, 3, 16, 16)),
    "transformer": (transformer_block, (1, 3, 8, 8)),
}


def feeds(shape: tuple[int, ...], count: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Smooth image-like inputs in [0, 1] (bilinear-upsampled noise plus fine noise)."""
    rng = np.random.default_rng(seed)
    n, c, h, w = shape
    out = []
    for _ in range(count):
        coarse = rng.uniform(0, 1, (n, c, h // 4 + 1, w // 4 + 1))
        rows = np.linspace(0, coarse.shape[2] - 1, h)
        cols = np.linspace(0, coarse.shape[3] - 1, w)
        smooth = coarse[:, :, np.round(rows).astype(int)][:, :, :, np.round(cols).astype(int)]
        x = np.clip(smooth + rng.normal(0, 0.05, shape), 0, 1).astype(np.float32)
        out.append({"x": x})
    return out
