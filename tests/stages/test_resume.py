"""Exact resume after real kills: the resumed stage ends with the metrics of an uninterrupted one."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from harness.core.config import dotted_to_nested
from harness.plan.studies import expand, load_study

pytestmark = pytest.mark.integration  # stages killed for real in child processes, then resumed

EPOCHS = 4
OVERRIDES = {"pretrain.epochs": EPOCHS, "data.train_subset": 1024}  # epochs of about a second
CHILD = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from harness.core import files
    from harness.core.config import dotted_to_nested
    from harness.core.layout import RunFolder
    from harness.stages import engine, pretrain
    from harness.stages.context import StageContext
    from harness.plan.studies import expand, load_study
    engine.set_threads(2)
    if os.environ.get("SLOW_CHECKPOINT_RENAME"):  # widen the window between write and rename,
        real_replace, calls = files.os.replace, []  # from the second checkpoint on
        def slow_replace(a, b):  # (os.replace itself: progress.json is renamed too)
            calls.extend([b] if Path(b).name == "checkpoint.pt" else [])
            if len(calls) > 1 and Path(b).name == "checkpoint.pt":
                print("renaming", flush=True)
                time.sleep(float(os.environ["SLOW_CHECKPOINT_RENAME"]))
            real_replace(a, b)
        files.os.replace = slow_replace
    class Quiet:
        def log(self, metrics, step):
            print("epoch", step, flush=True)
        def log_artifact(self, path):
            pass
        def log_input(self, **dataset):
            pass
    cfg = expand(load_study("table3"), "tiny", dotted_to_nested(%r))[1].config
    print("final", pretrain.run(StageContext(cfg, RunFolder(Path(sys.argv[1])), Quiet())), flush=True)
""" % OVERRIDES)


def child(run_dir, **env):
    return subprocess.Popen([sys.executable, "-c", CHILD, str(run_dir)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, **env})


def straight_history(tmp_path, recorder, run_stage_here):
    cfg = expand(load_study("table3"), "tiny", dotted_to_nested(OVERRIDES))[1].config
    rec = recorder()
    final = run_stage_here("pretrain", cfg, tmp_path / "straight", rec)
    return [m for _, m in rec.logged], final


def history(run_dir):
    return torch.load(run_dir / "checkpoint.pt", weights_only=False)["history"]


def test_sigkill_mid_epoch_then_resume_is_exact(tmp_path, recorder, run_stage_here):
    proc = child(tmp_path / "run")
    while proc.stdout.readline().strip() != "epoch 1":  # epoch 0 and 1 logged; epoch 2 under way
        assert proc.poll() is None
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 1 <= torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["epoch"] < EPOCHS
    again = child(tmp_path / "run")
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0 and "final" in out
    expected, final = straight_history(tmp_path, recorder, run_stage_here)
    assert history(tmp_path / "run") == expected  # every epoch's loss and lr, bit for bit
    assert f"final {final}" in out


def test_sigkill_while_writing_a_checkpoint_then_resume_is_exact(tmp_path, recorder, run_stage_here):
    proc = child(tmp_path / "run", SLOW_CHECKPOINT_RENAME="30")
    run_dir = tmp_path / "run"
    while proc.stdout.readline().strip() != "renaming":  # epoch 2's checkpoint is written, not renamed
        assert proc.poll() is None
    assert list(run_dir.glob(".checkpoint.pt.*.tmp"))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert torch.load(run_dir / "checkpoint.pt", weights_only=False)["epoch"] == 1  # the last good one
    again = child(run_dir)
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0
    expected, final = straight_history(tmp_path, recorder, run_stage_here)
    assert history(run_dir) == expected and f"final {final}" in out
