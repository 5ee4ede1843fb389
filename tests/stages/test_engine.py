"""Training loop contracts: determinism, exact resume, atomic checkpoints, schedule, NaN stop."""
import pytest
import torch

from harness.core.stages import OptimConfig
from harness.stages import engine
from harness.stages.checkpoint import atomic_save


@pytest.mark.integration  # two pre-training stages
def test_same_config_and_seed_give_the_same_loss_curve(tmp_path, tiny_cfg, recorder, run_stage_here):
    cfg = tiny_cfg()
    a, b = recorder(), recorder()
    run_stage_here("pretrain", cfg, tmp_path / "a", a)
    run_stage_here("pretrain", cfg, tmp_path / "b", b)
    assert a.logged == b.logged and len(a.logged) == 3
    other = recorder()
    run_stage_here("pretrain", tiny_cfg(seed=1), tmp_path / "c", other)
    assert other.logged != a.logged


@pytest.mark.integration  # a stage run whole and again resumed
@pytest.mark.parametrize("stage", ["pretrain", "linprobe", "finetune"])
def test_resume_continues_exactly(tmp_path, stage, tiny_cfg, recorder, run_stage_here, stop_after):
    cfg = tiny_cfg(**{"linprobe.epochs": 3, "finetune.epochs": 3})
    parent = None
    if stage != "pretrain":
        parent = tmp_path / "parent"
        run_stage_here("pretrain", cfg, parent)
    straight = recorder()
    final = run_stage_here(stage, cfg, tmp_path / "straight", straight, parent)
    interrupted = recorder()
    with pytest.raises(stop_after.Stop):
        run_stage_here(stage, cfg, tmp_path / "resumed", interrupted, parent,
                       checkpoint=stop_after(tmp_path / "resumed" / "checkpoint.pt", 1))
    resumed_final = run_stage_here(stage, cfg, tmp_path / "resumed", interrupted, parent)
    epochs = [(s, m) for s, m in interrupted.logged if "resumed_at_epoch" not in m]
    assert epochs == straight.logged  # same metrics, epoch by epoch, bit for bit
    assert (1, {"resumed_at_epoch": 1}) in interrupted.logged  # it continued, it did not restart
    assert resumed_final == final


def test_failed_write_leaves_no_temp_and_old_file(tmp_path, monkeypatch):
    """A checkpoint write that fails midway (disk full, a kill) keeps the last good checkpoint."""
    path = tmp_path / "checkpoint.pt"
    atomic_save({"epoch": 1}, path)

    def boom(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        atomic_save({"epoch": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=False) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_a_text_file_is_replaced_whole_or_kept_when_the_disk_is_full(tmp_path, monkeypatch):
    """Result files and progress.json go through the checkpoint's atomic write, DiskFull included."""
    import errno
    import os
    import re

    from harness.core.files import DiskFull, write_text_atomic

    path = tmp_path / "pretrain.json"
    write_text_atomic(path, "old")
    write_text_atomic(path, "new")
    assert path.read_text() == "new"

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    expected = f"no space left on the device of {re.escape(str(path))}: .* the previous one is intact"
    with pytest.raises(DiskFull, match=expected):
        write_text_atomic(path, "newer")
    assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["pretrain.json"]


def test_the_seed_rules_keep_their_values():
    """Every random stream of training derives from these: changing one changes every run's numbers
    and breaks the exact resume of a checkpoint written before."""
    from harness.stages.data import epoch_seed, item_seed, rank_seed

    assert (rank_seed(0, 1), rank_seed(3, 2)) == (1, 23759)
    assert epoch_seed(3, 2) == 300011
    assert item_seed(3, 2, 5) == 30000167000214


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


def test_nan_loss_stops_the_stage(tmp_path, tiny_cfg, run_stage_here):
    cfg = tiny_cfg(**{"pretrain.base_lr": 1e30, "pretrain.warmup_epochs": 0})
    with pytest.raises(engine.NonFiniteLoss, match="loss is (nan|inf) at epoch 0"):
        run_stage_here("pretrain", cfg, tmp_path / "nan")
    assert not (tmp_path / "nan" / "encoder.pt").exists()


@pytest.mark.integration  # a pre-training stage
@pytest.mark.parametrize("method", ["randsac", "mae"])
def test_pretraining_logs_its_floor_and_ratio_every_epoch(tmp_path, tiny_cfg, recorder, run_stage_here, method):
    rec = recorder()
    final = run_stage_here("pretrain", tiny_cfg(method=method), tmp_path, rec)
    assert len(rec.logged) == 3
    for _, m in rec.logged:
        assert {"loss", "loss_floor", "loss_ratio", "lr"} <= set(m)
        assert m["loss_ratio"] == pytest.approx(m["loss"] / m["loss_floor"]) and 0 < m["loss_floor"] < 1
    assert final == {k: rec.logged[-1][1][k] for k in ("loss", "loss_floor", "loss_ratio")}


@pytest.mark.integration  # a stage run whole and again resumed
@pytest.mark.parametrize("stage,on_device", [("pretrain", False), ("pretrain", True), ("finetune", False)])
def test_a_stop_mid_epoch_continues_from_that_step_exactly(tmp_path, stage, on_device, tiny_cfg, recorder,
                                                           run_stage_here, capsys):
    """Asked to stop (preemption, a time limit) after step 2 of epoch 1 (4 steps an epoch): the
    stage checkpoints that step and stops; run again, it continues from there and ends as if
    never stopped. `on_device`: pre-training's images kept and augmented on the device."""
    from harness.core.errors import StageStopped
    from harness.core.layout import RunFolder
    from harness.run.runner import stage_module
    from harness.stages.context import StageContext

    cfg = tiny_cfg(**{"finetune.epochs": 3, "data.on_device": on_device})
    parent = None
    if stage != "pretrain":
        parent = RunFolder(tmp_path / "parent")
        run_stage_here("pretrain", cfg, parent.path)
    straight = recorder()
    final = run_stage_here(stage, cfg, tmp_path / "straight", straight, parent and parent.path)
    steps = iter(range(1000))
    stopped = recorder()
    ctx = StageContext(cfg, RunFolder(tmp_path / "stopped"), stopped, parent, stop=lambda: next(steps) == 5)
    epochs = getattr(cfg, stage).epochs  # the 2nd epoch, counted as progress lines count
    with pytest.raises(StageStopped, match=f"stopped on request at epoch 2/{epochs}, step 2/4; checkpoint "):
        stage_module(stage).run(ctx)
    assert torch.load(tmp_path / "stopped" / "checkpoint.pt", weights_only=False)["position"][0]["step"] == 2
    capsys.readouterr()
    resumed_final = stage_module(stage).run(StageContext(cfg, RunFolder(tmp_path / "stopped"), stopped, parent,
                                                         name="cell · stage"))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"[cell · stage] resuming at epoch 2/{epochs}, step 2/4 from {tmp_path / 'stopped' / 'checkpoint.pt'}"
    assert lines[1].startswith(f"[cell · stage] epoch 2/{epochs} ")  # the next progress line: the same count
    epochs = [(s, m) for s, m in stopped.logged if "resumed_at_epoch" not in m]
    assert epochs == straight.logged and resumed_final == final  # bit for bit
    assert (1, {"resumed_at_epoch": 1.5}) in stopped.logged


@pytest.mark.integration  # a stage run whole and again resumed
def test_a_stop_after_the_last_step_of_an_epoch_resumes(tmp_path, tiny_cfg, recorder, run_stage_here, capsys):
    """A stop that lands after an epoch's last step, before that epoch's end is saved (a Slurm
    time limit did, at step 32/32): the resumed stage has no step of that epoch left to time
    (its ETA divided by zero), says no rate and no ETA for it, and ends as if never stopped."""
    from harness.core.errors import StageStopped
    from harness.core.layout import RunFolder
    from harness.run.runner import stage_module
    from harness.stages.context import StageContext

    cfg = tiny_cfg()
    final = run_stage_here("pretrain", cfg, tmp_path / "straight", recorder())
    steps = iter(range(1000))
    stopped = recorder()
    ctx = StageContext(cfg, RunFolder(tmp_path / "stopped"), stopped, None, stop=lambda: next(steps) == 3)
    with pytest.raises(StageStopped, match=r"stopped on request at epoch 1/\d+, step 4/4; "):
        stage_module("pretrain").run(ctx)
    capsys.readouterr()
    resumed = stage_module("pretrain").run(StageContext(cfg, RunFolder(tmp_path / "stopped"), stopped, None))
    assert resumed == final
    lines = [line for line in capsys.readouterr().out.splitlines() if "] epoch " in line]
    assert "img/s" not in lines[0] and "ETA" not in lines[0] and "elapsed" in lines[0]  # nothing timed yet
    assert all("img/s" in line and "ETA" in line for line in lines[1:]) and len(lines) > 1


@pytest.fixture
def small_filesystem(tmp_path):
    """A 2 MB tmpfs (root only): where a checkpoint write runs out of space."""
    import os
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True, text=True)
    if out.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"CI runs as root and must mount a tmpfs: {out.stderr.strip()}")
        pytest.skip(f"cannot mount a size-limited tmpfs here: {out.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.integration  # stages on a small file system
def test_a_full_disk_stops_the_stage_with_one_line_and_keeps_the_last_checkpoint(small_filesystem, tiny_cfg,
                                                                                 recorder, run_stage_here):
    from harness.core.files import DiskFull
    from harness.stages.checkpoint import Checkpoint

    run_dir = small_filesystem / "run"
    filler = small_filesystem / "filler"

    class FillAfterFirst(Checkpoint):
        def save(self, epoch, *args, **kwargs):
            super().save(epoch, *args, **kwargs)
            if epoch == 1:  # the next write has no room
                stats = __import__("os").statvfs(small_filesystem)
                filler.write_bytes(b"\0" * (stats.f_bavail * stats.f_frsize - 4096))

    with pytest.raises(DiskFull) as err:
        run_stage_here("pretrain", tiny_cfg(), run_dir, checkpoint=FillAfterFirst(run_dir / "checkpoint.pt"))
    message = str(err.value)
    assert f"no space left on the device of {run_dir / 'checkpoint.pt'}" in message and "previous one is intact" in message
    assert "\n" not in message
    assert torch.load(run_dir / "checkpoint.pt", weights_only=False)["epoch"] == 1  # intact
    assert not list(run_dir.glob(".*.tmp"))
    filler.unlink()  # space again: asking again resumes and finishes
    straight = run_stage_here("pretrain", tiny_cfg(), small_filesystem / "straight")
    assert run_stage_here("pretrain", tiny_cfg(), run_dir) == straight
