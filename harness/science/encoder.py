"""The ViT encoder every stage reads, and the evaluation heads on it.

What pre-training keeps and evaluation loads (section 4.1, appendix B): fixed 2-D sine-cosine
position encodings, the encoder on patch tokens, MAE's initialisation, and the heads of the
linear probe and of fine-tuning. The pre-training models (RandSAC in harness.science.model, the
baselines in harness.science.baselines) are built around this encoder; an evaluation imports
this module alone, so an edit of a pre-training model or its loss leaves the evaluations of the
random-init control as they were (harness.core.fingerprint). Shapes: B images, N tokens in
raster order, D the width, L the encoder's depth.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from harness.core.config import ModelConfig
from harness.science.blocks import Block, PatchEmbed


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
        self.patch_embed = PatchEmbed(cfg.patch_size, in_chans, cfg.embed_dim)
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
