"""The ViT blocks (harness.science.blocks) and pre-training's optimizer groups against timm's:
the same parameters from the same seed and the same numbers to the last bit, forward and
backward, so that dropping timm from a pre-training job's imports changed no result."""
from __future__ import annotations

import pytest
import torch
from timm.layers import Mlp as TimmMlp, PatchEmbed as TimmPatchEmbed
from timm.models.vision_transformer import Attention as TimmAttention, Block as TimmBlock
from timm.optim import create_optimizer_v2

from harness.core.config import ModelConfig
from harness.core.stages import OptimConfig
from harness.science import blocks, masks
from harness.science.model import randsac
from harness.stages import engine


def built(seed: int, make):
    torch.manual_seed(seed)
    return make()


def assert_same_parameters(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def assert_same_run(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor, seed: int, **kwargs) -> None:
    """Forward in training mode (the same RNG stream for stochastic depth) and backward: equal bits."""
    outs = []
    for m in (a, b):
        m.train()
        xi = x.clone().requires_grad_(True)
        torch.manual_seed(seed)
        out = m(xi, **kwargs)
        out.square().sum().backward()
        outs.append((out.detach(), xi.grad, {k: p.grad for k, p in m.named_parameters()}))
    (oa, xa, ga), (ob, xb, gb) = outs
    assert torch.equal(oa, ob) and torch.equal(xa, xb)
    assert ga.keys() == gb.keys() and all(torch.equal(ga[k], gb[k]) for k in ga)


@pytest.mark.parametrize("drop_path", [0.0, 0.3])
@pytest.mark.parametrize("masked", [False, True])
def test_block_equals_timms(drop_path, masked):
    dim, heads = 32, 4
    ours = built(0, lambda: blocks.Block(dim, heads, 4.0, qkv_bias=True, drop_path=drop_path))
    timms = built(0, lambda: TimmBlock(dim, heads, 4.0, qkv_bias=True, drop_path=drop_path))
    assert_same_parameters(ours, timms)
    x = torch.randn(3, 16, dim)
    ranks = torch.stack([torch.randperm(4).repeat_interleave(4) for _ in range(3)])
    mask = masks.for_heads(masks.source_mask(ranks)) if masked else None
    assert_same_run(ours, timms, x, seed=7, attn_mask=mask)


def test_attention_mlp_and_patch_embedding_equal_timms():
    assert_same_parameters(built(1, lambda: blocks.Attention(24, 3)), built(1, lambda: TimmAttention(24, 3, qkv_bias=True)))
    assert_same_run(built(1, lambda: blocks.Attention(24, 3)), built(1, lambda: TimmAttention(24, 3, qkv_bias=True)),
                    torch.randn(2, 9, 24), seed=0)
    assert_same_run(built(2, lambda: blocks.Mlp(24, 96)), built(2, lambda: TimmMlp(24, 96)), torch.randn(2, 9, 24), seed=0)
    ours = built(3, lambda: blocks.PatchEmbed(4, 3, 24))
    timms = built(3, lambda: TimmPatchEmbed(32, 4, 3, 24, strict_img_size=False))
    assert_same_parameters(ours, timms)
    for size in (32, 48):  # evaluation may run at another size than the encoder's
        assert_same_run(ours, timms, torch.randn(2, 3, size, size), seed=0)
    with pytest.raises(ValueError, match="not divisible by the patch size 4"):
        ours(torch.randn(1, 3, 30, 30))


@pytest.mark.parametrize("architecture", ["masked", "skip", "two_stream"])
@pytest.mark.parametrize("weight_decay", [0.05, 0.0])
def test_pretraining_optimizer_equals_timms(architecture, weight_decay):
    """AdamW without layer decay is built here; timm's factory builds the same groups and arguments."""
    model = randsac(ModelConfig(patch_size=4, embed_dim=32, depth=2, num_heads=2, decoder_depth=2,
                                decoder_num_heads=2, architecture=architecture), 32, 1)
    opt = OptimConfig(epochs=2, batch_size=16, base_lr=1.6e-2, weight_decay=weight_decay, betas=(0.9, 0.95))
    ours, _ = engine.optimizer_and_schedule(model, opt, 64)
    timms = create_optimizer_v2(model, "adamw", lr=opt.lr, weight_decay=weight_decay, betas=(0.9, 0.95))
    assert type(ours) is type(timms) and len(ours.param_groups) == len(timms.param_groups)
    for a, b in zip(ours.param_groups, timms.param_groups):
        assert [id(p) for p in a["params"]] == [id(p) for p in b["params"]]
        assert a["initial_lr"] == b["lr"]  # the schedule starts its warm-up from the optimizer's lr
        assert {k: v for k, v in a.items() if k not in ("params", "lr", "initial_lr")} == \
            {k: v for k, v in b.items() if k not in ("params", "lr")}
