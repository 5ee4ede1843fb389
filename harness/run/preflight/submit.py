"""Preflight, the launcher's side: the target's distinct stage runs (runs that compute alike
measured once) grouped into few jobs, submitted on the full runs' executor and followed, their
records gathered into the report (harness.run.preflight)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import submitit

from harness.core.config import RunConfig
from harness.core.stages import PRETRAIN
from harness.run import slurm
from harness.run.executor import ExecutorConfig, make_executor
from harness.run.launch import Unservable, error_line, follow, slurm_results
from harness.run.preflight.probe import PreflightJob, PreflightSettings, Probe
from harness.run.preflight.report import Report, describe_model, project, write
from harness.run.watcher import Watcher


def groups(probes: list[Probe], executor: ExecutorConfig) -> list[list[Probe]]:
    """The jobs: on Slurm one per distinct model and dataset (their queue waits overlap); on the
    local executor one for all."""
    if executor.kind == "local":
        return [probes] if probes else []
    by: dict[str, list[Probe]] = {}
    for p in probes:
        key = json.dumps([p.config["data"]["name"], p.config["data"]["image_size"], p.config["model"]], sort_keys=True)
        by.setdefault(key, []).append(p)
    return list(by.values())


def run_preflight(target: str, runs: dict, executor: ExecutorConfig, settings: PreflightSettings,
                  folder: Path, queue: Path) -> Report:
    """Preflight `runs` (signature -> StageRun) of `target` on `executor`; jobs' logs and records
    go under `folder` (results/preflight/<target>/<attempt>/). Slurm jobs are followed through
    the workflow's shared queue snapshot in `queue` (harness.run.watcher; results/.slurm), as the
    full runs' launchers follow theirs. Returns the report; writes nothing else."""
    alike: dict[str, list[str]] = {}  # runs that compute alike are measured once
    for sig, r in runs.items():
        alike.setdefault(computes_as(r.config, r.stage), []).append(sig)
    measured_as = {sig: sigs[0] for sigs in alike.values() for sig in sigs}
    probes = [Probe(runs[sigs[0]].stage, sigs[0], cell_label(runs[sigs[0]], target),
                    runs[sigs[0]].config.model_dump(mode="json")) for sigs in alike.values()]
    attempt = Path(folder) / time.strftime("%Y%m%d-%H%M%S")
    attempt.mkdir(parents=True, exist_ok=True)
    world = executor.tasks_per_node * executor.nodes
    watcher = Watcher(queue, executor.poll_s) if executor.kind == "slurm" else None
    jobs = []
    for i, group in enumerate(groups(probes, executor)):
        ex = make_executor(executor.model_copy(update={"tasks_per_node": 1, "nodes": 1}), attempt / f"job{i}")
        ex.update_parameters(name=f"preflight-{target}-{i}")
        records = attempt / f"job{i}.jsonl"
        job = ex.submit(PreflightJob(group, settings, world, executor.mem_gb, str(records), executor.cpus_per_task))
        print(f"[preflight] {target}: job {job.job_id} runs {len(group)} stage run(s) (logs: {job.paths.stdout})",
              flush=True)
        jobs.append((job, group, records, time.time()))
    by_sig: dict[str, dict] = {}
    for i, (job, group, records, since) in enumerate(jobs):
        ended = None
        try:
            follow(job, f"preflight-{target}-{i}", executor.kind, watcher, since, executor=executor)  # prints its lines (and states)
            slurm_results(job) if watcher is not None else job.results()
        except Unservable as err:  # cancelled: it could never start
            ended = str(err)
        except Exception as err:  # noqa: BLE001 -- the job died; its records say how far it got
            ended = (f"Slurm job {job.job_id} {slurm.final_state(job.job_id)}" if executor.kind == "slurm"
                     and not isinstance(err, submitit.core.utils.FailedJobError) else f"job {job.job_id}: {error_line(err)[:300]}")
        done = {r["signature"]: r for r in map(json.loads, records.read_text().splitlines())} if records.exists() else {}
        for p in group:
            by_sig[p.signature] = done.get(p.signature) or {
                "signature": p.signature, "stage": p.stage, "status": "failed", "steps": 0,
                "error": f"not measured: {ended or 'the job returned no record'}"}
    report = Report(target, executor, settings)
    for sig, run in runs.items():
        cfg = run.config
        rec = {**by_sig[measured_as[sig]], "signature": sig, "stage": run.stage,
               "measured_as": "" if measured_as[sig] == sig else measured_as[sig]}
        report.rows.append({**rec, "cell": cell_label(run, target), "dataset": cfg.data.name,
                            "image_size": cfg.eval_size if run.stage != PRETRAIN else cfg.data.image_size,
                            "model": describe_model(cfg), "batch_per_device": getattr(cfg, run.stage).batch_size // world,
                            "peak_mem_gb": rec.get("peak_mem_gb"), "capacity_gb": rec.get("capacity_gb"),
                            "device": rec.get("device", ""), **project(rec, cfg, executor)})
    report.folder = attempt
    write(report, attempt / "report.md", attempt / "report.csv")  # kept when Snakemake drops a failed rule's outputs
    return report


def computes_as(cfg: RunConfig, stage: str) -> str:
    """What a stage run computes, for a preflight: its stage config without its seed and, for an
    evaluation, with its encoder's architecture in place of its pre-training run (a preflight
    starts evaluations from the encoder as initialised). Runs that differ only in those run the
    same steps at the same speed in the same memory."""
    from harness.core.stages import declared
    from harness.science import methods

    what = methods.stage_config(cfg, stage)
    what.pop("seed", None)
    if declared(stage).evaluates:
        what.pop("parent", None)
        what.pop("init", None)
        what["model"] = {k: v for k, v in cfg.model.model_dump().items() if k in methods.ENCODER_FIELDS}
    return json.dumps(what, sort_keys=True)


def cell_label(run, target: str) -> str:
    """The cell a run is known by in `target`: its first cell of that table, else its first cell."""
    cells = [c for c in run.cells if c.study == target] or run.cells
    return f"{cells[0].study} · {cells[0].setting} · s{cells[0].seed}" if cells else run.signature
