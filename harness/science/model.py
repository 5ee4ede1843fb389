"""RandSAC: a ViT encoder and a masked transformer decoder (paper section 4.1, Figure 4).

Read top to bottom: position encodings and patches, the attention blocks, the encoder (the
part kept for evaluation), the normalized-pixel loss, the three pre-training architectures
(masked, trainable skips, two-stream), the evaluation heads. Shapes: B images, N tokens in
raster order, D the width, P the patch size, C the channels, L the encoder's depth.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from timm.layers import Mlp, PatchEmbed
from timm.models.vision_transformer import Attention, Block

from harness.core.config import ModelConfig
from harness.science import masks


def sincos_pos_embed(dim: int, grid: int, base_grid: int | None = None) -> torch.Tensor:
    """Fixed 2-D sine-cosine position encodings (N, dim), tokens in raster order.

    Half of the channels encode the row, half the column; each half is [sin, cos] of the
    position times geometrically spaced frequencies (Vaswani et al.). With `base_grid`, the
    grid x grid positions are spread over the base grid's span: the encodings a model trained
    at base_grid sees, interpolated (e.g. pre-training at 192 px, evaluation at 224 px).
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos position encoding needs a dim divisible by 4, got {dim}")
    freqs = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    base = base_grid or grid
    coords = torch.linspace(0, base - 1, grid, dtype=torch.float64) if grid > 1 else torch.zeros(1, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")

    def encode(pos: torch.Tensor) -> torch.Tensor:
        angles = pos.flatten()[:, None] * freqs[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([encode(rows), encode(cols)], dim=1).float()


def patchify(imgs: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, P*P*C), tokens in raster order, pixels (row, col, channel)."""
    return rearrange(imgs, "b c (h p) (w q) -> b (h w) (p q c)", p=p, q=p)


def unpatchify(tokens: torch.Tensor, p: int, channels: int) -> torch.Tensor:
    """(B, N, P*P*C) -> (B, C, H, W) on a square grid of tokens."""
    g = math.isqrt(tokens.shape[1])
    return rearrange(tokens, "b (h w) (p q c) -> b c (h p) (w q)", h=g, w=g, p=p, q=p, c=channels)


def init_weights(module: nn.Module) -> None:
    """MAE's initialisation, in one place: xavier-uniform linears and patch projection, unit
    layer norms. Architectures initialise their own extra parameters after it."""
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
    q = attn.q_norm(rearrange(q, "b n (h d) -> b h n d", h=attn.num_heads))
    k, v = rearrange(kv, "b n (two h d) -> two b h n d", two=2, h=attn.num_heads)
    out = F.scaled_dot_product_attention(q, attn.k_norm(k), v, attn_mask=mask)
    out = attn.proj(attn.norm(rearrange(out, "b h n d -> b n (h d)")))
    g = g + block.drop_path1(block.ls1(out))
    return g + block.drop_path2(block.ls2(block.mlp(block.norm2(g))))


# --------------------------------------------------------------------------- encoder

class Encoder(nn.Module):
    """ViT encoder on patch tokens with fixed position encodings, no class token.

    `forward` takes an optional source mask (pre-training); `features` is what evaluation uses:
    the average-pooled output of the last layer, with no mask.
    """

    def __init__(self, cfg: ModelConfig, image_size: int, in_chans: int, drop_path: float = 0.0):
        super().__init__()
        self.patch_size = cfg.patch_size
        self.embed_dim = cfg.embed_dim
        self.patch_embed = PatchEmbed(image_size, cfg.patch_size, in_chans, cfg.embed_dim, strict_img_size=False)
        self.grid = image_size // cfg.patch_size
        self.register_buffer("pos_embed", sincos_pos_embed(cfg.embed_dim, self.grid)[None], persistent=False)
        rates = torch.linspace(0, drop_path, cfg.depth).tolist()
        self.blocks = nn.ModuleList(
            Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, qkv_bias=True, drop_path=r) for r in rates)
        self.norm = nn.LayerNorm(cfg.embed_dim)

    def embed(self, imgs: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> patch tokens plus position encodings (B, N, D); another image size
        than the encoder's gets interpolated encodings."""
        x = self.patch_embed(imgs)
        grid = imgs.shape[-1] // self.patch_size
        if grid == self.grid:
            return x + self.pos_embed
        return x + sincos_pos_embed(self.embed_dim, grid, self.grid).to(x)[None]

    def forward(self, imgs: torch.Tensor, attn_mask: torch.Tensor | None = None, all_layers: bool = False,
                normalize: bool = True) -> torch.Tensor | list[torch.Tensor]:
        """Last layer's output (B, N, D), through the final norm unless `normalize` is False;
        with `all_layers`, every layer's [H_1 .. H_L]."""
        x, hidden = self.embed(imgs), []
        for block in self.blocks:
            x = block(x, attn_mask=attn_mask)
            hidden.append(x)
        if normalize:
            hidden[-1] = self.norm(x)
        return hidden if all_layers else hidden[-1]

    def features(self, imgs: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, D): the average-pooled last layer."""
        return self(imgs).mean(dim=1)

    def group_matcher(self, coarse: bool = False) -> dict:
        """Layer groups for timm's layer-wise lr decay: embeddings, each block, final norm."""
        return {"stem": r"^pos_embed|^patch_embed", "blocks": [(r"^blocks\.(\d+)", None), (r"^norm", (99999,))]}


# --------------------------------------------------------------------------- loss

def pixel_targets(imgs: torch.Tensor, patch_size: int, norm_pix: bool = True) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, P*P*C): each patch normalized by its own mean and (unbiased)
    variance + 1e-6, as MAE; the raw pixels without `norm_pix`."""
    target = patchify(imgs, patch_size)
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
    return target


def normalized_pixel_loss(pred: torch.Tensor, imgs: torch.Tensor, predicted: torch.Tensor,
                          patch_size: int, norm_pix: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, floor). loss: the MSE of `pred` (B, N, P*P*C) to the pixel targets, averaged over
    the predicted tokens (`predicted`, (B, N) bool). floor: the same loss of an all-zero
    prediction on the same tokens, the model that learned nothing (with `norm_pix`, each
    patch's own mean). A loss that stays near its floor has learned nothing."""
    target = pixel_targets(imgs, patch_size, norm_pix)
    weights = predicted.float()
    count = weights.sum()
    loss = ((pred - target).pow(2).mean(dim=-1) * weights).sum() / count
    with torch.no_grad():
        floor = (target.float().pow(2).mean(dim=-1) * weights).sum() / count
    return loss, floor


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


# --------------------------------------------------------------------------- evaluation heads

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
    """MAE's fine-tuning model with global pooling: the average of the last block's tokens,
    a fresh LayerNorm (`fc_norm`) in place of the encoder's final norm, a linear head."""

    def __init__(self, encoder: Encoder, num_classes: int):
        super().__init__()
        self.encoder = encoder
        self.fc_norm = nn.LayerNorm(encoder.embed_dim)
        self.head = nn.Linear(encoder.embed_dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=2e-5)
        nn.init.zeros_(self.head.bias)

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        return self.head(self.fc_norm(self.encoder(imgs, normalize=False).mean(dim=1)))

    def group_matcher(self, coarse: bool = False) -> dict:
        """Layer groups for layer-wise lr decay as MAE numbers them: embeddings 0, block i at
        i + 1, head and fc_norm (unmatched) on top; the encoder's unused final norm joins the
        last block."""
        return {"stem": r"^encoder\.pos_embed|^encoder\.patch_embed",
                "blocks": [(r"^encoder\.blocks\.(\d+)", None), (r"^encoder\.norm", (99999,))]}
