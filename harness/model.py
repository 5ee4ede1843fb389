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
        self.patch_embed = PatchEmbed(image_size, cfg.patch_size, in_chans, cfg.embed_dim, strict_img_size=False)
        self.grid = image_size // cfg.patch_size
        self.register_buffer("pos_embed", sincos_pos_embed(cfg.embed_dim, self.grid)[None], persistent=False)
        rates = torch.linspace(0, drop_path, cfg.depth).tolist()
        self.blocks = nn.ModuleList(
            Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, qkv_bias=True, drop_path=r) for r in rates)
        self.norm = nn.LayerNorm(cfg.embed_dim)

    def embed(self, imgs: torch.Tensor) -> torch.Tensor:
        """Patch tokens plus position encodings; another image size gets interpolated encodings."""
        x = self.patch_embed(imgs)
        grid = imgs.shape[-1] // self.patch_size
        if grid == self.grid:
            return x + self.pos_embed
        return x + sincos_pos_embed(self.embed_dim, grid, self.grid).to(x)[None]

    def forward(self, imgs: torch.Tensor, attn_mask: torch.Tensor | None = None,
                all_layers: bool = False) -> torch.Tensor | list[torch.Tensor]:
        """Last layer's output (normalized); with `all_layers`, every layer's [H_1 .. H_L]."""
        x, hidden = self.embed(imgs), []
        for block in self.blocks:
            x = block(x, attn_mask=attn_mask)
            hidden.append(x)
        hidden[-1] = self.norm(x)
        return hidden if all_layers else hidden[-1]

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
    if hasattr(module, "query_token"):
        nn.init.normal_(module.query_token, std=0.02)
    if hasattr(module, "skip"):  # trainable skip connections start on the last encoder layer
        with torch.no_grad():
            module.skip.zero_()[:, -1] = 1.0


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


def normalized_pixel_loss(pred: torch.Tensor, imgs: torch.Tensor, predicted: torch.Tensor,
                          patch_size: int, norm_pix: bool = True) -> torch.Tensor:
    """MSE to per-patch normalized pixels, averaged over the predicted tokens (`predicted`, (B, N)).

    Each target patch is normalized by its own mean and (unbiased) variance + 1e-6, as MAE.
    """
    target = patchify(imgs, patch_size)
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
    per_token = (pred - target).pow(2).mean(dim=-1)
    predicted = predicted.to(per_token.dtype)
    return (per_token * predicted).sum() / predicted.sum()


def query_stream(block: Block, g: torch.Tensor, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """XLNet's query stream through one encoder block, sharing its weights.

    Queries come from the query stream g, keys and values from the content stream h; the
    memory mask lets a query of segment s read content of segments < s only.
    """
    attn = block.attn
    B, N, C = g.shape
    d = attn.attn_dim
    w, b = attn.qkv.weight, attn.qkv.bias
    q = F.linear(block.norm1(g), w[:d], None if b is None else b[:d])
    kv = F.linear(block.norm1(h), w[d:], None if b is None else b[d:])
    q = attn.q_norm(q.reshape(B, N, attn.num_heads, -1).transpose(1, 2))
    k, v = kv.reshape(B, N, 2, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(q, attn.k_norm(k), v, attn_mask=mask)
    out = attn.proj(attn.norm(out.transpose(1, 2).reshape(B, N, d)))
    g = g + block.drop_path1(block.ls1(out))
    return g + block.drop_path2(block.ls2(block.mlp(block.norm2(g))))


class RandSAC(nn.Module):
    """Autoregressive segment prediction; three architectures (section 4, appendix A.3, Figure 5).

    - masked: the encoder reads the image under the source mask; the decoder's inputs are the
      fixed position encodings of the tokens (the target queries); its self-attention uses the
      target mask and its cross-attention the memory mask, so a token of segment s is
      predicted from the segments before s only.
    - skip: the same, but decoder layer l reads the memory Z_l = sum_k W[l, k] H_k over all
      encoder layers k, W learned. W starts as one-hot on the last encoder layer, so training
      starts from the masked transformer and learns which skips help.
    - two_stream: XLNet's two-stream attention with shared weights, no decoder: the content
      stream is the encoder under the source mask; the query stream (position encoding + a
      learned query token) reads it through the same blocks under the memory mask.
    """

    def __init__(self, cfg: ModelConfig, image_size: int, in_chans: int):
        super().__init__()
        self.cfg = cfg
        self.in_chans = in_chans
        self.encoder = Encoder(cfg, image_size, in_chans)
        grid = image_size // cfg.patch_size
        self.register_buffer("query_embed", sincos_pos_embed(cfg.embed_dim, grid)[None], persistent=False)
        if cfg.architecture == "two_stream":
            self.query_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        else:
            self.decoder = nn.ModuleList(
                DecoderBlock(cfg.embed_dim, cfg.decoder_num_heads, cfg.mlp_ratio) for _ in range(cfg.decoder_depth))
        if cfg.architecture == "skip":
            self.skip = nn.Parameter(torch.zeros(cfg.decoder_depth, cfg.depth))
        self.decoder_norm = nn.LayerNorm(cfg.embed_dim)
        self.decoder_pred = nn.Linear(cfg.embed_dim, cfg.patch_size ** 2 * in_chans)
        init_weights(self)

    def forward(self, imgs: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
        """Predicted pixels (B, N, P*P*C); the first segment is never predicted (its rows are 0)."""
        source_mask = masks.for_heads(masks.source_mask(ranks))
        memory_mask = masks.for_heads(masks.memory_mask(ranks))
        if self.cfg.architecture == "two_stream":
            h = self.encoder.embed(imgs)
            g = (self.query_embed + self.query_token).expand(imgs.shape[0], -1, -1)
            for block in self.encoder.blocks:
                h, g = block(h, attn_mask=source_mask), query_stream(block, g, h, memory_mask)
            x = self.encoder.norm(g)
        else:
            if self.cfg.architecture == "skip":
                hidden = torch.stack(self.encoder(imgs, attn_mask=source_mask, all_layers=True))
                memories = torch.einsum("lk,kbnd->lbnd", self.skip, hidden)
            else:
                memories = [self.encoder(imgs, attn_mask=source_mask)] * len(self.decoder)
            target_mask = masks.for_heads(masks.target_mask(ranks))
            x = self.query_embed.expand(imgs.shape[0], -1, -1)
            for block, memory in zip(self.decoder, memories):
                x = block(x, memory, target_mask, memory_mask)
        pred = self.decoder_pred(self.decoder_norm(x))
        return pred.masked_fill((ranks == 0).unsqueeze(-1), 0.0)

    def loss(self, imgs: torch.Tensor, ranks: torch.Tensor, norm_pix: bool = True) -> torch.Tensor:
        """Normalized-pixel loss over the predicted tokens: segments 2..S."""
        return normalized_pixel_loss(self(imgs, ranks), imgs, ranks >= 1, self.cfg.patch_size, norm_pix)


class MAE(nn.Module):
    """Table 7's MAE baseline (He et al. 2021) on the same encoder: the encoder reads a random
    (1 - mask_ratio) of the tokens, the decoder fills in mask tokens; normalized-pixel loss on
    the masked tokens. The decoder has RandSAC's depth, heads and width (appendix C)."""

    def __init__(self, cfg: ModelConfig, image_size: int, in_chans: int, mask_ratio: float = 0.75):
        super().__init__()
        self.cfg, self.mask_ratio = cfg, mask_ratio
        self.encoder = Encoder(cfg, image_size, in_chans)
        grid = image_size // cfg.patch_size
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.register_buffer("decoder_pos", sincos_pos_embed(cfg.embed_dim, grid)[None], persistent=False)
        self.decoder = nn.ModuleList(Block(cfg.embed_dim, cfg.decoder_num_heads, cfg.mlp_ratio, qkv_bias=True)
                                     for _ in range(cfg.decoder_depth))
        self.decoder_norm = nn.LayerNorm(cfg.embed_dim)
        self.decoder_pred = nn.Linear(cfg.embed_dim, cfg.patch_size ** 2 * in_chans)
        init_weights(self)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, imgs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(predicted pixels (B, N, P*P*C), masked (B, N) bool)."""
        x = self.encoder.embed(imgs)
        B, N, D = x.shape
        keep = max(1, int(N * (1 - self.mask_ratio)))
        order = torch.rand(B, N, device=x.device).argsort(dim=1)  # a random subset per image
        restore = order.argsort(dim=1)
        x = x.gather(1, order[:, :keep, None].expand(-1, -1, D))
        for block in self.encoder.blocks:
            x = block(x)
        x = self.encoder.norm(x)
        x = torch.cat([x, self.mask_token.expand(B, N - keep, -1)], dim=1)
        x = x.gather(1, restore[..., None].expand(-1, -1, D)) + self.decoder_pos
        for block in self.decoder:
            x = block(x)
        masked = restore >= keep
        return self.decoder_pred(self.decoder_norm(x)), masked

    def loss(self, imgs: torch.Tensor, norm_pix: bool = True) -> torch.Tensor:
        pred, masked = self(imgs)
        return normalized_pixel_loss(pred, imgs, masked, self.cfg.patch_size, norm_pix)


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
