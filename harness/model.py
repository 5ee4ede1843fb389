"""RandSAC: a ViT encoder and a masked transformer decoder (paper section 4.1, Figure 4).

Read top to bottom: position encodings, the decoder block, the encoder (the part kept for
evaluation), the pre-training model with its normalized-pixel loss, the evaluation heads.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, PatchEmbed
from timm.models.vision_transformer import Attention, Block

from harness import masks
from harness.config import ModelConfig


def sincos_pos_embed(dim: int, grid: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position encodings (N, dim), tokens in raster order.

    Half of the channels encode the row, half the column; each half is [sin, cos] of the
    position times geometrically spaced frequencies (Vaswani et al.).
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos position encoding needs a dim divisible by 4, got {dim}")
    freqs = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    coords = torch.arange(grid, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")

    def encode(pos: torch.Tensor) -> torch.Tensor:
        angles = pos.flatten()[:, None] * freqs[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([encode(rows), encode(cols)], dim=1).float()


class CrossAttention(nn.Module):
    """Multi-head attention from decoder queries to encoder memory, with a memory mask."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=True)
        self.kv = nn.Linear(dim, 2 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        B, N, C = x.shape
        h = self.num_heads
        q = self.q(x).reshape(B, N, h, C // h).transpose(1, 2)
        k, v = self.kv(memory).reshape(B, memory.shape[1], 2, h, C // h).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


class DecoderBlock(nn.Module):
    """Pre-norm transformer decoder layer: masked self-attention, cross-attention, MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, num_heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(dim)
        self.cross_attn = CrossAttention(dim, num_heads)
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, memory, target_mask, memory_mask):
        x = x + self.self_attn(self.norm1(x), attn_mask=target_mask)
        x = x + self.cross_attn(self.norm2(x), memory, memory_mask)
        return x + self.mlp(self.norm3(x))


class Encoder(nn.Module):
    """ViT encoder on patch tokens with fixed position encodings, no class token.

    `forward` takes an optional source mask (pre-training); `features` is what evaluation uses:
    the average-pooled output of the last layer, with no mask.
    """

    def __init__(self, cfg: ModelConfig, image_size: int, in_chans: int, drop_path: float = 0.0):
        super().__init__()
        self.patch_size = cfg.patch_size
        self.embed_dim = cfg.embed_dim
        self.patch_embed = PatchEmbed(image_size, cfg.patch_size, in_chans, cfg.embed_dim)
        grid = image_size // cfg.patch_size
        self.register_buffer("pos_embed", sincos_pos_embed(cfg.embed_dim, grid)[None], persistent=False)
        rates = torch.linspace(0, drop_path, cfg.depth).tolist()
        self.blocks = nn.ModuleList(
            Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, qkv_bias=True, drop_path=r) for r in rates)
        self.norm = nn.LayerNorm(cfg.embed_dim)

    def forward(self, imgs: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.patch_embed(imgs) + self.pos_embed
        for block in self.blocks:
            x = block(x, attn_mask=attn_mask)
        return self.norm(x)

    def features(self, imgs: torch.Tensor) -> torch.Tensor:
        return self(imgs).mean(dim=1)

    def group_matcher(self, coarse: bool = False) -> dict:
        """Layer groups for timm's layer-wise lr decay: embeddings, each block, final norm."""
        return {"stem": r"^pos_embed|^patch_embed", "blocks": [(r"^blocks\.(\d+)", None), (r"^norm", (99999,))]}


def init_weights(module: nn.Module) -> None:
    """MAE's initialisation, in one place: xavier-uniform linears, unit layer norms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, PatchEmbed):
            w = m.proj.weight
            nn.init.xavier_uniform_(w.view(w.shape[0], -1))


def patchify(imgs: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, p*p*C), tokens in raster order, pixels (row, col, channel)."""
    B, C, H, W = imgs.shape
    x = imgs.reshape(B, C, H // p, p, W // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(B, (H // p) * (W // p), p * p * C)


def unpatchify(tokens: torch.Tensor, p: int, channels: int) -> torch.Tensor:
    B, N, _ = tokens.shape
    g = math.isqrt(N)
    x = tokens.reshape(B, g, g, p, p, channels).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(B, channels, g * p, g * p)


def normalized_pixel_loss(pred: torch.Tensor, imgs: torch.Tensor, ranks: torch.Tensor,
                          patch_size: int, norm_pix: bool = True) -> torch.Tensor:
    """MSE to per-patch normalized pixels, averaged over predicted tokens (segments 2..S).

    Each target patch is normalized by its own mean and (unbiased) variance + 1e-6, as MAE.
    """
    target = patchify(imgs, patch_size)
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
    per_token = (pred - target).pow(2).mean(dim=-1)
    predicted = (ranks >= 1).to(per_token.dtype)
    return (per_token * predicted).sum() / predicted.sum()


class RandSAC(nn.Module):
    """Masked transformer for autoregressive segment prediction.

    The encoder reads the image under the source mask. The decoder's inputs are the fixed
    position encodings of the tokens (the target queries); its self-attention uses the
    target mask and its cross-attention the memory mask, so a token of segment s is predicted
    from the segments before s only.
    """

    def __init__(self, cfg: ModelConfig, image_size: int, in_chans: int):
        super().__init__()
        self.cfg = cfg
        self.in_chans = in_chans
        self.encoder = Encoder(cfg, image_size, in_chans)
        grid = image_size // cfg.patch_size
        self.register_buffer("query_embed", sincos_pos_embed(cfg.embed_dim, grid)[None], persistent=False)
        self.decoder = nn.ModuleList(
            DecoderBlock(cfg.embed_dim, cfg.decoder_num_heads, cfg.mlp_ratio) for _ in range(cfg.decoder_depth))
        self.decoder_norm = nn.LayerNorm(cfg.embed_dim)
        self.decoder_pred = nn.Linear(cfg.embed_dim, cfg.patch_size ** 2 * in_chans)
        init_weights(self)

    def forward(self, imgs: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
        """Predicted pixels (B, N, P*P*C); the first segment is never predicted (its rows are 0)."""
        memory = self.encoder(imgs, attn_mask=masks.for_heads(masks.source_mask(ranks)))
        target_mask = masks.for_heads(masks.target_mask(ranks))
        memory_mask = masks.for_heads(masks.memory_mask(ranks))
        x = self.query_embed.expand(imgs.shape[0], -1, -1)
        for block in self.decoder:
            x = block(x, memory, target_mask, memory_mask)
        pred = self.decoder_pred(self.decoder_norm(x))
        return pred.masked_fill((ranks == 0).unsqueeze(-1), 0.0)

    def loss(self, imgs: torch.Tensor, ranks: torch.Tensor, norm_pix: bool = True) -> torch.Tensor:
        return normalized_pixel_loss(self(imgs, ranks), imgs, ranks, self.cfg.patch_size, norm_pix)


class LinearProbe(nn.Module):
    """MAE's linear probe: BatchNorm without affine, then a linear layer, on frozen features."""

    def __init__(self, encoder: Encoder, num_classes: int):
        super().__init__()
        self.encoder = encoder.requires_grad_(False)
        self.head = nn.Sequential(nn.BatchNorm1d(encoder.embed_dim, affine=False, eps=1e-6),
                                  nn.Linear(encoder.embed_dim, num_classes))
        nn.init.trunc_normal_(self.head[1].weight, std=0.01)
        nn.init.zeros_(self.head[1].bias)

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.encoder.eval()
            feats = self.encoder.features(imgs)
        return self.head(feats)


class Classifier(nn.Module):
    """Fine-tuning model: the whole encoder plus a linear head on average-pooled features."""

    def __init__(self, encoder: Encoder, num_classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.embed_dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=2e-5)
        nn.init.zeros_(self.head.bias)

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder.features(imgs))

    def group_matcher(self, coarse: bool = False) -> dict:
        return {"stem": r"^encoder\.pos_embed|^encoder\.patch_embed",
                "blocks": [(r"^encoder\.blocks\.(\d+)", None), (r"^encoder\.norm|^head", (99999,))]}
