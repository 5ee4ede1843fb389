"""Attention masks: Figure 4's source, target and memory masks."""
import torch

from harness.science import masks


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
