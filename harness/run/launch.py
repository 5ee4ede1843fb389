"""Run one stage as a submitit job (local executor or Slurm) and wait for it.

Snakemake calls this once per stage run:
    python -m harness.run.launch --stage pretrain --results results --signature <sig> [--parent <sig>] \
        --job results/.launch/<stage>-<sig>-<hash>.json
(the job file: the run's resolved config, the executor, the tracking store, the MLflow tags). It writes the run's resolved config into results/runs/<signature>/, submits a `StageJob` with a
fresh submitit folder for this attempt (a reused Slurm job id can never return an old result),
and waits. The job checkpoints every epoch; on a Slurm timeout or preemption submitit requeues
it (Checkpointable) and it resumes from the last checkpoint. The job imports the harness from a
snapshot of the code it was submitted with (harness.run.snapshot), so an edit of the source
reaches only jobs submitted after it.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import submitit

from harness.run import pending, slurm, snapshot
from harness.run.executor import ExecutorConfig, job_environment, make_executor
from harness.run.watcher import UNLISTED, Watcher
from harness.core.config import RunConfig
from harness.core.files import keep_run_folders_private, run_folder_umask, user_umask
from harness.core.layout import Results, RunFolder
from harness.core.stages import STAGES
from harness.science import methods

if TYPE_CHECKING:
    from harness.run.warm import WarmServer


class StageJob(submitit.helpers.Checkpointable):
    """The callable submitit runs; calling it again (after a requeue) resumes the stage.

    SIGTERM (a preemption, `scontrol requeue`, `scancel --signal=TERM`) and submitit's
    time-limit signal ask the stage to stop after its current step: it checkpoints that step
    (data position and random state included), then submitit requeues the job, which continues
    from that step. A local job stops the same way and is not requeued."""

    def __init__(self, stage: str, config: dict, results: str, signature: str, parent: str | None,
                 tags: dict[str, str], tracking_uri: str, threads: int | None = None, code: str | None = None):
        self.stage, self.config, self.results, self.signature = stage, config, results, signature
        self.parent, self.tags, self.tracking_uri, self.threads = parent, tags, tracking_uri, threads
        self.code = code  # the hash of the code snapshot the job runs (results/code/<hash>)

    def __call__(self) -> dict[str, float]:
        env = submitit.JobEnvironment()
        requeue = signal.getsignal(env._usr_sig())  # submitit's: checkpoint the callable, requeue, exit
        asked: list[int] = []
        stop_signals = {signal.SIGTERM, env._usr_sig()} | ({signal.SIGINT} if env.cluster == "local" else set())
        for signum in stop_signals:  # SIGINT: Ctrl-C on a local workflow; set before the slow imports
            signal.signal(signum, lambda signum, _frame: asked.append(signum))
        from harness.run.tracking import Forwarder, Store

        results = Results(Path(self.results))
        tags = self.tags
        if self.code is not None:  # the code it was submitted with, or one line and no training
            code = snapshot.check_job(self.code, results.run(self.signature), results)
            print(f"[harness] code: snapshot {code.hash} ({code.package})", flush=True)
            tags = {**tags, "code_snapshot": code.hash}
        store = Store(self.tracking_uri, results)
        # rank 0 logs: its forwarder opens the store while this process imports torch (side by side)
        forwarder = Forwarder.start(store, results.run(self.signature), self.stage) if env.global_rank == 0 else None

        from harness.core.errors import StageStopped
        from harness.run.runner import run_stage
        from harness.stages import distributed, engine

        engine.set_threads(self.threads)
        dist = distributed.setup()
        parent = results.run(self.parent) if self.parent else None
        try:
            metrics = run_stage(self.stage, methods.validate(self.config), results.run(self.signature),
                                store=store, tags=tags, parent=parent, dist=dist, stop=lambda: bool(asked),
                                forwarder=forwarder)
        except StageStopped as stopped:
            print(f"[harness] {stopped}", flush=True)
            if env.cluster == "slurm" and slurm.final_state(os.environ.get("SLURM_JOB_ID", "")).startswith("CANCELLED"):
                print("[harness] the job was cancelled (scancel): not requeued", flush=True)  # the user's word
            elif env.cluster == "slurm" and callable(requeue):
                try:
                    requeue(asked[0], None)  # checkpoints this callable, requeues the job, exits
                except subprocess.CalledProcessError:  # `scontrol requeue` is already under way
                    print("[harness] Slurm is requeueing this job already", flush=True)
                    sys.exit(-1)  # no result: the job starts again and resumes
            raise
        distributed.teardown(dist)
        return metrics


class Stopped(Exception):
    """The launcher was asked to stop (SIGTERM, Ctrl-C): raised from the signal handler so that
    the job is stopped outside it, where polling the job's process cannot find the process
    lock held by the interrupted frame (which made the wait spin until its grace ran out)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def stop_local_job(job: submitit.Job, grace_s: float = 300.0, resend_s: float = 5.0) -> None:
    """Stop a local job the way Slurm stops one: SIGTERM to its controller (the job id is its
    pid), which forwards it to the tasks; they checkpoint their current step and exit. Waits for
    that (reaping the process), and cancels the job if it outlives `grace_s`. SIGTERM is sent
    again every `resend_s`: a task still starting up has submitit's handler, which ignores it."""
    deadline, sent = time.time() + grace_s, 0.0
    while not job.done() and time.time() < deadline:
        if time.time() - sent >= resend_s:
            try:
                os.kill(int(job.job_id), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                return
            sent = time.time()
        time.sleep(0.2)
    if not job.done():
        job.cancel(check=False)


def submit(stage: str, cfg: RunConfig, results: Results, executor: ExecutorConfig, *, tracking_uri: str,
           parent: str | None = None, tags: dict[str, str] | None = None):
    """Write the run's config into its folder and submit its StageJob, which runs a snapshot of
    today's code, or, for a run with a checkpoint, of the code that wrote it (raises
    snapshot.CodeMismatch when that is gone); returns the submitit job."""
    results = Results(results.root.resolve())
    run = results.run(methods.signature(cfg, stage))
    code, today = snapshot.for_run(run, stage, results)
    if code.hash != today:
        print(f"[harness] {stage} {run.signature}: resumes with the code its checkpoint was written by (snapshot "
              f"{code.hash}; today's is {today}); once done, it is stale if the edit touched it, and `--config "
              f"rerun=stale` redoes it", flush=True)
    run.write_config(methods.stage_config(cfg, stage), cfg.model_dump(mode="json"))
    attempt = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    os.environ.update(job_environment(executor, dict(os.environ)))  # this launcher submits this one job
    ex = make_executor(executor, run.submitit / attempt, code, warm_server(executor, code, results))
    ex.update_parameters(name=f"{stage}-{run.signature}")
    job_tags = {"signature": run.signature, "stage": stage, **(tags or {})}
    if parent:
        job_tags["parent"] = parent
    job = StageJob(stage, cfg.model_dump(mode="json"), str(results.root), run.signature, parent, job_tags,
                   tracking_uri, executor.cpus_per_task, code=code.hash)
    return ex.submit(job)


def warm_server(executor: ExecutorConfig, code: snapshot.Snapshot, results: Results) -> "WarmServer | None":
    """The warm server a local job hands itself to (harness.run.warm.WarmServer); None: the job
    starts cold (Slurm, or `executor.warm: false`)."""
    if executor.kind != "local" or not executor.warm:
        return None
    from harness.run.warm import WarmServer

    try:
        return WarmServer.of(results, code.root, dict(os.environ))
    except OSError as err:  # no private folder for its socket: cold, and say why
        print(f"[harness] warm starts off: {err}", file=sys.stderr, flush=True)
        return None


REATTACH_STALE_S = 10.0


def live_slurm_job(run: RunFolder, watcher: Watcher):
    """The Slurm job a previous launcher submitted for this run and that still lives, if any,
    with the time it was known to exist (what a snapshot must be newer than to speak of it).

    When Snakemake (or the login node) dies, Slurm jobs go on; asking for the run again waits
    for that job instead of starting a second one on the same run folder. The queue is asked
    (the watcher's snapshot, taken after job.json was written), not accounting: a job submitted
    a moment ago may not be in sacct yet.
    """
    if not run.job.exists():
        return None
    info = json.loads(run.job.read_text())
    if info.get("cluster") != "slurm":
        return None
    job = submitit.SlurmJob(folder=info["folder"], job_id=info["job_id"])
    if all(p.exists() for p in result_files(job)):  # it ended, with its result or its error
        return None
    # a snapshot from before the job was submitted cannot speak of it, and one from before this
    # launcher started may show it live after it ended: a fresh one, shared by the launchers
    # that start within REATTACH_STALE_S of each other (a restarted workflow starts them all)
    since = run.job.stat().st_mtime
    state = watcher.snapshot(fresh_after=max(since, time.time() - REATTACH_STALE_S)).state(str(job.job_id), since)
    if state is None or state[0] not in slurm.LIVE:
        return None
    return job, since


class Unservable(RuntimeError):
    """The job waits for something Slurm will never give it."""


class EndedWithoutResult(RuntimeError):
    """Slurm says the job ended and it left no result (cancelled, killed, out of memory...)."""


def result_files(job) -> list[Path]:
    return [sub.paths.result_pickle for sub in job._sub_jobs] or [job.paths.result_pickle]


def slurm_results(job, wait_s: float = 15.0) -> list:
    """The job's results once it ended, read from its result files, never asking Slurm (submitit's
    job.results() asks sacct whenever a file is missing). A file the job wrote on another node
    may show up late on a network file system: up to `wait_s`."""
    deadline = time.time() + wait_s
    while not all(p.exists() for p in result_files(job)):
        if time.time() > deadline:
            raise EndedWithoutResult(f"Slurm job {job.job_id} ended without a result")
        time.sleep(1)
    return job.results()  # every file exists: submitit reads them and asks Slurm nothing


def error_line(err: Exception) -> str:
    """The job's own last error line: for submitit's FailedJobError, the last line of the
    traceback it carries (`NonFiniteLoss: ...`), not the paths of the logs it ends with."""
    text = str(err).strip()
    if isinstance(err, submitit.core.utils.FailedJobError) and text.count("-" * 22) >= 2:
        trace = text.split("-" * 22)[1].strip().splitlines()
        if trace:
            return trace[-1].strip()
    return f"{type(err).__name__}: {text.splitlines()[-1]}" if text else type(err).__name__


LOCAL_POLL_S = 0.2  # a local job's end is its process's exit, free to ask: the workflow goes on at once


def waiting(job_id: str, name: str, state: tuple[str, str], executor: ExecutorConfig | None,
            blocked: tuple[float, str] | None) -> tuple[float, str] | None:
    """Say, in one line, the Slurm state the job has changed to; for a pending job, why it waits
    and whether that can end. Cancel it (Unservable) when it cannot. Returns since when and for
    what it waits for more than its turn (None: its turn, or not waiting)."""
    prefix = f"[harness] {name}: Slurm job {job_id}"
    if state[0] not in slurm.WAITING:
        print(f"{prefix} {state[0]}", flush=True)
        return None
    reason = pending.classify(state[1])
    if reason.is_turn:
        print(f"{prefix} {state[0]}" + (f" ({reason.text})" if reason.code != "None" else ""), flush=True)
        return None
    never = pending.refusal(reason, executor)
    if never:
        slurm.cancel(job_id)
        raise Unservable(f"Slurm job {job_id} can never start: {never}; cancelled")
    patience = (f"; it gives up after {executor.patience_h:g} h (executor.patience_h)"
                if executor is not None and executor.patience_h is not None else "")
    print(f"{prefix} waits: {reason.text} ({reason.meaning}); it starts once that clears{patience}", flush=True)
    return (blocked[0] if blocked else time.time(), reason.text)  # the clock runs while it is blocked


def follow(job, name: str, cluster: str, watcher: Watcher | None = None, since: float = 0.0,
           echo_s: float = 2.0, executor: ExecutorConfig | None = None) -> None:
    """Until the job ends, echo what its first task prints (one progress line per epoch) to
    this launcher's output, which Snakemake shows: local and Slurm jobs alike. A Slurm job's
    state and reason (from the workflow's shared `watcher`, in a snapshot taken after `since`,
    its submission) are printed when they change, a reason with what it means
    (harness.run.pending): a drained node, a reservation, a down partition or a limit is a wait;
    one that can never clear for this job (an invalid account, a request above every node of
    the partition given in `executor`) is cancelled and the launcher fails with one line, and
    so is a wait for anything but its turn longer than `executor.patience_h`. A Slurm job ends
    when its result files are all written, or when two snapshots in a row say it is no longer
    live: a requeue passes through states that look final (PREEMPTED, a node failure) before
    the job waits again under the same id."""
    log, offset, last, ended_in = Path(job.paths.stdout), 0, None, None
    blocked: tuple[float, str] | None = None  # since when, and for what, it waits for more than its turn

    def echo() -> int:
        if not log.exists():
            return offset
        with open(log, "rb") as f:
            f.seek(offset)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1  # whole lines only
        for line in chunk[:end].decode(errors="replace").splitlines():
            if not line.startswith("submitit INFO"):  # the job's own lines, not submitit's
                print(f"  {line}", flush=True)
        return offset + end

    while True:
        offset = echo()
        if cluster != "slurm":
            if job.done():  # the local job's process: no scheduler to spare
                break
        elif all(p.exists() for p in result_files(job)):
            break
        else:
            snap = watcher.snapshot()
            state = snap.state(job.job_id, since)
            if state is not None and state != last and state != UNLISTED:
                last = state
                blocked = waiting(job.job_id, name, state, executor, blocked)
            if state is not None and state[0] not in slurm.WAITING:
                blocked = None
            if blocked and executor is not None and executor.patience_h is not None \
                    and time.time() - blocked[0] > executor.patience_h * 3600:
                slurm.cancel(job.job_id)
                raise Unservable(f"Slurm job {job.job_id} waited {(time.time() - blocked[0]) / 3600:.2g} h for "
                                 f"{blocked[1]}, longer than executor.patience_h={executor.patience_h:g}; cancelled "
                                 f"(asking again submits it anew)")
            if state is not None and state[0] not in slurm.LIVE:
                if ended_in is not None and snap.taken > ended_in:
                    break
                ended_in = ended_in or snap.taken
            elif state is not None:
                ended_in = None
        time.sleep(echo_s if cluster == "slurm" else LOCAL_POLL_S)
    echo()


def mark_failed(store_uri: str, results: Results, run: RunFolder, reason: str, killed: bool) -> None:
    """A job that ended without its result leaves its MLflow run FAILED (or KILLED), with why."""
    if not run.mlflow_run_id.exists():
        return
    from harness.run.tracking import Store, retry

    store = Store(store_uri, results)
    run_id = run.mlflow_run_id.read_text().strip()
    try:
        if (why := store.unreachable()) is not None:
            raise ConnectionError(why)
        client = store.client()
        retry(lambda: client.set_tag(run_id, "failure", reason))
        if retry(lambda: client.get_run(run_id)).info.status == "RUNNING":
            retry(lambda: client.set_terminated(run_id, status="KILLED" if killed else "FAILED"))
    except Exception as err:  # noqa: BLE001 -- the store's outage must not hide the job's own failure
        print(f"[harness] MLflow run {run_id} not marked failed: the store does not answer "
              f"({str(err).splitlines()[0][:200]})", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage", required=True, choices=STAGES)
    ap.add_argument("--results", required=True, type=Path, help="the results folder")
    ap.add_argument("--signature", default=None, help="the run's signature; the config must have it")
    ap.add_argument("--parent", default=None, help="signature of the pre-training run (evaluation stages)")
    ap.add_argument("--job", required=True, type=Path,
                    help="a JSON file with the job's config, executor, tracking_uri and tags (the plan writes one "
                         "per run under results/.launch/, which keeps Snakemake's command line short)")
    args = ap.parse_args(argv)
    keep_run_folders_private()  # this launcher, its job and the job's forwarder
    given = json.loads(args.job.read_text())
    cfg = methods.validate(given["config"])
    executor = ExecutorConfig.model_validate(given.get("executor", {}))
    store_uri, results = given["tracking_uri"], Results(args.results)
    run = results.run(methods.signature(cfg, args.stage))
    if args.signature is not None and args.signature != run.signature:
        print(f"[harness] {args.stage}: the config given has signature {run.signature}, not {args.signature}",
              file=sys.stderr)
        return 2
    if run.path.exists() and run.path.stat().st_uid == os.getuid():  # Snakemake made it, with the user's umask
        os.chmod(run.path, 0o777 & ~run_folder_umask(user_umask()))
    done = run.result(args.stage)
    if done.exists():  # finished meanwhile (e.g. by a job that outlived an earlier launcher)
        print(f"[harness] {args.stage} {run.signature} already done: {json.loads(done.read_text())['metrics']}")
        return 0
    watcher = Watcher(results.slurm_queue, executor.poll_s) if executor.kind == "slurm" else None
    try:
        job, since = attach_or_submit(args.stage, cfg, run, results, executor, watcher, store_uri, args.parent,
                                      given.get("tags", {}))
    except snapshot.CodeMismatch as err:  # a checkpoint whose code is gone: the user decides
        print(f"[harness] {args.stage} {run.signature} not resumed: {err}", file=sys.stderr, flush=True)
        return 1
    return wait(job, f"{args.stage} {run.signature}", executor, watcher, since, store_uri, results, run)


def attach_or_submit(stage: str, cfg: RunConfig, run: RunFolder, results: Results, executor: ExecutorConfig,
                     watcher: Watcher | None, store_uri: str, parent: str | None, tags: dict[str, str]):
    """The run's live Slurm job, re-attached (a launcher that died left it running), or a new
    job; an earlier attempt that ended without its result is marked failed in MLflow first.
    (job, when it was seen: a queue snapshot taken from then on lists it)."""
    live = live_slurm_job(run, watcher) if watcher else None
    if live is not None:
        print(f"[harness] {stage} {run.signature}: job {live[0].job_id} still runs; waiting for it", flush=True)
        return live
    if run.job.exists():
        earlier = json.loads(run.job.read_text())
        ended = slurm.final_state(str(earlier["job_id"])) if earlier["cluster"] == "slurm" else "stopped"
        mark_failed(store_uri, results, run, f"{earlier['cluster']} job {earlier['job_id']} {ended}",
                    killed=not ended.startswith(("FAILED", "OUT_OF_MEMORY")))
    job = submit(stage, cfg, results, executor, tracking_uri=store_uri, parent=parent, tags=tags)
    since = time.time()  # sbatch has returned
    run.job.write_text(json.dumps({"cluster": executor.kind, "job_id": job.job_id, "folder": str(job.paths.folder)}))
    print(f"[harness] {stage} {run.signature}: submitted job {job.job_id} (logs: {job.paths.stdout})", flush=True)
    return job, since


def wait(job, name: str, executor: ExecutorConfig, watcher: Watcher | None, since: float, store_uri: str,
         results: Results, run: RunFolder) -> int:
    """Follow the job to its end: its exit status for Snakemake, and one line when it failed (its
    MLflow run then says why). A stopped workflow stops its local jobs; Slurm jobs go on."""
    if executor.kind == "local":
        def stop(signum, _frame):
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one stop; the job gets its own SIGTERMs
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            raise Stopped(signum)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
    try:
        follow(job, name, executor.kind, watcher, since, executor=executor)
        metrics = (slurm_results(job) if watcher else job.results())[0]  # rank 0's (one result per task)
    except Stopped as stopped:
        stop_local_job(job)
        print(f"[harness] {name}: stopped on request; asking again resumes it", file=sys.stderr, flush=True)
        return 128 + stopped.signum
    except Exception as err:  # the job's own traceback is in its submitit logs
        ended = slurm.final_state(job.job_id) if executor.kind == "slurm" else "FAILED"
        settled = executor.kind == "slurm" and ended not in slurm.LIVE | {"UNKNOWN"}
        reason = (f"Slurm job {job.job_id} {ended}" if settled else error_line(err))[:500]
        if isinstance(err, Unservable):
            reason = str(err)
        mark_failed(store_uri, results, run, reason,
                    killed=ended.startswith(("CANCELLED", "PREEMPTED", "TIMEOUT", "NODE_FAIL")))
        print(f"[harness] {name} FAILED: {reason}; its MLflow run says so, and asking again resumes it from its "
              f"last checkpoint\n[harness] logs: {job.paths.stdout} {job.paths.stderr}", file=sys.stderr, flush=True)
        return 1
    print(f"[harness] {name} done: {metrics}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
