"""RandSAC: the masked transformer decoder on the ViT encoder (paper section 4.1, Figure 4).

Read top to bottom: the attention blocks, the three pre-training architectures (masked,
trainable skips, two-stream). The encoder, its position encodings and the evaluation heads are
in harness.science.encoder, the normalized-pixel loss in harness.science.pixel_loss. Shapes: B
images, N tokens in raster order, D the width, P the patch size, C the channels, L the
encoder's depth.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from harness.core.config import ModelConfig
from harness.science import masks
from harness.science.blocks import Attention, Block, Mlp
from harness.science.encoder import Encoder, init_weights, sincos_pos_embed
from harness.science.pixel_loss import normalized_pixel_loss


# --------------------------------------------------------------------------- blocks

class CrossAttention(nn.Module):
    """Multi-head attention from decoder queries to encoder memory, under a memory mask."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=True)
        self.kv = nn.Linear(dim, 2 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        """x (B, N, D) queries, memory (B, M, D), attn_mask (B, 1, N, M) bool -> (B, N, D)."""
        q = rearrange(self.q(x), "b n (h d) -> b h n d", h=self.num_heads)
        k, v = rearrange(self.kv(memory), "b m (two h d) -> two b h m d", two=2, h=self.num_heads)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


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


def query_stream(block: Block, g: torch.Tensor, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """XLNet's query stream through one encoder block, sharing its weights.

    Queries come from the query stream g (B, N, D), keys and values from the content stream h
    (B, N, D); the memory mask lets a query of segment s read content of segments < s only.
    """
    attn = block.attn
    d = attn.attn_dim
    w, b = attn.qkv.weight, attn.qkv.bias
    q = F.linear(block.norm1(g), w[:d], None if b is None else b[:d])
    kv = F.linear(block.norm1(h), w[d:], None if b is None else b[d:])
    q = rearrange(q, "b n (h d) -> b h n d", h=attn.num_heads)
    k, v = rearrange(kv, "b n (two h d) -> two b h n d", two=2, h=attn.num_heads)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    g = g + block.drop_path1(attn.proj(rearrange(out, "b h n d -> b n (h d)")))
    return g + block.drop_path2(block.mlp(block.norm2(g)))


# --------------------------------------------------------------------------- RandSAC

class RandSAC(nn.Module):
    """Autoregressive segment prediction with the masked transformer (section 4.1).

    The encoder reads the image under the source mask; the decoder's inputs are the fixed
    position encodings of the tokens (the target queries); its self-attention uses the target
    mask and its cross-attention the memory mask, so a token of segment s is predicted from the
    segments before s only. `ranks` (B, N) holds each token's segment position in the
    serialization (harness.science.segments).
    """

    def __init__(self, cfg: ModelConfig, image_size: int, in_chans: int):
        super().__init__()
        self.cfg = cfg
        self.in_chans = in_chans
        self.encoder = Encoder(cfg, image_size, in_chans)
        grid = image_size // cfg.patch_size
        self.register_buffer("query_embed", sincos_pos_embed(cfg.embed_dim, grid)[None], persistent=False)
        self.build_decoder(cfg)
        self.decoder_norm = nn.LayerNorm(cfg.embed_dim)
        self.decoder_pred = nn.Linear(cfg.embed_dim, cfg.patch_size ** 2 * in_chans)
        self.initialize()

    def build_decoder(self, cfg: ModelConfig) -> None:
        self.decoder = nn.ModuleList(
            DecoderBlock(cfg.embed_dim, cfg.decoder_num_heads, cfg.mlp_ratio) for _ in range(cfg.decoder_depth))

    def initialize(self) -> None:
        init_weights(self)

    def forward_encoder(self, imgs: torch.Tensor, ranks: torch.Tensor) -> list[torch.Tensor]:
        """The memory each decoder layer reads: the encoder's last layer (B, N, D), for all."""
        memory = self.encoder(imgs, attn_mask=masks.for_heads(masks.source_mask(ranks)))
        return [memory] * len(self.decoder)

    def forward_decoder(self, memories: list[torch.Tensor], ranks: torch.Tensor) -> torch.Tensor:
        """Target queries through the decoder -> (B, N, D)."""
        target_mask = masks.for_heads(masks.target_mask(ranks))
        memory_mask = masks.for_heads(masks.memory_mask(ranks))
        x = self.query_embed.expand(ranks.shape[0], -1, -1)
        for block, memory in zip(self.decoder, memories):
            x = block(x, memory, target_mask, memory_mask)
        return x

    def forward(self, imgs: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
        """Predicted pixels (B, N, P*P*C); the first segment is never predicted (its rows are 0)."""
        x = self.forward_decoder(self.forward_encoder(imgs, ranks), ranks)
        pred = self.decoder_pred(self.decoder_norm(x))
        return pred.masked_fill((ranks == 0).unsqueeze(-1), 0.0)

    def loss(self, imgs: torch.Tensor, ranks: torch.Tensor, norm_pix: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(normalized-pixel loss, its floor) over the predicted tokens: segments 2..S."""
        return normalized_pixel_loss(self(imgs, ranks), imgs, ranks >= 1, self.cfg.patch_size, norm_pix)


class SkipRandSAC(RandSAC):
    """Trainable skip connections (appendix A.3): decoder layer l reads the memory
    Z_l = sum_k W[l, k] H_k over all encoder layers k. W starts one-hot on the last encoder
    layer, so training starts from the masked transformer and learns which skips help."""

    def build_decoder(self, cfg: ModelConfig) -> None:
        super().build_decoder(cfg)
        self.skip = nn.Parameter(torch.zeros(cfg.decoder_depth, cfg.depth))

    def initialize(self) -> None:
        super().initialize()
        with torch.no_grad():
            self.skip.zero_()[:, -1] = 1.0

    def forward_encoder(self, imgs: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
        """(decoder depth, B, N, D): each decoder layer's mixture of the L encoder layers."""
        hidden = self.encoder(imgs, attn_mask=masks.for_heads(masks.source_mask(ranks)), all_layers=True)
        return torch.einsum("lk,kbnd->lbnd", self.skip, torch.stack(hidden))


class TwoStreamRandSAC(RandSAC):
    """XLNet's two-stream attention with shared weights, no decoder (Figure 5): the content
    stream is the encoder under the source mask; the query stream (position encoding + a learned
    query token) reads it through the same blocks under the memory mask."""

    def build_decoder(self, cfg: ModelConfig) -> None:
        self.query_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))

    def initialize(self) -> None:
        super().initialize()
        nn.init.normal_(self.query_token, std=0.02)

    def forward(self, imgs: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
        source_mask = masks.for_heads(masks.source_mask(ranks))
        memory_mask = masks.for_heads(masks.memory_mask(ranks))
        h = self.encoder.embed(imgs)
        g = (self.query_embed + self.query_token).expand(imgs.shape[0], -1, -1)
        for block in self.encoder.blocks:
            h, g = block(h, attn_mask=source_mask), query_stream(block, g, h, memory_mask)
        pred = self.decoder_pred(self.decoder_norm(self.encoder.norm(g)))
        return pred.masked_fill((ranks == 0).unsqueeze(-1), 0.0)


ARCHITECTURES = {"masked": RandSAC, "skip": SkipRandSAC, "two_stream": TwoStreamRandSAC}  # Table 10


def randsac(cfg: ModelConfig, image_size: int, in_chans: int) -> RandSAC:
    """The RandSAC model of `cfg.architecture`."""
    return ARCHITECTURES[cfg.architecture](cfg, image_size, in_chans)
