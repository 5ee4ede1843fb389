"""Table 7's MAE baseline on RandSAC's encoder (DINO's model: harness.science.dino).

MAE (He et al. 2021): the encoder reads a random (1 - mask_ratio) of the tokens; the decoder,
of RandSAC's depth, heads and width (appendix C), fills in mask tokens and predicts every masked
token's pixels; normalized-pixel loss on the masked tokens.

Its settings and recipe: harness.science.methods.mae.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from harness.core.config import ModelConfig
from harness.science.blocks import Block
from harness.science.encoder import Encoder, init_weights, sincos_pos_embed
from harness.science.pixel_loss import normalized_pixel_loss


class MAE(nn.Module):
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

    def forward_encoder(self, imgs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(kept tokens encoded (B, K, D), restore (B, N): where each token went in the shuffle)."""
        x = self.encoder.embed(imgs)
        B, N, D = x.shape
        keep = max(1, int(N * (1 - self.mask_ratio)))
        order = torch.rand(B, N, device=x.device).argsort(dim=1)  # a random subset per image
        restore = order.argsort(dim=1)
        x = x.gather(1, order[:, :keep, None].expand(-1, -1, D))
        for block in self.encoder.blocks:
            x = block(x)
        return self.encoder.norm(x), restore

    def forward_decoder(self, x: torch.Tensor, restore: torch.Tensor) -> torch.Tensor:
        """Kept tokens plus mask tokens, unshuffled, through the decoder -> pixels (B, N, P*P*C)."""
        B, keep, D = x.shape
        x = torch.cat([x, self.mask_token.expand(B, restore.shape[1] - keep, -1)], dim=1)
        x = x.gather(1, restore[..., None].expand(-1, -1, D)) + self.decoder_pos
        for block in self.decoder:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))

    def forward(self, imgs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(predicted pixels (B, N, P*P*C), masked (B, N) bool)."""
        x, restore = self.forward_encoder(imgs)
        return self.forward_decoder(x, restore), restore >= x.shape[1]

    def loss(self, imgs: torch.Tensor, norm_pix: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(normalized-pixel loss, its floor) on the masked tokens."""
        pred, masked = self(imgs)
        return normalized_pixel_loss(pred, imgs, masked, self.cfg.patch_size, norm_pix)
