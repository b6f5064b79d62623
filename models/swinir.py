"""SwinIR-light (Liang et al., ICCVW 2021), the lightweight SR configuration, written to export cleanly.

Architecture as in the paper's lightweight setting: a 3x3 conv to 60 features, 4 residual Swin groups
(RSTB) of 6 Swin blocks each (6 heads, window 8, MLP ratio 2, alternate blocks shifted by 4) closed by a
3x3 conv, a body conv, and the ``pixelshuffledirect`` upsampler (one conv to ``3 * s * s`` channels +
PixelShuffle). Input is RGB in [0, 1]; the DIV2K mean is subtracted inside, as in the reference code.

Two changes from the reference code keep the *function* and make the ONNX graph dynamic in H and W:

* the image is padded to a multiple of the window inside ``forward`` (reflect padding, as the authors'
  test script does outside the model) and the output cropped back, so any H, W works;
* the shifted-window attention mask is computed from ``arange`` comparisons instead of Python slicing over
  a fixed size, so it follows the padded size symbolically instead of being baked in as a constant.

Attention keeps the textbook form that graph rewrites look for: ``MatMul(q * scale, Transpose(k))``, then
``Add`` of the relative-position bias (and the shift mask), ``Softmax``, ``MatMul`` with ``v``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)
from torch import nn

__all__ = ["SwinIR", "swinir_light"]

_RGB_MEAN = (0.4488, 0.4371, 0.4040)


def _window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, ws * ws, C)."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def _window_reverse(windows: torch.Tensor, ws: int, b: int, h: int, w: int) -> torch.Tensor:
    """(B * nW, ws * ws, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


def _shift_mask(h: int, w: int, ws: int, shift: int, device: torch.device) -> torch.Tensor:
    """Attention mask (nW, ws*ws, ws*ws) of shifted windows: 0 inside a region, -100 across regions.

    Region ids come from comparisons with ``arange`` (three bands per axis: [0, H-ws), [H-ws, H-shift),
    [H-shift, H)), which is what the reference code's slicing produces, but traced symbolically.
    """
    hh = torch.arange(h, device=device)
    ww = torch.arange(w, device=device)
    rh = (hh >= h - ws).long() + (hh >= h - shift).long()
    rw = (ww >= w - ws).long() + (ww >= w - shift).long()
    region = (rh[:, None] * 3 + rw[None, :]).float()[None, :, :, None]  # (1, H, W, 1)
    ids = _window_partition(region, ws).squeeze(-1)  # (nW, ws*ws)
    diff = ids[:, None, :] - ids[:, :, None]
    return torch.where(diff != 0, torch.full_like(diff, -100.0), torch.zeros_like(diff))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a window with a learned relative position bias."""

    def __init__(self, dim: int, window: int, heads: int) -> None:
        super().__init__()
        self.dim, self.window, self.heads = dim, window, heads
        self.scale = (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij"))
        flat = coords.flatten(1)
        rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0) + (window - 1)
        self.register_buffer("relative_position_index", rel[..., 0] * (2 * window - 1) + rel[..., 1],
                             persistent=False)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B*nW, N, C); mask: (nW, N, N) or None."""
        bn, n, c = x.shape
        qkv = self.qkv(x).reshape(bn, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        attn = attn + bias.reshape(n, n, -1).permute(2, 0, 1)[None]
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(bn // nw, nw, self.heads, n, n) + mask[None, :, None]
            attn = attn.view(bn, self.heads, n, n)
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(bn, n, c))


class SwinBlock(nn.Module):
    """Pre-norm Swin block: (shifted) window attention + MLP, both residual."""

    def __init__(self, dim: int, heads: int, window: int, shift: int, mlp_ratio: float) -> None:
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """x: (B, H*W, C) -> same."""
        b, _, c = x.shape
        y = self.norm1(x).view(b, h, w, c)
        mask = None
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
            mask = _shift_mask(h, w, self.window, self.shift, x.device)
        y = self.attn(_window_partition(y, self.window), mask)
        y = _window_reverse(y, self.window, b, h, w)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + y.reshape(b, h * w, c)
        return x + self.mlp(self.norm2(x))


class RSTB(nn.Module):
    """Residual Swin Transformer group: ``depth`` blocks, a 3x3 conv, and a long skip."""

    def __init__(self, dim: int, depth: int, heads: int, window: int, mlp_ratio: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, heads, window, 0 if i % 2 == 0 else window // 2, mlp_ratio) for i in range(depth))
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """x: (B, H*W, C) -> same."""
        y = x
        for block in self.blocks:
            y = block(y, h, w)
        b, _, c = x.shape
        y = self.conv(y.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)
        return x + y


class SwinIR(nn.Module):
    """SwinIR for classical SR with the ``pixelshuffledirect`` (lightweight) upsampler."""

    def __init__(self, scale: int = 2, dim: int = 60, depths: tuple[int, ...] = (6, 6, 6, 6), heads: int = 6,
                 window: int = 8, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        self.scale, self.window = scale, window
        self.register_buffer("mean", torch.tensor(_RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.conv_first = nn.Conv2d(3, dim, 3, padding=1)
        self.patch_norm = nn.LayerNorm(dim)
        self.layers = nn.ModuleList(RSTB(dim, d, heads, window, mlp_ratio) for d in depths)
        self.norm = nn.LayerNorm(dim)
        self.conv_after_body = nn.Conv2d(dim, dim, 3, padding=1)
        self.upsample = nn.Sequential(nn.Conv2d(dim, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = self.patch_norm(x.flatten(2).transpose(1, 2))
        for layer in self.layers:
            t = layer(t, h, w)
        return self.norm(t).transpose(1, 2).reshape(b, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map an LR batch (N, 3, H, W) in [0, 1] to SR (N, 3, sH, sW)."""
        h, w = x.shape[2], x.shape[3]
        ph = (self.window - h % self.window) % self.window
        pw = (self.window - w % self.window) % self.window
        x = F.pad(x - self.mean, (0, pw, 0, ph), mode="reflect")
        feat = self.conv_first(x)
        feat = self.conv_after_body(self._body(feat)) + feat
        out = self.upsample(feat) + self.mean
        return out[:, :, : h * self.scale, : w * self.scale]


def swinir_light(scale: int = 2) -> SwinIR:
    """The paper's lightweight configuration (x2: about 0.9 M parameters)."""
    return SwinIR(scale=scale, dim=60, depths=(6, 6, 6, 6), heads=6, window=8, mlp_ratio=2.0)
