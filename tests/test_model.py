"""The masked transformer: mask semantics, the autoregressive contract, the loss, shapes."""
import pytest
import torch

from harness import masks
from harness.config import ModelConfig
from harness.model import (Classifier, Encoder, LinearProbe, RandSAC, normalized_pixel_loss, patchify,
                           sincos_pos_embed, unpatchify)
from harness.segments import serialize, square_segments

CFG = ModelConfig(patch_size=4, embed_dim=32, depth=2, num_heads=2, decoder_depth=2, decoder_num_heads=2)


def ranks_of(order):
    """Ranks (1, N) from a list of segment-id lists in serialization order."""
    n = sum(len(s) for s in order)
    ranks = torch.empty(1, n, dtype=torch.long)
    for r, seg in enumerate(order):
        ranks[0, seg] = r
    return ranks


def test_masks_match_figure_4():
    # six tokens, three segments serialized green(2,5) -> blue(0,3) -> red(1,4)
    ranks = ranks_of([[2, 5], [0, 3], [1, 4]])
    src, tgt, mem = masks.source_mask(ranks)[0], masks.target_mask(ranks)[0], masks.memory_mask(ranks)[0]
    # encoder: a token sees its own segment and earlier ones
    assert src[0].tolist() == [True, False, True, True, False, True]
    assert src[2].tolist() == [False, False, True, False, False, True]
    # nobody but the last segment itself sees the last segment: it is never encoded
    assert not src[[0, 2, 3, 5]][:, [1, 4]].any()
    # decoder self-attention: a target of segment s sees targets of segments 2..s (not the first)
    assert tgt[1].tolist() == [True, True, False, True, True, False]
    assert tgt[0].tolist() == [True, False, False, True, False, False]
    # memory: targets of segment s see encoder outputs of segments < s only
    assert mem[0].tolist() == [False, False, True, False, False, True]
    assert mem[1].tolist() == [True, False, True, True, False, True]
    # every row allows something (finite softmax)
    for m in (src, tgt, mem):
        assert m.any(dim=1).all()


def test_masked_attention_ignores_what_the_mask_hides():
    """Boolean masks reach the attention kernels with True = attend (fused and unfused timm paths)."""
    from timm.models.vision_transformer import Attention

    torch.manual_seed(0)
    attn = Attention(8, 2).eval()
    x = torch.randn(1, 3, 8)
    mask = masks.for_heads(torch.tensor([[[True, False, False], [True, True, False], [True, True, True]]]))
    x2 = x.clone()
    x2[0, 2] += 5.0  # only the last token may see the last token
    for fused in (True, False):
        attn.fused_attn = fused
        a, b = attn(x, attn_mask=mask), attn(x2, attn_mask=mask)
        assert torch.allclose(a[0, :2], b[0, :2], atol=1e-6) and not torch.allclose(a[0, 2], b[0, 2])


@pytest.mark.parametrize("size", [1, 2, 4])
def test_autoregressive_contract(size):
    """Perturbing segment s_k changes no prediction of s_1..s_k, changes s_(k+1); s_S changes nothing."""
    torch.manual_seed(0)
    model = RandSAC(CFG, 32, 3).eval()
    ids = square_segments(8, size)
    ranks = serialize(ids, 1, "random", torch.Generator().manual_seed(size))
    num = int(ranks.max()) + 1
    imgs = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        base = model(imgs, ranks)
        assert (base[0, ranks[0] == 0] == 0).all(), "the first segment is never predicted"
        for k in sorted({0, 1, num // 2, num - 2, num - 1}):
            token_mask = (ranks[0] == k).reshape(8, 8).repeat_interleave(4, 0).repeat_interleave(4, 1)
            perturbed = imgs + 3.0 * torch.randn_like(imgs) * token_mask
            out = model(perturbed, ranks)
            diff = (out - base).abs().amax(dim=-1)[0]  # per token
            upto = ranks[0] <= k
            assert diff[upto].max() < 1e-5, f"segment rank {k} leaked into an earlier or its own prediction"
            if k + 1 < num:
                assert diff[ranks[0] == k + 1].min() > 1e-4, "the next segment must depend on segment k"
            else:
                assert diff.max() < 1e-5, "the last segment must not influence any prediction"


def test_first_segment_is_never_scored():
    imgs = torch.randn(1, 3, 4, 8)
    target = patchify(imgs, 2)  # patch 2 on a 4x8 image: 2x4 = 8 tokens
    ranks = torch.tensor([[0, 0, 1, 1, 2, 2, 3, 3]])
    pred = torch.zeros_like(target)
    garbage = pred.clone()
    garbage[0, :2] = 1e6  # predictions of the first segment are ignored
    assert normalized_pixel_loss(pred, imgs, ranks, 2) == normalized_pixel_loss(garbage, imgs, ranks, 2)


def test_loss_equals_normalized_pixel_formula():
    torch.manual_seed(0)
    p, imgs = 4, torch.rand(2, 3, 16, 16)
    ranks = serialize(square_segments(4, 2), 2, "random", torch.Generator().manual_seed(0))
    pred = torch.randn(2, 16, p * p * 3)
    total, count = 0.0, 0
    for b in range(2):
        for t in range(16):
            if ranks[b, t] == 0:
                continue
            r, c = divmod(t, 4)
            patch = imgs[b, :, r * p:(r + 1) * p, c * p:(c + 1) * p].permute(1, 2, 0).reshape(-1)  # (row, col, ch)
            mean, var = patch.mean(), patch.var(unbiased=True)
            target = (patch - mean) / torch.sqrt(var + 1e-6)
            total += ((pred[b, t] - target) ** 2).mean()
            count += 1
    expected = total / count
    assert torch.allclose(normalized_pixel_loss(pred, imgs, ranks, p), expected, atol=1e-6)
    # without normalization the target is the raw pixels
    raw = sum(((pred[b, t] - patchify(imgs, p)[b, t]) ** 2).mean() for b in range(2) for t in range(16)
              if ranks[b, t] > 0) / count
    assert torch.allclose(normalized_pixel_loss(pred, imgs, ranks, p, norm_pix=False), raw, atol=1e-6)


def test_patchify_roundtrip():
    imgs = torch.randn(2, 3, 32, 32)
    assert torch.equal(unpatchify(patchify(imgs, 4), 4, 3), imgs)
    assert torch.equal(patchify(imgs, 4)[0, 9, :3], imgs[0, :, 4, 4])  # token (1,1), pixel (0,0)


def test_sincos_pos_embed():
    pe = sincos_pos_embed(32, 8)
    assert pe.shape == (64, 32)
    assert len({tuple(row.tolist()) for row in pe}) == 64  # every position distinct
    assert torch.equal(pe[0, :8], torch.zeros(8)) and torch.equal(pe[0, 8:16], torch.ones(8))  # sin/cos of 0
    assert torch.equal(pe[0:8, :16], pe[0:1, :16].expand(8, -1))  # the first row shares the row code
    with pytest.raises(ValueError):
        sincos_pos_embed(30, 8)


def test_shapes_and_features():
    model = RandSAC(CFG, 32, 1)
    imgs = torch.randn(3, 1, 32, 32)
    ranks = serialize(square_segments(8, 2), 3, "random")
    assert model(imgs, ranks).shape == (3, 64, 16)
    loss = model.loss(imgs, ranks)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    enc = model.encoder
    assert enc.features(imgs).shape == (3, 32)
    assert LinearProbe(enc, 10)(imgs).shape == (3, 10)
    assert Classifier(Encoder(CFG, 32, 1, drop_path=0.1), 10)(imgs).shape == (3, 10)


def test_evaluation_features_use_no_mask():
    """Features see every token: perturbing any token changes the pooled feature."""
    enc = RandSAC(CFG, 32, 1).encoder.eval()
    imgs = torch.randn(1, 1, 32, 32)
    out = enc.features(imgs)
    imgs2 = imgs.clone()
    imgs2[..., -4:, -4:] += 1.0  # the last token in raster order
    assert not torch.allclose(enc.features(imgs2), out)
