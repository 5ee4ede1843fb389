"""Turns on a shared CPU (harness.stages.turns): who waits for whom, that turns alternate, that a
dead or failed holder frees its cores, and that a stage computes its batches in turns."""
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from harness.stages import turns
from harness.stages.turns import CpuTurns, NoTurns, cpu_ranges

ROOT = Path(__file__).resolve().parents[2]


def holder(folder: Path, threads: int, marks: Path, seconds: float = 30.0) -> subprocess.Popen:
    """Another process that takes a turn of `threads` of 2 cores, writes `marks`/held, and holds
    it until `marks`/release exists (or `seconds` pass); it writes the time it gives it back."""
    code = textwrap.dedent(f"""
        import os, time
        from pathlib import Path
        from harness.stages.turns import CpuTurns
        marks = Path({str(marks)!r})
        with CpuTurns(Path({str(folder)!r}), 2).turn({threads}):
            (marks / "held").write_text("")
            end = time.monotonic() + {seconds}
            while not (marks / "release").exists() and time.monotonic() < end:
                time.sleep(0.01)
            (marks / "given").write_text(repr(time.time()))
        """)
    marks.mkdir(exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    deadline = time.monotonic() + 30
    while not (marks / "held").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the holder never took its turn"
        time.sleep(0.01)
    return proc


def taken_in_thread(turns_: CpuTurns, threads: int) -> threading.Event:
    """Take a turn in a thread of this process; the event is set once it is held."""
    held = threading.Event()

    def take():
        with turns_.turn(threads):
            held.set()
    threading.Thread(target=take, daemon=True).start()
    return held


def test_cpu_sets_are_written_as_linux_writes_them():
    assert cpu_ranges({0, 1, 2, 3, 8}) == "0-3,8"
    assert cpu_ranges([5]) == "5"
    assert cpu_ranges({1, 3, 4}) == "1,3-4"


def test_jobs_on_other_cores_have_other_locks(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    a = CpuTurns.here(tmp_path)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {2, 3, 4})
    b = CpuTurns.here(tmp_path)
    assert a.folder != b.folder and (a.cores, b.cores) == (2, 3)
    assert a.folder.name.endswith("cpus-0-1") and b.folder.name.endswith("cpus-2-4")


def test_a_job_holding_every_core_makes_the_next_wait(tmp_path):
    marks = tmp_path / "marks"
    proc = holder(tmp_path / "cpu", 2, marks)
    mine = CpuTurns(tmp_path / "cpu", 2)
    held = taken_in_thread(mine, 1)
    assert not held.wait(0.5)  # both cores are the other job's
    (marks / "release").write_text("")
    assert held.wait(10)
    assert proc.wait(10) == 0


def test_one_thread_jobs_hold_a_core_each_and_do_not_wait(tmp_path):
    marks = tmp_path / "marks"
    proc = holder(tmp_path / "cpu", 1, marks)
    mine = CpuTurns(tmp_path / "cpu", 2)
    assert taken_in_thread(mine, 1).wait(5)  # the other core was free
    two = CpuTurns(tmp_path / "cpu", 2)
    both = taken_in_thread(two, 2)  # a 2-thread job waits for the core still held
    assert not both.wait(0.5)
    (marks / "release").write_text("")
    assert both.wait(10) and proc.wait(10) == 0


def test_a_killed_holder_frees_its_cores(tmp_path):
    proc = holder(tmp_path / "cpu", 2, tmp_path / "marks")
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert taken_in_thread(CpuTurns(tmp_path / "cpu", 2), 2).wait(5)


def test_two_jobs_that_want_every_core_alternate(tmp_path):
    """Each job computes 20 batches of 20 ms, a turn per batch: once both wait, neither takes two
    turns in a row while the other waits (the gate queues the job that gives back behind it)."""
    log = tmp_path / "log"
    code = textwrap.dedent(f"""
        import os, sys, time
        from pathlib import Path
        from harness.stages.turns import CpuTurns
        turns = CpuTurns(Path({str(tmp_path / "cpu")!r}), 2)
        turns.quantum_s = 0
        while not Path({str(tmp_path / "go")!r}).exists():
            time.sleep(0.005)
        for i in turns.each(range(20), 2):
            with open({str(log)!r}, "a") as f:
                f.write(sys.argv[1] + "\\n")
            time.sleep(0.02)
        """)
    procs = [subprocess.Popen([sys.executable, "-c", code, name], cwd=ROOT) for name in "ab"]
    time.sleep(1.0)  # both started and waiting for the go
    (tmp_path / "go").write_text("")
    assert [p.wait(60) for p in procs] == [0, 0]
    order = log.read_text().split()
    assert sorted(order) == ["a"] * 20 + ["b"] * 20
    second = 1 + max(order.index("a"), order.index("b"))  # from the second job's first turn
    first_done = min(len(order) - 1 - order[::-1].index(name) for name in "ab")  # to one's last
    both = "".join(order[second - 1:first_done + 1])
    longest = max(len(run) for run in both.replace("ab", "a b").replace("ba", "b a").split())
    assert longest <= 2, order  # they alternate, give or take the moment the second one queued


def test_a_loop_in_turns_gives_its_cores_back_when_it_ends_or_fails(tmp_path):
    mine = CpuTurns(tmp_path / "cpu", 2)
    assert [x for x in mine.each(range(3), 2)] == [0, 1, 2] and mine.holding == 0
    with pytest.raises(ValueError):
        for _ in mine.each(range(3), 2):
            assert mine.holding == 2
            raise ValueError
    assert mine.holding == 0
    with mine.turn(1):  # a loop inside a turn runs in that turn
        assert list(mine.each(range(2), 2)) == [0, 1] and mine.holding == 1
    assert mine.holding == 0 and taken_in_thread(CpuTurns(tmp_path / "cpu", 2), 2).wait(5)


def test_turns_can_be_turned_off(monkeypatch):
    assert isinstance(turns.for_cpu(False), NoTurns)
    monkeypatch.setenv(turns.ENV, "0")
    assert isinstance(turns.for_cpu(), NoTurns)
    monkeypatch.delenv(turns.ENV)
    assert isinstance(turns.for_cpu(), CpuTurns)


@pytest.mark.integration  # three stages
def test_a_stage_computes_in_turns_and_waits_for_the_cores(tmp_path, tiny_cfg, run_stage_here, monkeypatch):
    """A pre-training started while another job holds every core takes its first step only once
    they are given back; every stage's training, evaluation and feature extraction take turns;
    a stage that fails inside its loop gives its cores back."""
    shared = CpuTurns(tmp_path / "cpu", 2)
    monkeypatch.setattr(turns, "_here", shared)
    taken: list[tuple[float, int]] = []
    take = shared._take

    def counted(threads):
        take(threads)
        taken.append((time.time(), shared.holding))
    monkeypatch.setattr(shared, "_take", counted)

    marks = tmp_path / "marks"
    proc = holder(tmp_path / "cpu", 2, marks, seconds=2.0)
    run_stage_here("pretrain", tiny_cfg(), tmp_path / "pre")
    assert proc.wait(30) == 0
    assert taken[0][0] >= float((marks / "given").read_text())  # it waited for the other's turn
    threads = min(2, __import__("torch").get_num_threads())
    assert {need for _, need in taken} == {threads} and shared.holding == 0
    for stage in ("linprobe", "finetune"):
        before = len(taken)
        run_stage_here(stage, tiny_cfg(), tmp_path / stage, parent=tmp_path / "pre")
        assert len(taken) > before and shared.holding == 0

    from harness.stages import engine
    with pytest.raises(engine.NonFiniteLoss):
        run_stage_here("pretrain", tiny_cfg(**{"pretrain.base_lr": 1e30, "pretrain.warmup_epochs": 0}),
                       tmp_path / "nan")
    assert shared.holding == 0 and taken_in_thread(CpuTurns(tmp_path / "cpu", 2), 2).wait(5)
