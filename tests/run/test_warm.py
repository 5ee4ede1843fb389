"""Warm starts (harness.run.warm): a job handed to a server is its forked child, and behaves for
submitit as the cold process would (streams, directory, environment, exit status, signals)."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "harness" / "run" / "warm_client.py"
JOB = """
import os, signal, sys, time
mode = sys.argv[1]
mask = os.umask(0)
print("job", os.getpid(), os.getppid(), os.getcwd(), os.environ.get("WARM_TEST"), oct(mask), sys.argv[1:], flush=True)
if mode == "exit":
    sys.exit(int(sys.argv[2]))
if mode == "raise":
    raise RuntimeError("boom")
if mode == "kill":
    os.kill(os.getpid(), signal.SIGUSR1)
got = []
signal.signal(signal.SIGTERM, lambda signum, _: got.append(signum))
print("ready", flush=True)
while mode == "signal" and not got:
    time.sleep(0.01)
if mode == "signal":
    print("got", got[0], flush=True)
while mode == "sleep":
    time.sleep(1)
"""


@pytest.fixture
def server(tmp_path):
    """A warm server that preloads nothing heavy, its socket, and its process."""
    (tmp_path / "warmjob.py").write_text(JOB)
    sock = tmp_path / "s.sock"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-P", "-m", "harness.run.warm", "--socket", str(sock), "--preload",
                             "json", "--idle-s", "30", "--watch", str(tmp_path)], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    deadline = time.time() + 30
    while "serving" not in (tmp_path / "server.log").read_text():
        assert proc.poll() is None and time.time() < deadline, (tmp_path / "server.log").read_text()
        time.sleep(0.05)
    yield sock, proc
    proc.terminate()
    proc.wait(10)


def client(tmp_path, sock, *args, cwd=None, **kw):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]), "WARM_TEST": "asked"}
    return subprocess.Popen([sys.executable, "-P", str(CLIENT), str(sock), str(tmp_path / "started.log"), "-u", "-m",
                             "warmjob", *args], env=env, cwd=cwd or tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def fields(line: str) -> tuple[int, int, str, str, str]:
    _, pid, ppid, cwd, value, mask, *_ = line.split()
    return int(pid), int(ppid), cwd, value, mask


def test_a_handed_job_is_a_fork_of_the_server_with_the_clients_streams_directory_environment_and_status(
        tmp_path, server):
    sock, proc = server
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    job = client(tmp_path, sock, "exit", "3", cwd=elsewhere, umask=0o027)
    out, err = job.communicate(timeout=30)
    pid, ppid, cwd, value, mask = fields(out.splitlines()[0])
    assert job.returncode == 3 and ppid == proc.pid and pid != job.pid  # forked by the server
    assert (cwd, value, mask) == (str(elsewhere), "asked", "0o27")  # the client's directory, environment, umask
    job = client(tmp_path, sock, "raise")
    out, err = job.communicate(timeout=30)
    assert job.returncode == 1 and err.rstrip().endswith("RuntimeError: boom")  # its traceback on its stderr
    job = client(tmp_path, sock, "kill")
    job.communicate(timeout=30)
    assert job.returncode == -signal.SIGUSR1  # a job killed by a signal: its client dies of it too
    assert "[warm] job" in (tmp_path / "server.log").read_text()


def test_the_client_forwards_signals_and_its_death_kills_the_job(tmp_path, server):
    sock, _ = server
    job = client(tmp_path, sock, "signal")
    assert job.stdout.readline().startswith("job") and job.stdout.readline().strip() == "ready"
    job.send_signal(signal.SIGTERM)  # as submitit's controller and the launcher's stop send it
    out, _ = job.communicate(timeout=30)
    assert job.returncode == 0 and out.strip() == f"got {int(signal.SIGTERM)}"

    job = client(tmp_path, sock, "sleep")
    pid = fields(job.stdout.readline())[0]
    assert job.stdout.readline().strip() == "ready"
    job.kill()  # SIGKILL cannot be forwarded: the server kills the job when its client is gone
    job.wait(10)
    deadline = time.time() + 10
    while Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text():
        assert time.time() < deadline, "the job outlived its killed client"
        time.sleep(0.05)


@pytest.mark.integration  # the server it starts imports torch and the harness
def test_without_a_server_the_job_starts_cold_and_starts_one(tmp_path):
    snap = tmp_path / "snap"  # first on the path, as a job's code snapshot: the server ends when it goes
    snap.mkdir()
    (snap / "warmjob.py").write_text(JOB)
    sock, log = tmp_path / "none.sock", tmp_path / "logs" / "warm.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(snap), str(ROOT)])}
    for k in range(2):
        job = subprocess.Popen([sys.executable, "-P", str(CLIENT), str(sock), str(log), "-u", "-m", "warmjob", "exit",
                                "0"], env=env, cwd=tmp_path, stdout=subprocess.PIPE, text=True)
        out, _ = job.communicate(timeout=60)
        pid, *_ = fields(out.splitlines()[0])
        assert job.returncode == 0 and pid == job.pid  # the client became the job (exec)
        if k == 0:  # a lone job starts no server: its log only marks that a workflow began
            time.sleep(1)
            assert log.read_text() == "" and not sock.exists()
    deadline = time.time() + 120  # the second started one for the next job: it imports torch, then serves
    while "serving" not in (log.read_text() if log.exists() else ""):
        assert time.time() < deadline, log.read_text() if log.exists() else "no log"
        time.sleep(0.2)
    job = subprocess.run([sys.executable, "-P", str(CLIENT), str(sock), str(log), "-u", "-m", "warmjob", "exit", "0"],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    server_pid = int(log.read_text().split("(pid ")[1].split(")")[0])
    assert job.returncode == 0 and fields(job.stdout)[1] == server_pid  # the next job: forked by it
    shutil.rmtree(snap)
    deadline = time.time() + 30
    while sock.exists():
        assert time.time() < deadline, "the server outlived its snapshot"
        time.sleep(0.2)


def test_a_second_server_on_the_same_socket_leaves_and_an_idle_one_ends(tmp_path, server):
    sock, proc = server
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    second = subprocess.run([sys.executable, "-P", "-m", "harness.run.warm", "--socket", str(sock), "--preload",
                             "json"], env=env, timeout=60)
    assert second.returncode == 0 and proc.poll() is None and sock.exists()
    idle = tmp_path / "idle.sock"
    quick = subprocess.run([sys.executable, "-P", "-m", "harness.run.warm", "--socket", str(idle), "--preload",
                            "json", "--idle-s", "0.5"], env=env, timeout=60)
    assert quick.returncode == 0 and not idle.exists()  # it served no one, ended, and took its socket away


def test_an_idle_server_stays_while_a_cold_job_of_its_workflow_runs(tmp_path):
    """Two long cold jobs side by side must not make their workflow's server end (and the next
    job start cold): each cold job marks itself until it ends, however it ends."""
    (tmp_path / "warmjob.py").write_text(JOB)
    sock = tmp_path / "w.sock"
    cold = client(tmp_path, sock, "sleep")  # the workflow's first job: it starts no server
    assert cold.stdout.readline().startswith("job")  # started cold (no server), and sleeps
    assert [m.name for m in tmp_path.glob("w.sock.cold-*")] == [f"w.sock.cold-{cold.pid}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    idle = subprocess.Popen([sys.executable, "-P", "-m", "harness.run.warm", "--socket", str(sock), "--preload",
                             "json", "--idle-s", "0.5"], env=env)
    time.sleep(3)
    assert idle.poll() is None  # six idle times, kept by the cold job
    cold.kill()
    cold.wait(10)
    assert idle.wait(30) == 0 and not list(tmp_path.glob("w.sock.cold-*"))  # then it ends, and clears the mark


def test_a_server_with_a_thread_serves_nothing(tmp_path):
    """A thread at the fork could hold a lock the child then waits on for ever (an OpenMP team
    that ran a computation): such a server refuses, and its jobs start cold."""
    (tmp_path / "threaded.py").write_text("import threading, time\n"
                                          "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    out = subprocess.run([sys.executable, "-P", "-m", "harness.run.warm", "--socket", str(tmp_path / "t.sock"),
                          "--preload", "threaded"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "not serving:" in out.stdout and not (tmp_path / "t.sock").exists()


@pytest.mark.integration  # three tiny pre-training jobs through the launcher
def test_a_warm_job_computes_what_a_cold_one_does_to_the_bit_and_logs_the_same(tmp_path, monkeypatch):
    """The same run, forked from a warm server (job and forwarder) and started cold: the same
    encoder to the last bit, the same result and the same MLflow metrics."""
    import json
    import shlex

    import mlflow
    import torch

    from harness.workflow.jobs import job_args, write_job_files
    from harness.workflow.plan import Plan

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    runs = {}
    for warm in (True, False):
        work = tmp_path / f"warm-{warm}"
        work.mkdir()
        monkeypatch.chdir(work)
        plan = Plan("tiny", {"cpus_per_task": 1, "warm": warm}, {}, only=["table3"])
        write_job_files(plan)
        sigs = {r.cells[0].setting: s for s, r in plan.runs.items() if r.stage == "pretrain"}

        def launch(setting):
            sig = sigs[setting]
            args = [*shlex.split(plan.launch_args(sig, "pretrain")), *shlex.split(job_args(plan, sig, "pretrain"))]
            out = subprocess.run([sys.executable, "-m", "harness.run.launch", *args], cwd=work, env=env,
                                 capture_output=True, text=True, timeout=300)
            assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
            return work / "results" / "runs" / sig

        if warm:
            launch("square M=4")  # the workflow's first job: cold
            launch("square M=1")  # the second: cold, and it starts the server
            deadline = time.time() + 120
            while not any("serving" in log.read_text() for log in (work / "results" / ".warm").glob("*.log")):
                assert time.time() < deadline
                time.sleep(0.2)
        runs[warm] = launch("square M=2")
    log = next((tmp_path / "warm-True" / "results" / ".warm").glob("*.log")).read_text()
    assert f"submitit.core._submit {runs[True]}/submitit/" in log and f"forwarder --run {runs[True]} " in log
    assert not (tmp_path / "warm-False" / "results" / ".warm").exists()
    warm, cold = (torch.load(runs[w] / "encoder.pt") for w in (True, False))
    assert warm.keys() == cold.keys() and all(torch.equal(warm[k], cold[k]) for k in warm)
    results = [json.loads((runs[w] / "pretrain.json").read_text()) for w in (True, False)]
    assert results[0]["metrics"] == results[1]["metrics"]
    histories = []
    for w in (True, False):
        client = mlflow.MlflowClient(f"sqlite:///{tmp_path / f'warm-{w}' / 'results' / 'mlflow.db'}")
        run_id = (runs[w] / "mlflow_run_id").read_text().strip()
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and any(k.startswith("system/") for k in run.data.metrics)
        histories.append({k: [(m.step, m.value) for m in client.get_metric_history(run_id, k)]
                          for k in run.data.metrics if k.startswith("pretrain/")})
    assert histories[0] == histories[1] and histories[0]


def test_a_forked_forwarder_follows_its_stage_that_is_not_its_parent():
    """A forwarder forked from a warm server is its job's sibling: it knows the job is gone by
    its pid and start time (a zombie counts as gone), not by its parent pid."""
    from harness.run.forwarder import StageProcess

    stage = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    seen = StageProcess(stage.pid)
    assert not seen.parent and seen.alive()
    stage.kill()
    deadline = time.time() + 10
    while seen.alive():  # a zombie until reaped below: gone already
        assert time.time() < deadline
        time.sleep(0.05)
    stage.wait()
    assert not seen.alive()
    assert StageProcess(os.getppid()).parent and StageProcess(os.getppid()).alive()


def test_local_jobs_get_a_warm_server_slurm_jobs_and_warm_false_do_not(tmp_path, monkeypatch):
    from harness.core.layout import Results
    from harness.run.executor import ExecutorConfig, make_executor
    from harness.run.launch import warm_server
    from harness.run.snapshot import take

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    (tmp_path / "run").mkdir(mode=0o700)
    results = Results(tmp_path / "results")
    code = take(results.code)
    assert warm_server(ExecutorConfig(kind="slurm"), code, results) is None
    assert warm_server(ExecutorConfig(warm=False), code, results) is None
    server = warm_server(ExecutorConfig(), code, results)
    assert server.socket.parent == tmp_path / "run" / f"randsac-warm-{os.getuid()}" and server.socket.suffix == ".sock"
    assert server.log.parent == (tmp_path / "results" / ".warm").resolve()
    assert server == warm_server(ExecutorConfig(), code, results)  # every launcher of the workflow: the same one
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")  # what torch's OpenMP reads at import: another server
    assert warm_server(ExecutorConfig(), code, results) != server
    python = make_executor(ExecutorConfig(), tmp_path / "sub", code, server)._executor.python
    assert python.startswith(code.python()) and python.endswith(server.client())
    os.chmod(tmp_path / "run" / f"randsac-warm-{os.getuid()}", 0o755)  # not private: no warm start
    assert warm_server(ExecutorConfig(), code, results) is None
