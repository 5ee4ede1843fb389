"""Slurm requests checked against what sinfo reports (a fake sinfo: no cluster needed)."""
import pytest

from harness.run.executor import ExecutorError


def test_slurm_checks_against_what_sinfo_reports(tmp_path, monkeypatch):
    """A fake sinfo: partition cpu (default, 2 CPUs, 20 GB, no GPU), gpu (2 fake GPUs, 4 h limit)."""
    from harness.run.executor import ExecutorConfig, check_slurm

    fake = tmp_path / "sinfo"
    fake.write_text("#!/bin/sh\nprintf 'node1|cpu*|2|20480|(null)|infinite\\nnode1|gpu|2|20480|gpu:2|4:00:00\\n'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    check_slurm(ExecutorConfig(kind="slurm", partition="gpu", gpus_per_node=1, cpus_per_task=2, mem_gb=16,
                               timeout_min=240))
    check_slurm(ExecutorConfig(kind="slurm", cpus_per_task=1, tasks_per_node=2))  # the default partition
    with pytest.raises(ExecutorError, match="gpus_per_node=1 but partition 'cpu' has no GPUs"):
        check_slurm(ExecutorConfig(kind="slurm", partition="cpu", gpus_per_node=1))
    with pytest.raises(ExecutorError, match="partition 'a100' is unknown to Slurm; known: cpu, gpu"):
        check_slurm(ExecutorConfig(kind="slurm", partition="a100"))
    with pytest.raises(ExecutorError, match=r"partition 'gpu' has 0 node\(s\) with 10 CPUs \(1 task\(s\) x 10\), 64 GB "
                                          r"and 1 GPUs, 1 asked for; its largest node offers 2 CPUs, 20.0 GB, 2 GPUs"):
        check_slurm(ExecutorConfig(kind="slurm", partition="gpu", gpus_per_node=1, cpus_per_task=10, mem_gb=64,
                                   timeout_min=60))
    with pytest.raises(ExecutorError, match="2 asked for"):
        check_slurm(ExecutorConfig(kind="slurm", partition="cpu", cpus_per_task=1, nodes=2))
    with pytest.raises(ExecutorError, match=r"timeout_min=1440 is beyond the time limit of partition 'gpu' \(240 min\)"):
        check_slurm(ExecutorConfig(kind="slurm", partition="gpu", timeout_min=1440))
    check_slurm(ExecutorConfig(kind="slurm", timeout_min=2, signal_delay_s=30))  # signal 60-90 s in
    with pytest.raises(ExecutorError, match=r"timeout_min=1 with signal_delay_s=30: Slurm may send the time-limit "
                                          r"signal up to 60 s earlier than asked"):
        check_slurm(ExecutorConfig(kind="slurm", timeout_min=1, signal_delay_s=30))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ExecutorError, match="sinfo is not on PATH"):
        check_slurm(ExecutorConfig(kind="slurm"))
