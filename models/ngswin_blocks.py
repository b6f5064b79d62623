"""Building blocks of NGswin (Choi, Lee, Yang, CVPR 2023): cosine window attention, the N-Gram context and
the N-Gram Swin Transformer Block (NSTB), grouped into stages.

Module and parameter names follow the authors' code (rami0205/NGramSwin) so that their released state dicts
load with ``strict=True``; the buffers (relative position index, shift masks) are derived, not stored, as in
those files. Tokens travel as ``(B, h*w, C)`` with ``h, w`` passed alongside, as in the reference.

What the N-Gram context is: every 8x8 window is summarised by a grouped conv (the "uni-gram", one vector per
window); each uni-gram attends to its 2x2 neighbourhood of uni-grams (a sliding window over the uni-gram map,
padded after the end with the row/column before the last one for the forward direction, and before the start
with row/column 1 for the backward one: the reference's "sequential reflection"); the attended neighbourhood
is averaged, both directions are merged by a 1x1 conv, and the result is added to every token of the window
before the (shifted) window attention.

Export-minded choices that keep the function: both directions' neighbourhoods are gathered with one index
computed by ``arange`` arithmetic (so it follows symbolic sizes) instead of slice-assignment padding and
``Tensor.unfold``, and go through the N-gram attention as one batch; the shifted-window mask is built once per
stage by :func:`qdeploy_models.swinir._shift_mask` (``arange`` comparisons, identical to the reference's
slicing). Export with H and W above ``4 * window`` (two windows at the coarsest stage): torch.export
specialises size-1 window grids, and a graph traced on them does not run on larger inputs; a graph traced on
larger ones runs on every size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)
from qdeploy_models.swinir import _shift_mask, _window_partition, _window_reverse
from torch import nn

__all__ = ["NSTB", "NGramContext", "NGramStage", "PatchMerging", "WindowAttention", "to_map", "to_tokens"]

LOGIT_SCALE_MAX = math.log(1.0 / 0.01)
"""Upper clamp of the learned log attention temperature (Swin V2's value, as in the reference code)."""


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C)."""
    return x.flatten(2).transpose(1, 2)


def to_map(t: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, h*w, C) -> (B, C, h, w)."""
    return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], h, w)


def _relative_position_index(window: int) -> torch.Tensor:
    """(window^2, window^2) index into a ((2*window - 1)^2, heads) bias table (Swin's layout)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


class WindowAttention(nn.Module):
    """Scaled cosine attention in a window (Swin V2 style) with a relative position bias.

    ``scores = (normalize(q) @ normalize(k)^T) * exp(min(logit_scale, log 100)) + bias (+ mask)``, where
    ``logit_scale`` is learned per head. Heads have ``dim // heads`` channels, so the attention width
    ``heads * (dim // heads)`` can be below ``dim`` (64 with 6 heads -> 60), as in the reference.
    """

    def __init__(self, dim: int, window: int, heads: int) -> None:
        super().__init__()
        self.heads, self.window = heads, window
        attn_dim = (dim // heads) * heads
        self.logit_scale = nn.Parameter(torch.log(10 * torch.ones(heads, 1, 1)))
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        self.register_buffer("relative_position_index", _relative_position_index(window), persistent=False)
        self.qkv = nn.Linear(dim, attn_dim * 3)
        self.proj = nn.Linear(attn_dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def _bias(self) -> torch.Tensor:
        n = self.window * self.window
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        return bias.reshape(n, n, -1).permute(2, 0, 1)[None]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B*nW, N, C); mask: (nW, N, N) or None -> (B*nW, N, C)."""
        bn, n, _ = x.shape
        qkv = self.qkv(x).reshape(bn, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * torch.clamp(self.logit_scale, max=LOGIT_SCALE_MAX).exp()
        attn = attn + self._bias()
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(bn // nw, nw, self.heads, n, n) + mask[None, :, None]
            attn = attn.view(bn, self.heads, n, n)
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(bn, n, -1))


def _seq_source(pos: torch.Tensor, length: int, ngram: int, backward: bool) -> torch.Tensor:
    """Map positions of the reference's sequentially padded uni-gram axis (``length + ngram - 1`` long) to
    positions of the unpadded axis.

    Forward padding appends the ``ngram - 1`` entries that start ``ngram`` before the end; backward padding
    prepends entries ``1 .. ngram - 1``. Clamped so that a map of one window still works (the reference
    raises there; the clamp repeats the edge).
    """
    if backward:
        src = torch.where(pos < ngram - 1, pos + 1, pos - (ngram - 1))
    else:
        src = torch.where(pos < length, pos, pos - ngram)
    return src.clamp(0, length - 1)


def _ngram_index(wh: int, ww: int, ngram: int, device: torch.device) -> torch.Tensor:
    """Flat uni-gram indices of every window's forward, then backward, ``ngram x ngram`` neighbourhood.

    Shape ``(2 * wh * ww * ngram * ngram,)``, ordered (direction, window row, window column, neighbour row,
    neighbour column): the token order of the reference's sliding-window partition.
    """
    off = torch.arange(ngram, device=device)
    parts = []
    for backward in (False, True):
        rows = _seq_source(torch.arange(wh, device=device)[:, None] + off, wh, ngram, backward)
        cols = _seq_source(torch.arange(ww, device=device)[:, None] + off, ww, ngram, backward)
        parts.append((rows[:, None, :, None] * ww + cols[None, :, None, :]).reshape(-1))
    return torch.cat(parts)


class NGramContext(nn.Module):
    """One context vector per window from its forward and backward N-gram neighbourhoods of uni-grams.

    Both directions go through ``ngram_attn`` as one batch (it has no cross-window terms), gathered with a
    single index: the same function as padding the uni-gram map twice and sliding a window over each.
    """

    def __init__(self, dim: int, window: int, ngram: int, heads: int) -> None:
        super().__init__()
        self.ngram = ngram
        self.unigram_embed = nn.Conv2d(dim, dim // 2, window, stride=window, groups=dim // 2)
        self.ngram_attn = WindowAttention(dim // 2, ngram, heads)
        self.merge = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, D, H, W) -> context (B, wh, ww, D), one vector per window."""
        unigram = self.unigram_embed(x)
        b, c, wh, ww = unigram.shape
        grams = self.ngram * self.ngram
        tokens = to_tokens(unigram).index_select(1, _ngram_index(wh, ww, self.ngram, x.device))
        context = self.ngram_attn(tokens.reshape(-1, grams, c)).reshape(b, 2, wh, ww, grams, c).mean(dim=4)
        context = context.permute(0, 1, 4, 2, 3).reshape(b, 2 * c, wh, ww)  # [forward | backward] channels
        return self.merge(context).permute(0, 2, 3, 1)


class NGramWindowPartition(nn.Module):
    """Holds the N-Gram context (the reference's module path, ``ngram_window_partition.ngram_context``)."""

    def __init__(self, dim: int, window: int, ngram: int, heads: int) -> None:
        super().__init__()
        self.ngram_context = NGramContext(dim, window, ngram, heads)


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2 (timm's ``Mlp`` names)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class NSTB(nn.Module):
    """N-Gram Swin Transformer Block with post-norm residuals: ``x + LN(attn(x))``, then ``x + LN(ffn(x))``."""

    def __init__(self, dim: int, window: int, ngram: int, heads: int, shift: int, mlp_ratio: float) -> None:
        super().__init__()
        self.window, self.shift = window, shift
        self.ngram_window_partition = NGramWindowPartition(dim, window, ngram, heads)
        self.attn = WindowAttention(dim, window, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = Mlp(dim, int(dim * mlp_ratio))
        self.norm2 = nn.LayerNorm(dim)

    def _attention(self, x: torch.Tensor, h: int, w: int, mask: torch.Tensor | None) -> torch.Tensor:
        """Add each window's N-gram context, (shift,) window attention, (shift back,) as tokens."""
        b, _, c = x.shape
        ws = self.window
        grid = x.view(b, h, w, c)
        context = self.ngram_window_partition.ngram_context(grid.permute(0, 3, 1, 2))
        grid = grid.view(b, h // ws, ws, w // ws, ws, c) + context[:, :, None, :, None, :]
        grid = grid.view(b, h, w, c)
        if self.shift:
            grid = torch.roll(grid, shifts=(-self.shift, -self.shift), dims=(1, 2))
        out = _window_reverse(self.attn(_window_partition(grid, ws), mask if self.shift else None), ws, b, h, w)
        if self.shift:
            out = torch.roll(out, shifts=(self.shift, self.shift), dims=(1, 2))
        return out.reshape(b, h * w, c)

    def forward(self, x: torch.Tensor, h: int, w: int, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, h*w, C); mask: the stage's shifted-window mask (used by shifted blocks) -> (B, h*w, C)."""
        x = x + self.norm1(self._attention(x, h, w, mask))
        return x + self.norm2(self.ffn(x))


class PatchMerging(nn.Module):
    """2x2 neighbours concatenated (top-left, top-right, bottom-left, bottom-right), LayerNorm, linear."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, dim, bias=False)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """(B, h*w, C) -> (B, h/2 * w/2, C)."""
        b, _, c = x.shape
        x = x.view(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 2, 4, 5).reshape(b, -1, 4 * c)
        return self.reduction(self.norm(x))


class NGramStage(nn.Module):
    """An encoder or decoder stage: optional projection of cascaded inputs, NSTBs with the within-stage
    residual (each block's input is the previous block's input plus its output), optional patch merging."""

    def __init__(self, dim: int, depth: int, heads: int, window: int, ngram: int, mlp_ratio: float,
                 cascades: int = 1, downsample: bool = False) -> None:
        super().__init__()
        self.across_cascade_proj: nn.Module = nn.Linear(dim * cascades, dim) if cascades > 1 else nn.Identity()
        self.blocks = nn.ModuleList(
            NSTB(dim, window, ngram, heads, 0 if i % 2 == 0 else window // 2, mlp_ratio) for i in range(depth))
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, h*w, cascades*C) -> (last block's output, the next stage's input: merged sum, or the output)."""
        shifts = [block.shift for block in self.blocks if block.shift]
        mask = _shift_mask(h, w, self.blocks[0].window, shifts[0], x.device) if shifts else None
        inp = self.across_cascade_proj(x)
        out = self.blocks[0](inp, h, w, mask)
        for block in self.blocks[1:]:
            inp = out + inp
            out = block(inp, h, w, mask)
        if self.downsample is None:
            return out, out
        return out, self.downsample(out + inp, h, w)
