"""The workflow's shared Slurm watcher and the launcher's wait on it, against a fake squeue on PATH
that counts its calls and prints what the test puts in its queue file (no cluster needed)."""
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.run import launch
from harness.run.watcher import UNLISTED, Watcher


class FakeSlurm:
    """squeue prints queue.txt (lines `id|state|reason`) and logs each call; scancel logs too."""

    def __init__(self, root: Path):
        self.root, self.queue = root, root / "queue.txt"
        self.calls_log = root / "calls.txt"
        self.queue.write_text("")
        bin_ = root / "bin"
        bin_.mkdir()
        for tool, body in (("squeue", 'echo "squeue $*" >> {log}; cat {queue}'), ("scancel", 'echo "scancel $*" >> {log}'),
                           ("sacct", 'echo "sacct $*" >> {log}')):
            script = bin_ / tool
            script.write_text("#!/bin/sh\n" + body.format(log=self.calls_log, queue=self.queue) + "\n")
            script.chmod(0o755)
        self.bin = bin_

    def set(self, *jobs: str) -> None:
        self.queue.write_text("".join(f"{j}\n" for j in jobs))

    def calls(self, tool: str = "") -> list[str]:
        lines = self.calls_log.read_text().splitlines() if self.calls_log.exists() else []
        return [line for line in lines if line.startswith(tool)]


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    fake = FakeSlurm(tmp_path)
    monkeypatch.setenv("PATH", f"{fake.bin}:/usr/bin:/bin")
    return fake


def test_many_waiting_launchers_share_one_squeue_per_interval(tmp_path, fake_slurm):
    """Twelve launchers asking every 20 ms for 2 s: one squeue (for all of the user's jobs, ended
    ones too) per 0.5 s interval, not one per launcher and question."""
    fake_slurm.set(*(f"{100 + i}|PENDING|Priority" for i in range(12)))
    since = time.time()
    seen: list = []

    def wait(job_id: str):
        watcher = Watcher(tmp_path / ".slurm", interval_s=0.5, user="alice")  # each launcher its own
        end = time.time() + 2.0
        while time.time() < end:
            seen.append(watcher.state(job_id, since))
            time.sleep(0.02)

    threads = [threading.Thread(target=wait, args=(str(100 + i),)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    calls = fake_slurm.calls("squeue")
    assert 3 <= len(calls) <= 6, calls  # 2 s / 0.5 s, give or take a refresh at each end
    assert set(calls) == {"squeue -h -t all -u alice -o %i|%T|%r"}
    assert ("PENDING", "Priority") in seen and set(seen) <= {("PENDING", "Priority"), None}
    assert (tmp_path / ".slurm" / "queue-alice.json").exists()


def test_a_snapshot_speaks_only_of_jobs_submitted_before_it(tmp_path, fake_slurm):
    watcher = Watcher(tmp_path / ".slurm", interval_s=60, user="alice")
    fake_slurm.set("7|RUNNING|None", "8|CANCELLED|None")
    before = time.time() - 1  # submitted before the snapshot
    snap = watcher.snapshot()
    assert snap.state("7", before) == ("RUNNING", "None")
    assert snap.state("8", before) == ("CANCELLED", "None")  # ended a moment ago: `-t all` still lists it
    assert snap.state("9", before) == UNLISTED  # ended long ago (or never was)
    assert snap.state("10", time.time()) is None  # submitted after the snapshot: it cannot tell
    fake_slurm.set("7|COMPLETED|None")
    assert watcher.state("7", before) == ("RUNNING", "None")  # fresh for 60 s: no second squeue
    assert len(fake_slurm.calls("squeue")) == 1
    # a job submitted a moment ago by a launcher that died: wait for a snapshot newer than it
    assert watcher.snapshot(fresh_after=time.time()).state("7", before) == ("COMPLETED", "None")
    assert len(fake_slurm.calls("squeue")) == 2


def test_a_failing_squeue_is_asked_again_only_after_the_interval(tmp_path, fake_slurm):
    (fake_slurm.bin / "squeue").write_text(f"#!/bin/sh\necho squeue >> {fake_slurm.calls_log}\n"
                                           "echo 'slurm_load_jobs error: Unable to contact slurm controller' >&2\n"
                                           "exit 1\n")
    watcher = Watcher(tmp_path / ".slurm", interval_s=60, user="alice")
    for _ in range(5):
        assert watcher.state("7", 0.0) is None  # unknown: the launcher keeps waiting, prints nothing
    assert len(fake_slurm.calls("squeue")) == 1
    assert "Unable to contact" in watcher.read().error


def fake_job(tmp_path: Path, job_id: str = "42"):
    folder = tmp_path / "submitit"
    folder.mkdir()
    paths = SimpleNamespace(stdout=folder / f"{job_id}_0_log.out", result_pickle=folder / f"{job_id}_0_result.pkl")
    return SimpleNamespace(job_id=job_id, paths=paths, _sub_jobs=[])


def follow_in_thread(job, watcher, since, out: list):
    def run():
        try:
            launch.follow(job, "pretrain abc", "slurm", watcher, since, echo_s=0.02)
            out.append("ended")
        except Exception as err:  # noqa: BLE001 - the test reads it
            out.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_follow_echoes_progress_and_states_and_ends_with_the_result_file(tmp_path, fake_slurm, capsys):
    job, watcher = fake_job(tmp_path), Watcher(tmp_path / ".slurm", interval_s=0.1, user="alice")
    since, out = time.time(), []
    fake_slurm.set("42|PENDING|Priority")
    thread = follow_in_thread(job, watcher, since, out)
    time.sleep(0.5)
    fake_slurm.set("42|RUNNING|None")
    job.paths.stdout.write_text("submitit INFO (x) - Starting\nepoch 1/2 loss 0.9\n")
    time.sleep(0.5)
    fake_slurm.set("42|PENDING|BeginTime")  # requeued: same id, waiting again
    time.sleep(0.5)
    fake_slurm.set("42|RUNNING|None")
    with open(job.paths.stdout, "a") as f:
        f.write("resuming at epoch 2/2, step 1/4\nepoch 2/2 loss 0.5\n")
    time.sleep(0.5)
    job.paths.result_pickle.write_bytes(b"done")
    thread.join(timeout=10)
    assert out == ["ended"]
    lines = capsys.readouterr().out.splitlines()
    # each state once, when it changes, in order (a requeue waits again under the same id); the
    # job's own lines in order, submitit's left out
    assert [line for line in lines if line.startswith("[harness]")] == [
        "[harness] pretrain abc: Slurm job 42 PENDING (Priority)", "[harness] pretrain abc: Slurm job 42 RUNNING",
        "[harness] pretrain abc: Slurm job 42 PENDING (BeginTime)", "[harness] pretrain abc: Slurm job 42 RUNNING"]
    assert [line for line in lines if not line.startswith("[harness]")] == [
        "  epoch 1/2 loss 0.9", "  resuming at epoch 2/2, step 1/4", "  epoch 2/2 loss 0.5"]
    assert not fake_slurm.calls("sacct")  # submitit's watcher never asked


def test_follow_does_not_end_on_a_state_a_requeue_passes_through(tmp_path, fake_slurm):
    """PREEMPTED in one snapshot, PENDING in the next (preemption with requeue): still waiting.
    CANCELLED in two snapshots in a row: the job has ended, without a result."""
    job, watcher = fake_job(tmp_path), Watcher(tmp_path / ".slurm", interval_s=0.5, user="alice")
    since, out = time.time(), []
    fake_slurm.set("42|PREEMPTED|None")
    thread = follow_in_thread(job, watcher, since, out)
    time.sleep(0.2)  # within the interval, as a requeue is within squeue's 30 s
    fake_slurm.set("42|PENDING|BeginTime")
    time.sleep(1.2)
    assert not out  # still waiting
    fake_slurm.set("42|CANCELLED|None")
    thread.join(timeout=10)
    assert out == ["ended"]
    with pytest.raises(launch.EndedWithoutResult, match="Slurm job 42 ended without a result"):
        launch.slurm_results(job, wait_s=0.1)


def test_follow_cancels_a_job_whose_reason_never_clears(tmp_path, fake_slurm):
    job, watcher = fake_job(tmp_path), Watcher(tmp_path / ".slurm", interval_s=0.1, user="alice")
    fake_slurm.set("42|PENDING|InvalidQOS")
    out = []
    follow_in_thread(job, watcher, time.time(), out).join(timeout=10)
    assert isinstance(out[0], launch.Unservable)
    assert str(out[0]) == "Slurm job 42 can never start: InvalidQOS (its QOS is invalid); cancelled"
    assert fake_slurm.calls("scancel") == ["scancel 42"]


def with_sinfo(fake_slurm, cpus: int) -> None:
    """sinfo of one node with `cpus` CPUs in partition cpu (the default)."""
    script = fake_slurm.bin / "sinfo"
    script.write_text(f"#!/bin/sh\nprintf 'node1|cpu*|{cpus}|20480|(null)|infinite\\n'\n")
    script.chmod(0o755)


@pytest.mark.parametrize("cpus, cancelled", [(2, False), (1, True)])
def test_a_reason_that_names_no_cause_is_a_wait_when_a_node_could_hold_the_request(tmp_path, fake_slurm, cpus,
                                                                                   cancelled):
    """PartitionConfig, ReqNodeNotAvail, Resources...: busy or drained nodes, or a request above
    every node. With a node of 2 CPUs the 2-CPU request waits; with only 1-CPU nodes it is
    cancelled with the partition's largest node in its line."""
    from harness.run.executor import ExecutorConfig

    with_sinfo(fake_slurm, cpus)
    job, watcher = fake_job(tmp_path), Watcher(tmp_path / ".slurm", interval_s=0.1, user="alice")
    fake_slurm.set("42|PENDING|ReqNodeNotAvail, UnavailableNodes:node1")
    out = []
    executor = ExecutorConfig(kind="slurm", cpus_per_task=2)

    def run():
        try:
            launch.follow(job, "pretrain abc", "slurm", watcher, time.time(), echo_s=0.02, executor=executor)
            out.append("ended")
        except Exception as err:  # noqa: BLE001 - the test reads it
            out.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(1.0)
    if cancelled:
        thread.join(timeout=10)
        assert isinstance(out[0], launch.Unservable) and "its largest node offers 1 CPUs" in str(out[0])
        assert fake_slurm.calls("scancel") == ["scancel 42"]
        return
    assert not out and not fake_slurm.calls("scancel")  # it waits
    job.paths.result_pickle.write_bytes(b"done")
    thread.join(timeout=10)
    assert out == ["ended"]


def test_a_drained_node_is_said_once_and_waited_for(tmp_path, fake_slurm, capsys):
    job, watcher = fake_job(tmp_path), Watcher(tmp_path / ".slurm", interval_s=0.1, user="alice")
    fake_slurm.set("42|PENDING|ReqNodeNotAvail, UnavailableNodes:localhost")
    out = []
    thread = follow_in_thread(job, watcher, time.time(), out)
    time.sleep(0.6)
    fake_slurm.set("42|PENDING|Reservation")
    time.sleep(0.6)
    fake_slurm.set("42|RUNNING|None")
    time.sleep(0.4)
    job.paths.result_pickle.write_bytes(b"done")
    thread.join(timeout=10)
    assert out == ["ended"] and not fake_slurm.calls("scancel")
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[harness]")]
    assert lines == [
        "[harness] pretrain abc: Slurm job 42 waits: ReqNodeNotAvail, UnavailableNodes:localhost (a node it needs is "
        "drained, down, reserved or not responding); it starts once that clears",
        "[harness] pretrain abc: Slurm job 42 waits: Reservation (waits for its reservation to become usable); it "
        "starts once that clears",
        "[harness] pretrain abc: Slurm job 42 RUNNING"]


def test_patience_ends_a_wait_that_is_not_its_turn(tmp_path, fake_slurm):
    from harness.run.executor import ExecutorConfig

    job, watcher = fake_job(tmp_path), Watcher(tmp_path / ".slurm", interval_s=0.1, user="alice")
    fake_slurm.set("42|PENDING|PartitionDown")
    out = []
    executor = ExecutorConfig(kind="slurm", patience_h=0.5 / 3600)  # half a second
    thread = threading.Thread(target=lambda: out.append(_follow(job, watcher, executor)))
    thread.start()
    thread.join(timeout=10)
    assert isinstance(out[0], launch.Unservable) and "longer than executor.patience_h" in str(out[0])
    assert "for PartitionDown" in str(out[0]) and fake_slurm.calls("scancel") == ["scancel 42"]


def _follow(job, watcher, executor):
    try:
        launch.follow(job, "pretrain abc", "slurm", watcher, time.time(), echo_s=0.02, executor=executor)
        return "ended"
    except Exception as err:  # noqa: BLE001 - the test reads it
        return err


def test_a_job_a_dead_launcher_left_is_looked_up_in_a_fresh_snapshot(tmp_path, fake_slurm):
    """Re-attaching after a login-node death: the job is looked up in a snapshot taken after it
    was submitted and at most REATTACH_STALE_S before; one that ended meanwhile (an older
    snapshot still shows it RUNNING) or wrote its result file is not waited for again."""
    import json
    import os

    from harness.core.layout import RunFolder
    from harness.run.watcher import QueueSnapshot

    watcher = Watcher(tmp_path / ".slurm", interval_s=600, user="alice")
    run = RunFolder(tmp_path / "runs" / "abc")
    run.path.mkdir(parents=True)
    job_file = {"cluster": "slurm", "job_id": "42", "folder": str(tmp_path / "submitit")}
    run.job.write_text(json.dumps(job_file))
    now = time.time()
    os.utime(run.job, (now - 60, now - 60))  # submitted a minute ago
    watcher.write(QueueSnapshot(now - 20, {"42": ("RUNNING", "None")}))  # after it, but 20 s old
    fake_slurm.set("42|CANCELLED|None")  # cancelled since
    assert launch.live_slurm_job(run, watcher) is None
    assert len(fake_slurm.calls("squeue")) == 1
    fake_slurm.set("42|RUNNING|None")
    watcher.write(QueueSnapshot(now - 30, {}))
    job, since = launch.live_slurm_job(run, watcher)
    assert job.job_id == "42" and since == run.job.stat().st_mtime
    assert launch.live_slurm_job(run, watcher) is not None  # a snapshot seconds old is shared
    assert len(fake_slurm.calls("squeue")) == 2
    job.paths.result_pickle.parent.mkdir(parents=True)
    job.paths.result_pickle.write_bytes(b"")  # it ended (here: the error it raised)
    assert launch.live_slurm_job(run, watcher) is None
    assert len(fake_slurm.calls("squeue")) == 2


def test_status_reads_the_shared_queue_once_for_every_run(tmp_path, fake_slurm):
    """`python -m harness.status` on a workflow of Slurm runs: one squeue for all of them."""
    import json

    from harness.core.layout import Results
    from harness.status import status

    results = Results(tmp_path / "results")
    runs = [results.run(f"{i:012x}") for i in range(5)]
    for i, run in enumerate(runs):
        run.path.mkdir(parents=True)
        run.job.write_text(json.dumps({"cluster": "slurm", "job_id": str(40 + i), "folder": str(run.submitit)}))
    fake_slurm.set("40|PENDING|Priority", "41|RUNNING|None", "42|COMPLETED|None")
    time.sleep(0.05)
    states = [status(run, "pretrain") for run in runs]
    assert [s.state for s in states] == ["queued", "running", "stopped", "stopped", "stopped"]
    assert states[0].detail == "Slurm job 40 PENDING, reason Priority"
    assert len(fake_slurm.calls("squeue")) == 1
