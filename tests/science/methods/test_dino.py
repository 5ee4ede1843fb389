"""Table 7's DINO baseline: the official training loop's stabilisers (gradient clipping per
parameter, the head's last layer frozen in the first epoch, weight decay scheduled up) and the
stage calling them between the backward pass and the optimizer step."""
import pytest
import torch

from harness.science import methods
from harness.stages import engine

LAST_LAYER = "head.last_layer.weight_v"  # weight_g stays at 1: lightly's norm_last_layer


def dino(tiny_cfg, **dotted):
    cfg = tiny_cfg(method="dino", **dotted)
    method = methods.method("dino")(cfg)
    model = method.build()
    optimizer, _ = engine.optimizer_and_schedule(model, cfg.pretrain, 256)
    for group in optimizer.param_groups:  # past the warm-up, which starts at lr 0
        group["lr"] = cfg.pretrain.lr
    return cfg, method, model, optimizer


def one_step(method, model, optimizer, epoch):
    torch.manual_seed(epoch)
    views = [torch.randn(4, 1, 32, 32), torch.randn(4, 1, 32, 32), torch.randn(4, 1, 16, 16)]
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    optimizer.zero_grad(set_to_none=True)
    method.loss((views, None), epoch).backward()
    method.before_step(optimizer, epoch, 0, 8)
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if n in before and not torch.equal(p, before[n])}
    return grads, changed


def test_the_last_layer_waits_one_epoch_and_every_gradient_is_clipped(tiny_cfg):
    clip = 1e-4  # far under these gradients' norms: every one is clipped
    cfg, method, model, optimizer = dino(tiny_cfg, **{"dino.clip_grad": clip})
    assert cfg.dino.freeze_last_layer == 1
    grads, changed = one_step(method, model, optimizer, epoch=0)
    assert grads[LAST_LAYER] is None and LAST_LAYER not in changed
    norms = {n: g.norm().item() for n, g in grads.items() if g is not None}
    assert len(norms) > 10 and all(v <= clip * 1.001 for v in norms.values())
    assert max(norms.values()) > clip * 0.99  # clipped to the bound, not zeroed
    assert "encoder.blocks.0.attn.qkv.weight" in changed and "head.layers.0.weight" in changed
    assert not any(n.startswith(("teacher", "teacher_head")) for n in grads)
    grads, changed = one_step(method, model, optimizer, epoch=1)
    assert grads[LAST_LAYER] is not None and LAST_LAYER in changed


def test_without_clipping_gradients_keep_their_norms(tiny_cfg):
    _, method, model, optimizer = dino(tiny_cfg, **{"dino.clip_grad": None, "dino.freeze_last_layer": 0})
    grads, changed = one_step(method, model, optimizer, epoch=0)
    assert max(g.norm().item() for g in grads.values() if g is not None) > 1e-3
    assert LAST_LAYER in changed


def test_weight_decay_rises_on_a_cosine_and_norms_stay_undecayed(tiny_cfg):
    cfg, method, _, optimizer = dino(tiny_cfg, **{"pretrain.weight_decay": 0.04, "dino.weight_decay_end": 0.4})
    decayed = [g for g in optimizer.param_groups if g["weight_decay"] > 0]
    plain = [g for g in optimizer.param_groups if g["weight_decay"] == 0]
    assert decayed and plain
    seen = []
    for step in (0, 50, 99):
        method.before_step(optimizer, 1, step, 100)
        seen.append(decayed[0]["weight_decay"])
        assert all(g["weight_decay"] == 0 for g in plain)
    assert seen[0] == pytest.approx(0.04) and seen[1] == pytest.approx(0.22, abs=0.01) and seen[2] == pytest.approx(0.4)
    cfg, method, _, optimizer = dino(tiny_cfg, **{"dino.weight_decay_end": None})
    method.before_step(optimizer, 1, 99, 100)
    assert {g["weight_decay"] for g in optimizer.param_groups} == {0.0, cfg.pretrain.weight_decay}  # constant


@pytest.mark.integration  # a pre-training stage
def test_the_stage_calls_the_stabilisers_after_backward_before_each_step(tmp_path, tiny_cfg, run_stage_here,
                                                                          monkeypatch):
    from harness.science.methods import dino as module
    calls = []
    real = module.Method.before_step

    def spy(self, optimizer, epoch, step, total):
        has_grads = any(p.grad is not None for p in self.model.encoder.parameters())
        calls.append((epoch, step, total, has_grads, self.model.head.last_layer.weight_v.grad is not None))
        real(self, optimizer, epoch, step, total)
        calls[-1] += (self.model.head.last_layer.weight_v.grad is not None,)

    monkeypatch.setattr(module.Method, "before_step", spy)
    run_stage_here("pretrain", tiny_cfg(method="dino", **{"pretrain.epochs": 2}), tmp_path)
    per_epoch = len(calls) // 2
    assert per_epoch == 4  # 256 images, batch 64
    assert [c[:4] for c in calls] == [(s // per_epoch, s, 2 * per_epoch, True) for s in range(2 * per_epoch)]
    assert all(c[4] for c in calls)  # the backward pass had reached the last layer
    assert [c[5] for c in calls] == [False] * per_epoch + [True] * per_epoch  # frozen in epoch 0 only
