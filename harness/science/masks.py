"""Attention masks of the masked transformer (paper section 4.1, Figure 4), built from ranks.

`ranks[b, i]` is the serialization position of the segment of token i. All masks are boolean
(B, N, N), True where attention is allowed, query index first.

- source mask (encoder): a token sees its own segment and earlier segments. Tokens of the last
  segment are seen by nobody, which is the paper's "the last segment is never encoded".
- target mask (decoder self-attention): a query of segment s sees queries of segments 1..s;
  queries of the first segment are not part of the target sequence (they see only themselves).
- memory mask (decoder cross-attention): a query of segment s sees encoder outputs of segments
  < s only. First-segment queries have no memory; they look at their own segment so that the
  softmax stays finite, and are never read nor scored.
"""
from __future__ import annotations

import torch


def source_mask(ranks: torch.Tensor) -> torch.Tensor:
    return ranks[:, None, :] <= ranks[:, :, None]


def target_mask(ranks: torch.Tensor) -> torch.Tensor:
    eye = torch.eye(ranks.shape[1], dtype=torch.bool, device=ranks.device)
    return ((ranks[:, None, :] >= 1) & source_mask(ranks)) | eye


def memory_mask(ranks: torch.Tensor) -> torch.Tensor:
    first = ranks == 0
    return (ranks[:, None, :] < ranks[:, :, None]) | (first[:, :, None] & first[:, None, :])


def for_heads(mask: torch.Tensor) -> torch.Tensor:
    """(B, N, M) -> (B, 1, N, M): one mask for every attention head.

    Boolean masks go straight to scaled_dot_product_attention (and timm's attention), so they
    work in any precision, autocast included.
    """
    return mask.unsqueeze(1)
