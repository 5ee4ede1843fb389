"""The ViT's building blocks: patch embedding, multi-head attention, MLP, pre-norm block.

These are timm's ViT blocks (timm.layers.PatchEmbed, Mlp, DropPath; vision_transformer.Attention,
Block) as this project configures them, written out: the same parameters under the same names
(checkpoints load either way), created in the same order (the same initial weights from a seed),
the same operations in the same order (the same numbers to the last bit; tests/science/
test_blocks.py holds them against timm's). Why not import timm: timm's layers import
torchvision, whose package import pulls in torchvision.models; with torchvision's transforms
(harness.science.transforms) that was 0.8 s of a stage job's start-up on a 2-core CPU
(docs/findings.md, "Speed of the harness itself"). Stages
that use more of timm (fine-tuning's Mixup and RandAugment, the probe's LARS) import it there.
Shapes: B images, N tokens, D the width, H heads.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

LAYER_NORM_EPS = 1e-6  # timm's ViT LayerNorm; the decoders' own norms keep torch's 1e-5


class PatchEmbed(nn.Module):
    """(B, C, H, W) -> (B, N, D): non-overlapping P x P patches through one convolution, tokens
    in raster order. Any image size divisible by P (evaluation may run at another size)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, bias=True)

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        h, w = imgs.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"image size {h}x{w} is not divisible by the patch size {self.patch_size}")
        return self.proj(imgs).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention; `attn_mask` (bool, True = may attend) broadcast to (B, H, N, N)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.attn_dim = dim
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(out.transpose(1, 2).reshape(b, n, self.attn_dim))


class Mlp(nn.Module):
    """Linear, GELU, linear."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DropPath(nn.Module):
    """Stochastic depth: in training, drop a sample's residual branch with probability `p` and
    scale the kept ones by 1 / (1 - p)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p:.3f}"


class Block(nn.Module):
    """Pre-norm transformer block: x + attention(norm(x)), then x + MLP(norm(x)), each residual
    branch under stochastic depth."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x), attn_mask=attn_mask))
        return x + self.drop_path2(self.mlp(self.norm2(x)))
