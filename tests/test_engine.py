"""Training loop contracts: determinism, exact resume, atomic checkpoints, schedule, NaN stop."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from harness import engine, finetune, linprobe, pretrain
from harness.config import OptimConfig, dotted_to_nested
from harness.studies import expand, load_study


class Recorder:
    run_id = "test"

    def __init__(self):
        self.logged = []

    def log(self, metrics, step):
        self.logged.append((step, dict(metrics)))


def tiny_cfg(**dotted):
    return expand(load_study("table3"), "tiny", dotted_to_nested({"pretrain.epochs": 3, **dotted}))[1].config


def test_same_config_and_seed_give_the_same_loss_curve(tmp_path):
    cfg = tiny_cfg()
    a, b = Recorder(), Recorder()
    pretrain.run(cfg, tmp_path / "a", a)
    pretrain.run(cfg, tmp_path / "b", b)
    assert a.logged == b.logged and len(a.logged) == 3
    other = Recorder()
    pretrain.run(tiny_cfg(seed=1), tmp_path / "c", other)
    assert other.logged != a.logged


@pytest.mark.parametrize("stage", ["pretrain", "linprobe", "finetune"])
def test_resume_continues_exactly(tmp_path, stage):
    cfg = tiny_cfg(**{"linprobe.epochs": 3, "finetune.epochs": 3})
    module = {"pretrain": pretrain, "linprobe": linprobe, "finetune": finetune}[stage]
    parent = None
    if stage != "pretrain":
        parent = tmp_path / "parent"
        pretrain.run(cfg, parent, Recorder())
    straight = Recorder()
    final = module.run(cfg, tmp_path / "straight", straight, parent_dir=parent)
    interrupted = Recorder()
    with pytest.raises(engine.Interrupted):
        module.run(cfg, tmp_path / "resumed", interrupted, parent_dir=parent, stop_after=1)
    resumed_final = module.run(cfg, tmp_path / "resumed", interrupted, parent_dir=parent)
    epochs = [(s, m) for s, m in interrupted.logged if "resumed_at_epoch" not in m]
    assert epochs == straight.logged  # same metrics, epoch by epoch, bit for bit
    assert (1, {"resumed_at_epoch": 1}) in interrupted.logged  # it continued, it did not restart
    assert resumed_final == final


def test_checkpoint_write_killed_midway_keeps_last_good(tmp_path):
    """SIGKILL while a checkpoint is being written never destroys the previous one."""
    path = tmp_path / "checkpoint.pt"
    engine.atomic_save({"epoch": 1}, path)
    script = textwrap.dedent(f"""
        import torch, sys
        from harness import engine
        big = {{"epoch": 2, "w": torch.randn(64, 1024, 1024)}}  # 256 MB: the write takes a while
        print("writing", flush=True)
        engine.atomic_save(big, __import__("pathlib").Path({str(path)!r}))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    # kill as soon as the temporary file has grown (the write is in progress)
    def writing():
        try:
            return any(p.name.endswith(".tmp") and p.stat().st_size > 0 for p in tmp_path.iterdir())
        except FileNotFoundError:  # renamed meanwhile
            return False

    while not writing():
        assert proc.poll() is None, "the writer finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert torch.load(path, weights_only=False) == {"epoch": 1}  # the last good checkpoint, intact


def test_failed_write_leaves_no_temp_and_old_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    engine.atomic_save({"epoch": 1}, path)

    def boom(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        engine.atomic_save({"epoch": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=False) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_warmup_cosine_schedule():
    opt_cfg = OptimConfig(epochs=10, warmup_epochs=2, batch_size=256, base_lr=1.0, min_lr=0.1)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=opt_cfg.lr)
    schedule = engine.warmup_cosine(optimizer, opt_cfg, steps_per_epoch=5)
    lrs = []
    for _ in range(50):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs[0] == 0 and lrs[5] == pytest.approx(0.5) and lrs[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # cosine decay is monotone
    for step in (30, 49):  # 40 decay steps after 10 warm-up steps
        cosine = 0.5 * (1 + torch.cos(torch.tensor(torch.pi * (step - 10) / 40)).item())
        assert lrs[step] == pytest.approx(0.1 + 0.9 * cosine)


def test_lr_scales_with_batch():
    assert OptimConfig(epochs=1, batch_size=512, base_lr=1e-3).lr == pytest.approx(2e-3)


def test_nan_loss_stops_the_stage(tmp_path):
    cfg = tiny_cfg(**{"pretrain.base_lr": 1e30, "pretrain.warmup_epochs": 0})
    with pytest.raises(engine.NonFiniteLoss, match="loss is (nan|inf) at epoch 0"):
        pretrain.run(cfg, tmp_path / "nan", Recorder())
    assert not (tmp_path / "nan" / pretrain.ENCODER_FILE).exists()
