"""The masked transformer: mask semantics, the autoregressive contract, the loss, shapes."""
import pytest
import torch

from harness.core.config import ModelConfig, SegmentConfig
from harness.science import masks
from harness.science.encoder import Classifier, Encoder, LinearProbe, sincos_pos_embed
from harness.science.model import RandSAC, randsac
from harness.science.pixel_loss import normalized_pixel_loss, patchify, unpatchify
from harness.science.segments import Serializer

CFG = ModelConfig(patch_size=4, embed_dim=32, depth=2, num_heads=2, decoder_depth=2, decoder_num_heads=2)


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


SEGMENTATIONS = {
    "patch-random": SegmentConfig(size=1),
    "square M=2": SegmentConfig(size=2),
    "square M=4": SegmentConfig(size=4),
    "patch-raster": SegmentConfig(size=1, order="raster"),
    "blob K=7": SegmentConfig(kind="blob", count=7),
    "blob 11->5": SegmentConfig(kind="blob", count=11, hierarchy=[5]),
    "square 16->4": SegmentConfig(size=2, hierarchy=[4]),
    "shuffled K=5": SegmentConfig(kind="blob", count=5, coherent=False),
}


ARCHITECTURES = ["masked", "skip", "two_stream"]
CASES = [(a, s) for a in ARCHITECTURES for s in SEGMENTATIONS if a == "masked" or s in ("square M=2", "blob 11->5")]


@pytest.mark.parametrize("architecture,segmentation", CASES)
def test_autoregressive_contract(architecture, segmentation):
    """Perturbing segment s_k changes no prediction of s_1..s_k, changes s_(k+1); s_S changes nothing."""
    torch.manual_seed(0)
    model = randsac(CFG.model_copy(update={"architecture": architecture}), 32, 3).eval()
    if architecture == "skip":  # a trained mixing, not the one-hot start: every encoder layer feeds the decoder
        torch.nn.init.uniform_(model.skip, 0.2, 1.0)
    ranks = Serializer(SEGMENTATIONS[segmentation], 8)(1, torch.Generator().manual_seed(3))
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
    assert normalized_pixel_loss(pred, imgs, ranks >= 1, 2) == normalized_pixel_loss(garbage, imgs, ranks >= 1, 2)
    # the floor is the loss of predicting nothing: what an all-zero prediction scores
    loss, floor = normalized_pixel_loss(pred, imgs, ranks >= 1, 2)
    assert loss == floor


def test_loss_equals_normalized_pixel_formula():
    torch.manual_seed(0)
    p, imgs = 4, torch.rand(2, 3, 16, 16)
    ranks = Serializer(SegmentConfig(size=2), 4)(2, torch.Generator().manual_seed(0))
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
    loss, floor = normalized_pixel_loss(pred, imgs, ranks >= 1, p)
    assert torch.allclose(loss, expected, atol=1e-6)
    # the floor: the same loss for an all-zero prediction, on the same predicted tokens only
    zero_loss, zero_floor = normalized_pixel_loss(torch.zeros_like(pred), imgs, ranks >= 1, p)
    assert torch.allclose(floor, zero_loss, atol=1e-7) and torch.equal(floor, zero_floor)
    # per token, a normalized patch's mean square is (P*P*C - 1) / (P*P*C) (unbiased variance)
    assert floor.item() == pytest.approx(47 / 48, rel=1e-3)
    # a constant patch (background) has target 0: the floor counts it only where it is predicted
    flat = imgs.clone()
    flat[:, :, :p, :p] = 0.5
    every = torch.ones(2, 16, dtype=torch.bool)
    but_first = every & (torch.arange(16) != 0)
    assert normalized_pixel_loss(pred, flat, every, p)[1].item() == pytest.approx(15 / 16 * 47 / 48, rel=1e-3)
    assert normalized_pixel_loss(pred, flat, but_first, p)[1].item() == pytest.approx(47 / 48, rel=1e-3)
    # without normalization the target is the raw pixels
    raw = sum(((pred[b, t] - patchify(imgs, p)[b, t]) ** 2).mean() for b in range(2) for t in range(16)
              if ranks[b, t] > 0) / count
    assert torch.allclose(normalized_pixel_loss(pred, imgs, ranks >= 1, p, norm_pix=False)[0], raw, atol=1e-6)


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


def test_skip_connections_start_as_the_masked_transformer():
    torch.manual_seed(0)
    skip = randsac(CFG.model_copy(update={"architecture": "skip"}), 32, 3)
    assert skip.skip.shape == (CFG.decoder_depth, CFG.depth)
    assert skip.skip[:, -1].eq(1).all() and skip.skip[:, :-1].eq(0).all()
    masked = RandSAC(CFG, 32, 3)
    masked.load_state_dict({k: v for k, v in skip.state_dict().items() if k != "skip"})
    imgs, ranks = torch.randn(2, 3, 32, 32), Serializer(SegmentConfig(size=2), 8)(2)
    assert torch.allclose(skip(imgs, ranks), masked(imgs, ranks), atol=1e-6)
    skip.loss(imgs, ranks)[0].backward()
    assert skip.skip.grad[:, :-1].abs().sum() > 0  # the skips to earlier layers learn


def test_two_stream_shares_the_encoder_weights():
    model = randsac(CFG.model_copy(update={"architecture": "two_stream"}), 32, 3)
    assert not hasattr(model, "decoder")
    extra = {n for n, _ in model.named_parameters() if not n.startswith("encoder.")}
    assert extra == {"query_token", "decoder_norm.weight", "decoder_norm.bias", "decoder_pred.weight",
                     "decoder_pred.bias"}


def test_shapes_and_features():
    model = RandSAC(CFG, 32, 1)
    imgs = torch.randn(3, 1, 32, 32)
    ranks = Serializer(SegmentConfig(size=2), 8)(3)
    assert model(imgs, ranks).shape == (3, 64, 16)
    loss, floor = model.loss(imgs, ranks)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss) and not floor.requires_grad
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
