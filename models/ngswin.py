"""NGswin (Choi, Lee, Yang, "N-Gram in Swin Transformers for Efficient Lightweight Image Super-Resolution",
CVPR 2023, arXiv 2211.11436), written to load the authors' released weights and to export cleanly.

Architecture (the paper's efficient-SR model, ~1.0 M parameters):

* a 3x3 conv to 64 features (the shallow features);
* a hierarchical encoder of three stages of N-Gram Swin blocks (6, 4, 4 blocks; 6, 4, 4 heads; window 8;
  N-gram 2; MLP ratio 2), each but the last closed by patch merging. Stage k > 1 reads the concatenation of
  the previous stage's input max-pooled by 2 and the merged output ("across-stage pooling cascading"),
  projected back to 64 channels;
* the SCDP bottleneck: each stage's output plus LeakyReLU(max-pooled shallow features) is pixel-shuffled
  back to full resolution (64 + 16 + 4 = 84 channels), concatenated, depth-wise 3x3 conv, GELU, point-wise
  linear to 64, LayerNorm;
* one decoder stage of 6 blocks (6 heads) on bottleneck + stage-1 output, LayerNorm, plus the shallow
  features (global skip);
* reconstruction: 3x3 conv to ``3 * s * s`` channels, PixelShuffle(s), 3x3 conv.

Input is RGB in [0, 1], any H and W. Inside ``forward`` the image is padded at the bottom/right to a
multiple of ``4 * window`` (= 32: the third stage works at 1/4 resolution in whole windows) with symmetric
padding (the edge pixel repeated, then the mirror image), which is what the authors' test script does
outside the model, then normalised with per-scale mean/std constants of the reference code (they are not
in the state dict); the output is de-normalised and cropped to ``s*H x s*W``. The padding is a ``Gather``
with computed indices and the padded size is ``32 * ceil(H / 32)``, so a dynamic-H/W ONNX export follows
any size.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)
from qdeploy_models.ngswin_blocks import NGramStage, to_map, to_tokens
from torch import nn

__all__ = ["NGSWIN_MEAN", "NGSWIN_STD", "NGswin", "ngswin", "symmetric_pad"]

NGSWIN_MEAN = (0.4485, 0.4375, 0.4045)
"""RGB mean the reference code normalises with (the same at every scale)."""

NGSWIN_STD = {2: (0.2397, 0.2290, 0.2389), 3: (0.2373, 0.2265, 0.2367), 4: (0.2352, 0.2244, 0.2349)}
"""RGB standard deviation per scale, from the reference code (``NGswin.__init__``)."""


def _symmetric_index(length: int, padded: int, device: torch.device) -> torch.Tensor:
    """Indices of a symmetric extension (``a b c | c b a | a b c ...``) of ``length`` entries to ``padded``."""
    pos = torch.arange(padded, device=device)
    pos = pos - pos // (2 * length) * (2 * length)  # not `%`: the ONNX exporter rejects a symbolic divisor there
    return torch.where(pos < length, pos, 2 * length - 1 - pos)


def symmetric_pad(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad (N, C, H, W) at the bottom/right to multiples of ``multiple``, numpy/torchvision 'symmetric'."""
    h, w = x.shape[2], x.shape[3]
    hp = (h + multiple - 1) // multiple * multiple
    wp = (w + multiple - 1) // multiple * multiple
    return x.index_select(2, _symmetric_index(h, hp, x.device)).index_select(3, _symmetric_index(w, wp, x.device))


class SCDPBottleneck(nn.Module):
    """pixel-Shuffle, Concatenate, Depth-wise conv, Point-wise projection of the encoder outputs."""

    def __init__(self, stages: int, enc_dim: int, dec_dim: int) -> None:
        super().__init__()
        concat = sum(enc_dim // 4 ** i for i in range(stages))  # 64 + 16 + 4: stage i shuffled by 2^i
        self.depthwise = nn.Conv2d(concat, concat, 3, padding=1, groups=concat)
        self.act = nn.GELU()
        self.pointwise = nn.Linear(concat, dec_dim)
        self.norm = nn.LayerNorm(dec_dim)

    def forward(self, shallow: torch.Tensor, outputs: list[torch.Tensor]) -> torch.Tensor:
        """shallow: (B, C, H, W); outputs[i]: (B, H/2^i * W/2^i, C) -> (B, H*W, dec_dim)."""
        h, w = shallow.shape[2], shallow.shape[3]
        maps = []
        pooled = shallow
        for i, out in enumerate(outputs):
            if i:
                pooled = F.max_pool2d(pooled, 2)
            feat = to_map(out, h // 2 ** i, w // 2 ** i) + F.leaky_relu(pooled)
            maps.append(F.pixel_shuffle(feat, 2 ** i))
        x = self.act(self.depthwise(torch.cat(maps, dim=1)))
        return self.norm(self.pointwise(to_tokens(x)))


class ShallowExtractor(nn.Module):
    """The first 3x3 conv (the reference's module path, ``shallow_extract.conv1``)."""

    def __init__(self, channels: int, dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(x)


class NGswin(nn.Module):
    """NGswin for bicubic x2/x3/x4 SR (the pixel-shuffle "light" reconstruction)."""

    def __init__(self, scale: int = 2, dim: int = 64, depths: tuple[int, ...] = (6, 4, 4),
                 heads: tuple[int, ...] = (6, 4, 4), dec_depth: int = 6, dec_heads: int = 6, window: int = 8,
                 ngram: int = 2, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        if scale not in NGSWIN_STD:
            raise ValueError(f"scale must be one of {sorted(NGSWIN_STD)}, got {scale}")
        self.scale, self.window, self.stages = scale, window, len(depths)
        self.register_buffer("mean", torch.tensor(NGSWIN_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(NGSWIN_STD[scale]).view(1, 3, 1, 1), persistent=False)
        self.shallow_extract = ShallowExtractor(3, dim)
        for i, (depth, nh) in enumerate(zip(depths, heads)):
            self.add_module(f"encoder_layer{i + 1}", NGramStage(
                dim, depth, nh, window, ngram, mlp_ratio, cascades=i + 1, downsample=i + 1 < len(depths)))
        self.bottleneck = SCDPBottleneck(len(depths), dim, dim)
        self.decoder_layer1 = NGramStage(dim, dec_depth, dec_heads, window, ngram, mlp_ratio)
        self.norm = nn.LayerNorm(dim)
        self.to_target = nn.Sequential(OrderedDict([
            ("before_shuffle", nn.Conv2d(dim, 3 * scale * scale, 3, padding=1)),
            ("shuffler", nn.PixelShuffle(scale)),
            ("to_origin", nn.Conv2d(3, 3, 3, padding=1))]))
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    @property
    def pad_multiple(self) -> int:
        """Input sizes are padded to multiples of this (whole windows at the coarsest encoder stage)."""
        return self.window * 2 ** (self.stages - 1)

    def _encode(self, shallow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Shallow features (B, C, H, W) -> (bottleneck tokens, stage-1 output tokens)."""
        h, w = shallow.shape[2], shallow.shape[3]
        cascade = to_tokens(shallow)
        outputs = []
        for i in range(self.stages):
            stage: NGramStage = getattr(self, f"encoder_layer{i + 1}")
            out, merged = stage(cascade, h // 2 ** i, w // 2 ** i)
            outputs.append(out)
            if i + 1 < self.stages:
                pooled = to_tokens(F.max_pool2d(to_map(cascade, h // 2 ** i, w // 2 ** i), 2))
                cascade = torch.cat([pooled, merged], dim=-1)
        return self.bottleneck(shallow, outputs), outputs[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map an LR batch (N, 3, H, W) in [0, 1] to SR (N, 3, sH, sW)."""
        h, w = x.shape[2], x.shape[3]
        x = (symmetric_pad(x, self.pad_multiple) - self.mean) / self.std
        shallow = self.shallow_extract(x)
        hp, wp = shallow.shape[2], shallow.shape[3]
        bottleneck, first = self._encode(shallow)
        decoded, _ = self.decoder_layer1(bottleneck + first, hp, wp)
        feat = to_map(self.norm(decoded), hp, wp) + shallow
        out = self.to_target(feat) * self.std + self.mean
        return out[:, :, : h * self.scale, : w * self.scale]


def ngswin(scale: int = 2) -> NGswin:
    """The paper's configuration (x2: 998,384 parameters, as in the released ``NGswin_x2.pth``)."""
    return NGswin(scale=scale)
