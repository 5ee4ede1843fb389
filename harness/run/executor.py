"""Where stage jobs run: the executor's settings (a profile's `executor` block), the submitit
executor they make, and the check that Slurm can serve them, before anything is submitted
(planning) and while a job waits (the launcher, harness.run.pending)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import submitit
from pydantic import BaseModel, ConfigDict, Field

from harness.run import slurm
from harness.stages import turns

if TYPE_CHECKING:
    from harness.run.snapshot import Snapshot
    from harness.run.warm import WarmServer


class ExecutorError(ValueError):
    """A request Slurm can never serve, in one line."""


def job_environment(executor: "ExecutorConfig", env: dict[str, str]) -> dict[str, str]:
    """What a stage job adds to `env` (the launcher's, which submitit's local job inherits and
    sbatch exports): OpenMP's wait, when the user has not set it; no CPU turns, when turned off."""
    added = {} if executor.cpu_turns else {turns.ENV: "0"}
    if executor.gomp_spincount is not None and not {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & env.keys():
        added["GOMP_SPINCOUNT"] = str(executor.gomp_spincount)
    return added


class ExecutorConfig(BaseModel):
    """Where stage jobs run: the profile's `executor` block (profiles/*/harness.yaml)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["local", "slurm"] = "local"
    partition: str | None = None
    gpus_per_node: int = Field(0, ge=0)
    cpus_per_task: int = Field(2, gt=0)  # also the torch threads of each task
    # a CPU job computes each batch in a turn of its cores, shared with the harness's other jobs
    # on the same cores, by lock files (harness.stages.turns): two 2-thread jobs on 2 cores keep
    # about two to three times as much of their speed alone as side by side, and a job alone
    # loses nothing (measured in docs/findings.md, "CPU turns"); false: jobs compute side by side
    cpu_turns: bool = True
    # GNU OpenMP's spins at a barrier before a waiting thread sleeps, put in every job's
    # environment unless OMP_WAIT_POLICY or GOMP_SPINCOUNT is set there already (the user's
    # word wins); None: OpenMP's own (300,000), which costs a multi-thread job nothing alone but
    # most of its speed beside a job that does not take turns on shared cores; 1000 keeps three
    # fifths there and costs a fifth alone (docs/findings.md, "Two torch jobs on one CPU")
    gomp_spincount: int | None = Field(None, ge=0)
    # local jobs (and their tracking forwarders) start as forks of a warm Python that has
    # imported torch, MLflow and the harness (harness.run.warm): a tiny job's launcher ends in
    # 3.4 s instead of 9.2 (docs/findings.md); false: each job a fresh Python
    warm: bool = True
    tasks_per_node: int = Field(1, gt=0)  # data-parallel processes per node (one per GPU)
    nodes: int = Field(1, gt=0)
    mem_gb: float | None = Field(None, gt=0)
    timeout_min: int = Field(24 * 60, gt=0)  # per attempt; Slurm requeues on timeout
    max_num_timeout: int = Field(10, ge=0)  # requeues after the time limit's signal
    signal_delay_s: int = Field(90, gt=0)  # the time-limit signal comes this long before the limit
    additional: dict[str, Any] = {}  # other sbatch options (account, qos, constraint, ...)
    # how often the workflow asks Slurm how its jobs stand: one squeue for all of them, shared by
    # every waiting launcher (harness.run.watcher), whatever the number of runs
    poll_s: float = Field(30.0, gt=0)
    # hours a run may wait for anything but its turn (a drained node, a reservation, a limit)
    # before the launcher cancels it; None: for ever (harness.run.pending)
    patience_h: float | None = Field(None, gt=0)


def make_executor(executor: ExecutorConfig, folder: Path, code: "Snapshot | None" = None,
                  warm: "WarmServer | None" = None) -> submitit.Executor:
    """submitit executor; the cluster is always explicit (AutoExecutor would pick Slurm whenever
    Slurm's tools are installed). With `code`, its jobs import the harness from that snapshot
    (the Python command is in the sbatch script, so a requeued job imports it again). With
    `warm` (a local job), the job hands itself to that warm server (harness.run.warm), or
    starts cold when none answers."""
    python = {"python": code.python()} if code is not None else {}
    if warm is not None and code is not None and executor.kind == "local":
        python = {"python": f"{code.python()} {warm.client()}"}
    if executor.kind == "local":
        if executor.nodes > 1:
            raise ValueError("the local executor runs on one node; nodes > 1 needs Slurm")
        ex = submitit.AutoExecutor(folder=folder, cluster="local", **{f"local_{k}": v for k, v in python.items()})
        ex.update_parameters(timeout_min=executor.timeout_min, tasks_per_node=executor.tasks_per_node)
        return ex
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=executor.max_num_timeout,
                               **{f"slurm_{k}": v for k, v in python.items()})
    params: dict[str, Any] = {"timeout_min": executor.timeout_min, "gpus_per_node": executor.gpus_per_node,
                              "slurm_signal_delay_s": executor.signal_delay_s,
                              "cpus_per_task": executor.cpus_per_task, "tasks_per_node": executor.tasks_per_node,
                              "nodes": executor.nodes}
    if executor.mem_gb:
        params["mem_gb"] = executor.mem_gb
    if executor.partition:
        params["slurm_partition"] = executor.partition
    if executor.additional:
        params["slurm_additional_parameters"] = dict(executor.additional)
    ex.update_parameters(**params)
    return ex


# sbatch(1), --signal: "the signal may be sent up to 60 seconds earlier than specified" (slurmctld
# checks time limits on a 30 s period)
SIGNAL_EARLY_S = 60


def check_slurm(executor: ExecutorConfig) -> None:
    """Refuse a Slurm request no node of its partition can serve, before anything is submitted:
    the partition, CPUs, memory and GPUs per node, the number of nodes, the time limit, and a
    time-limit signal that could come before the job has started."""
    if executor.kind != "slurm":
        return
    if executor.timeout_min * 60 <= executor.signal_delay_s + SIGNAL_EARLY_S:
        raise ExecutorError(f"executor slurm: timeout_min={executor.timeout_min} with signal_delay_s="
                          f"{executor.signal_delay_s}: Slurm may send the time-limit signal up to {SIGNAL_EARLY_S} s "
                          f"earlier than asked, so it could reach a job while it starts, before it can checkpoint, "
                          f"and kill it; raise timeout_min above (signal_delay_s + {SIGNAL_EARLY_S} s) or lower "
                          f"signal_delay_s")
    try:
        every = slurm.nodes()
    except slurm.SlurmError as err:
        raise ExecutorError(f"executor slurm: {err}") from None
    problem = unservable(executor, every)
    if problem:
        raise ExecutorError(problem)


def unservable(executor: ExecutorConfig, every: list[slurm.Node]) -> str | None:
    """Why no node of the executor's partition, in whatever state, can ever hold its request
    (configured CPUs, memory, GPUs, nodes, time limit), or None when some can."""
    known = sorted({n.partition for n in every})
    partition = executor.partition or next((n.partition for n in every if n.default), None)
    if partition not in known:
        return (f"executor slurm: partition {partition!r} is unknown to Slurm; known: {', '.join(known)} "
                f"(set executor.partition in the profile)")
    members = [n for n in every if n.partition == partition]
    if executor.gpus_per_node and not any(n.gpus for n in members):
        return (f"executor slurm: gpus_per_node={executor.gpus_per_node} but partition {partition!r} has no "
                f"GPUs; set gpus_per_node: 0")
    cpus = executor.cpus_per_task * executor.tasks_per_node
    mem = executor.mem_gb or 0.0
    fits = [n for n in members if n.cpus >= cpus and n.mem_gb >= mem and n.gpus >= executor.gpus_per_node]
    if len(fits) < executor.nodes:
        largest = max(members, key=lambda n: (n.gpus, n.cpus, n.mem_gb))
        return (
            f"executor slurm: partition {partition!r} has {len(fits)} node(s) with {cpus} CPUs "
            f"({executor.tasks_per_node} task(s) x {executor.cpus_per_task}), {mem:g} GB and "
            f"{executor.gpus_per_node} GPUs, {executor.nodes} asked for; its largest node offers {largest.offers()}. "
            f"Lower executor cpus_per_task / mem_gb / gpus_per_node (profiles/slurm/harness.yaml or "
            f"--config 'executor={{...}}')")
    limit = members[0].time_limit_min
    if limit is not None and executor.timeout_min > limit:
        return (f"executor slurm: timeout_min={executor.timeout_min} is beyond the time limit of partition "
                f"{partition!r} ({limit:g} min); lower executor.timeout_min (jobs requeue when it ends)")
    return None
