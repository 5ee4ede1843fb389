"""The command a warm-started local job runs: hand the job to a warm server, or start it cold.

    python -P <snapshot>/harness/run/warm_client.py <socket> <log> -u -m submitit.core._submit <folder>

submitit's local controller runs this as the job's task (harness.run.warm explains why). It
sends the server its arguments, working directory, environment, umask, start time and standard
streams, and stays the job for submitit: it forwards every signal it gets to the forked job,
and exits as the job exits (its code, or its signal). When no server answers it starts one in
the background (its output to <log>), unless one is starting already or this is the first job
to ask, and becomes the cold job itself (`python -P <arguments>`, same interpreter and
environment), so a job never depends on one.

Run as a file, it starts in milliseconds: it imports the standard library and, of the harness
(on the job's PYTHONPATH, its code snapshot), only harness.core.processes, which imports
nothing else.
"""
import fcntl
import json
import os
import signal
import socket
import struct
import sys
import time

from harness.core import processes

PER_JOB = ("SUBMITIT_", "CUDA_VISIBLE_DEVICES", "SLURM_")  # set per job: not the server's (harness.run.warm)
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
             signal.SIGCONT)


def started() -> float:
    """This process's start, as time.time() (the kernel's record of it; now, elsewhere)."""
    return time.time() - (processes.age_s() or 0.0)


def hand_over(path: str, argv: list[str]):
    """Give the job to the server at `path`: the pid of its forked job and the connection's
    reader, which will carry its exit status. Raises OSError (or ValueError) when no server takes it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(path)
    umask = os.umask(0o077)
    os.umask(umask)
    request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "umask": umask,
                          "started": started(), "socket": path, "log": sys.argv[2]}).encode()
    socket.send_fds(sock, [struct.pack("!I", len(request))], [0, 1, 2])
    sock.sendall(request)
    reader = sock.makefile("rb")  # one reader: a short job's exit may come in the same read as its pid
    reply = reader.readline().split()
    if len(reply) != 2 or reply[0] != b"pid":
        raise ValueError(f"the server did not take the job: {reply!r}")
    sock.settimeout(None)
    return int(reply[1]), reader


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start_server(path: str, log: str) -> None:
    """Start the server of `path` in the background, unless one holds its lock (importing, or
    serving but too busy to answer), or unless this is the first job to ask (no `log` yet): a
    lone job does not pay for a server's imports (seconds of CPU beside it); the next one starts it."""
    import subprocess

    os.makedirs(os.path.dirname(log), exist_ok=True)
    try:
        os.close(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        return  # the first: its log marks that a workflow has begun here
    except FileExistsError:
        pass
    try:
        fd = os.open(f"{path}.lock", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    except OSError:  # held (BlockingIOError), or the folder is not ours to write: no server
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith(PER_JOB)}
    snapshot = env.get("PYTHONPATH", "").split(os.pathsep)[0]
    with open(log, "ab") as out:
        subprocess.Popen([sys.executable, "-P", "-m", "harness.run.warm", "--socket", path, "--watch", snapshot],
                         env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                         start_new_session=True)  # its own session: no stop of this job's group reaches it


def mark_cold(path: str) -> None:
    """Mark this job, about to start cold, for the server of `path` (started now or later): a
    shared lock on `<path>.cold-<pid>`, held through the exec until the job ends. A server does
    not end for want of jobs while a cold one of its workflow runs; without this, two long cold
    jobs side by side outlast its idle time and the job after them starts cold again."""
    mark = f"{path}.cold-{os.getpid()}"
    fd = os.open(f"{mark}.new", os.O_WRONLY | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_SH)
    os.rename(f"{mark}.new", mark)  # a server sees it locked or not at all
    os.set_inheritable(fd, True)


def die_of(signum: int) -> None:
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def main() -> None:
    path, log, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
    job: list[int] = []  # its pid, once the server has forked it
    early: list[int] = []  # signals that came before

    def forward(signum, _frame):
        if not job:
            early.append(signum)
            return
        try:
            os.kill(job[0], signum)
        except ProcessLookupError:
            pass

    for signum in FORWARDED:  # before the hand-over: a stop that comes during it is not lost
        signal.signal(signum, forward)
    try:
        pid, reader = hand_over(path, argv)
    except (OSError, ValueError):
        if early:  # stopped before it started: as the cold job would have been, by that signal
            die_of(early[0])
        try:
            mark_cold(path)
            start_server(path, log)
        except OSError:
            pass
        for signum in FORWARDED:
            signal.signal(signum, signal.SIG_DFL)
        os.execv(sys.executable, [sys.executable, "-P", *argv])  # cold: the job's own command
    job.append(pid)
    for signum in early:
        forward(signum, None)
    line = reader.readline().split()
    if len(line) == 2 and line[0] == b"exit":
        status = int(line[1])
    else:  # the server is gone; its job lives on (reparented): wait for it, its status unknown
        while alive(pid):
            time.sleep(0.2)
        status = 1 << 8
    if os.WIFSIGNALED(status):
        die_of(os.WTERMSIG(status))
    sys.exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


if __name__ == "__main__":
    main()
