"""Warm starts for local stage jobs: each job a fork of a Python that has imported its modules.

A stage job on the local executor is a fresh Python that imports torch, torch._dynamo (every
torch.optim optimizer imports it) and the harness before its first step: about 3 of the 4.4 s
to a tiny pre-training's first step on a 2-core CPU (docs/findings.md). A workflow runs dozens
of such jobs with the same code, so they share, per results folder, code snapshot and
environment, a *warm server*: a Python started like the job's (the snapshot first on its path,
the job's environment) that imports what every stage job imports, then forks one child per job. submitit's local controller runs `harness/run/warm_client.py` as the
job's task; the client hands the job (its arguments, working directory, environment, standard
streams) to the server, whose child becomes the job: it takes the client's streams, directory
and environment and runs `python -u -m submitit.core._submit <folder>` in-process. The client
forwards signals to it and exits with its status, so submitit, the launcher's stop and
Snakemake see the job as before. No server answering (not started yet, still importing, gone),
the client execs the job's own cold command, and starts a server in the background unless it is
the first job to ask (a lone job does not pay for one): a server only ever saves time, and only
a workflow's first jobs start cold.

The server never runs a torch computation, so no OpenMP team or CUDA context exists when it
forks (it checks that its imports started no thread but numpy's and Arrow's pools, which stop at
a fork and start again in the child, and serves nothing otherwise); each job sets its own torch
threads. A job's tracking forwarder (harness.run.forwarder: MLflow's import) is forked from the
same server: the job finds it in HARNESS_WARM. OpenMP reads its environment when torch is loaded, so the environment is part of
the server's key: a job with another OMP_*/GOMP_* setting gets another server. A server ends
once it has had no job for `idle_s`, neither a fork of its own nor a job of its workflow that
started cold (warm_client.mark_cold), or when its snapshot is removed.

    python -P -m harness.run.warm --socket <path> [--idle-s 60]   (a job's client starts it)
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import hashlib
import importlib
import json
import os
import runpy
import shlex
import select
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

# set by the submitting side, read at job time: not what a server's imports depend on (the
# client leaves them out of the server's environment too)
from harness.run.warm_client import PER_JOB

if TYPE_CHECKING:
    from harness.core.layout import Results

# What every stage job imports before its first step (the rest it imports itself)
PRELOAD = ("torch", "torch._dynamo", "torch.optim", "numpy", "PIL.Image", "submitit.core.submission",
           "harness.run.launch", "harness.run.runner", "harness.run.tracking", "harness.stages.engine",
           "harness.stages.data", "harness.stages.pretrain", "harness.stages.linprobe", "harness.stages.finetune",
           "harness.science.model", "harness.science.methods.randsac", "harness.science.methods.mae",
           "harness.science.methods.dino", "harness.science.methods.supervised",
           "harness.science.methods.random_init",
           # and what each job's tracking forwarder (harness.run.forwarder, forked from here too) imports;
           # not the modules a job runs (`-m`): runpy runs them anew
           "harness.run.spool", "mlflow", "mlflow.entities", "mlflow.tracking",
           "mlflow.store.tracking.sqlalchemy_store", "mlflow.system_metrics.system_metrics_monitor")
# Libraries whose thread pools stop at a fork and start again in the child (OpenBLAS's
# pthread_atfork handler; Arrow's fork handling): imported first, their threads are the baseline
FORK_SAFE_POOLS = ("numpy", "pyarrow")
CLIENT = Path(__file__).with_name("warm_client.py")
IDLE_S = 60.0


@dataclass(frozen=True)
class WarmServer:
    """The warm server of a results folder's jobs with one code snapshot and environment: its
    socket, and the log the server writes (results/.warm/<key>.log)."""

    socket: Path
    log: Path

    @classmethod
    def of(cls, results: "Results", snapshot_root: Path, env: dict[str, str],
           executable: str = sys.executable) -> "WarmServer":
        """The socket is a short path (a Unix socket's is at most 107 bytes) in a folder only
        this user can enter, named by a hash of what the server's imports depend on."""
        kept = sorted((k, v) for k, v in env.items() if not k.startswith(PER_JOB))
        key = hashlib.sha256(json.dumps([executable, str(results.root.resolve()), str(snapshot_root), kept])
                             .encode()).hexdigest()[:20]
        folder = Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp") / f"randsac-warm-{os.getuid()}"
        folder.mkdir(mode=0o700, exist_ok=True)
        mine = folder.stat()
        if mine.st_uid != os.getuid() or mine.st_mode & 0o077:  # another user's: never hand a job there
            raise PermissionError(f"{folder} is not this user's alone")
        return cls(folder / f"{key}.sock", results.warm.resolve() / f"{key}.log")

    def client(self) -> str:
        """What follows `python -P` in a job's command: the client, given the socket and log."""
        return shlex.join([str(CLIENT), str(self.socket), str(self.log)])


def native_threads() -> int:
    return len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else threading.active_count()


def unforkable(baseline: int) -> str | None:
    """Why forking this process for jobs would be unsafe: a thread that the imports started
    beyond `baseline` (the pools of FORK_SAFE_POOLS), such as an OpenMP team that ran a
    computation or a helper thread that could hold a lock at the fork; or CUDA initialised."""
    if threading.active_count() != 1 or native_threads() > baseline:
        return f"{native_threads()} threads after the imports ({baseline} expected)"
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return "CUDA is initialised"
    return None


def warm_command(module: str, *args: str) -> list[str]:
    """`python -P -m module args`, through this process's warm server when it was forked from
    one (a job starting its forwarder), else plain."""
    handed = shlex.split(os.environ.get("HARNESS_WARM", ""))
    if len(handed) != 2:
        return [sys.executable, "-P", "-m", module, *args]
    return [sys.executable, "-P", str(CLIENT), *handed, "-m", module, *args]


def read_request(conn: socket.socket) -> tuple[dict, list[int]]:
    head, fds, _, _ = socket.recv_fds(conn, 4, 3)
    if len(head) != 4 or len(fds) != 3:
        for fd in fds:
            os.close(fd)
        raise ValueError("a malformed request")
    size, data = struct.unpack("!I", head)[0], b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ValueError("a request cut short")
        data += chunk
    return json.loads(data), fds


def module_call(argv: list[str]) -> tuple[str, list[str], bool] | None:
    """(module, its arguments, unbuffered) of `[-u] -m module args...`; None for anything else."""
    unbuffered = argv[:1] == ["-u"]
    rest = argv[1:] if unbuffered else argv
    if len(rest) < 2 or rest[0] != "-m":
        return None
    return rest[1], rest[2:], unbuffered


def run_job(request: dict, fds: list[int], call: tuple[str, list[str], bool]) -> int:
    """In the forked child: become the client's job, run it, return its exit code."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.umask(request["umask"])  # the launcher's (harness.core.files: run folders private)
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ["HARNESS_JOB_STARTED"] = repr(request["started"])  # its start is the client's
    os.environ["HARNESS_WARM"] = shlex.join([str(request["socket"]), str(request["log"])])  # for its forwarder
    module, args, unbuffered = call
    if unbuffered:
        sys.stdout.reconfigure(write_through=True)
        sys.stderr.reconfigure(write_through=True)
    sys.argv = [module, *args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return 0
    except SystemExit as done:
        if done.code is None or isinstance(done.code, int):
            return done.code or 0
        print(done.code, file=sys.stderr)
        return 1
    except BaseException:  # noqa: BLE001 -- as an uncaught exception ends a Python: traceback, 1
        traceback.print_exc()
        return 1


def end_of_job(code: int) -> None:
    """End the child as a Python ends: its non-daemon threads joined, its atexit functions run,
    its streams flushed."""
    try:
        for thread in threading.enumerate():
            if thread is not threading.main_thread() and not thread.daemon:
                thread.join()
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


class Server:
    def __init__(self, sock: Path, idle_s: float, watch: Path | None, lock):
        self.path, self.idle_s, self.watch = sock, idle_s, watch
        self.lock = lock  # held while this server lives; its jobs close their copy
        self.jobs: dict[int, socket.socket] = {}  # forked job -> its client's connection

    def listen(self) -> None:
        if self.path.exists():
            self.path.unlink()  # a dead server's: we hold the lock
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.path))
        os.chmod(self.path, 0o600)
        self.inode = self.path.stat().st_ino  # at the end, removed only if still this server's
        self.listener.listen(64)
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select through the pipe
        self.wake_w = wake_w

    def serve(self) -> None:
        last = time.monotonic()
        while True:
            conns = list(self.jobs.values())
            ready, _, _ = select.select([self.listener, self.wake_r, *conns], [], [], 1.0)
            if self.wake_r in ready:
                os.read(self.wake_r, 4096)
            self.reap()
            for conn in ready:
                if conn in conns and conn.fileno() >= 0 and self.gone(conn):  # its client was killed
                    pid = next((p for p, c in self.jobs.items() if c is conn), None)
                    if pid is not None:
                        try:
                            os.kill(pid, signal.SIGKILL)  # as its cold process would have died with it
                        except ProcessLookupError:
                            pass
            if self.listener in ready:
                self.accept()
            if self.jobs or self.cold_jobs():
                last = time.monotonic()
            elif time.monotonic() - last > self.idle_s or (self.watch is not None and not self.watch.exists()):
                return

    def cold_jobs(self) -> bool:
        """Whether a job of this socket's workflow that started cold still runs (its client's
        mark, harness.run.warm_client.mark_cold, still locked); the marks of ended ones go."""
        for mark in self.path.parent.glob(f"{self.path.name}.cold-*"):
            try:
                fd = os.open(mark, os.O_RDONLY)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            finally:
                os.close(fd)
            mark.unlink(missing_ok=True)
        return False

    @staticmethod
    def gone(conn: socket.socket) -> bool:
        """A client sends nothing after its request: readable means it closed (or died)."""
        try:
            return not conn.recv(1)
        except OSError:
            return True

    def reap(self) -> None:
        while self.jobs:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.jobs.pop(pid, None)
            if conn is not None:
                try:
                    conn.sendall(f"exit {status}\n".encode())
                except OSError:
                    pass
                conn.close()

    def accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
            conn.settimeout(10)
            request, fds = read_request(conn)
        except (OSError, ValueError) as err:  # a client gone mid-request, a malformed one: it starts cold
            print(f"[warm] refused a request: {err}", flush=True)
            if "conn" in locals():
                conn.close()
            return
        call = module_call(request.get("argv", []))
        if call is None:  # not a module run: the client starts it cold
            for fd in fds:
                os.close(fd)
            with contextlib.suppress(OSError):
                conn.sendall(b"cold\n")
            conn.close()
            return
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                for sock in (self.listener, conn, *self.jobs.values()):  # detached: never closed twice
                    os.close(sock.detach())
                os.close(self.wake_r)
                os.close(self.wake_w)
                self.lock.close()  # the server's lock is the server's: a job outliving it must not hold it
                code = run_job(request, fds, call)
            finally:
                end_of_job(code)
        for fd in fds:
            os.close(fd)
        try:
            conn.settimeout(None)
            conn.sendall(f"pid {pid}\n".encode())
        except OSError:  # its client died meanwhile: so does the job
            os.kill(pid, signal.SIGKILL)
        self.jobs[pid] = conn  # reaped below, whatever became of its client
        print(f"[warm] job {pid}: {' '.join(request['argv'])}", flush=True)

    def close(self) -> None:
        try:
            if self.path.stat().st_ino == self.inode:
                self.path.unlink()
        except OSError:
            pass
        self.listener.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--socket", required=True, type=Path)
    ap.add_argument("--idle-s", type=float, default=IDLE_S, help="end after this long without a job")
    ap.add_argument("--watch", type=Path, default=None, help="end once this path is gone (the code snapshot)")
    ap.add_argument("--preload", nargs="*", default=list(PRELOAD), help="modules to import before serving")
    args = ap.parse_args(argv)
    lock = open(f"{args.socket}.lock", "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # another server has it
    started = time.perf_counter()
    for name in FORK_SAFE_POOLS:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    baseline = native_threads()
    for name in args.preload:
        importlib.import_module(name)
    problem = unforkable(baseline)
    if problem:
        print(f"[warm] not serving: {problem}; jobs start cold", flush=True)
        return 1
    server = Server(args.socket, args.idle_s, args.watch, lock)
    server.listen()
    print(f"[warm] {args.socket}: serving after {time.perf_counter() - started:.1f} s of imports (pid {os.getpid()})",
          flush=True)
    try:
        server.serve()
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
