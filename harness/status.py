"""Where every run of a target stands, one line each:

    python -m harness.status table3                      # the local profile's settings
    python -m harness.status all --profile slurm --config scale=tiny
    python -m harness.status --failed --stale --json     # only those runs, as JSON
    python -m harness.status --list                      # the tables: what each varies, cells, runs
    python -m harness.status --show 'table3:square M=2'  # a cell's resolved config and signatures
    python -m harness.status table3 --table              # its table so far: results/tables/partial/
    python -m harness.status --clean [--delete]          # what nothing asks for any more (harness.report.cleanup)

done (its results) / stale (its results, made by other code than today's: the modules that
changed, or its stale pre-training run; `--config rerun=stale` redoes it) / running (epoch k/n,
ETA) / queued (Slurm job id and reason) / failed (its last error line) / stopped (its job ended
without a result) / not started; read from the run folders, MLflow and Slurm. Takes the same
targets, profile and --config as Snakemake; today's code is the `harness` package this command
imports (harness.plan.stale).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness.run import slurm
from harness.run.spool import Spool
from harness.run.watcher import Watcher
from harness.core.layout import Results, RunFolder
from harness.core.metrics import hms
from harness.core.stages import PRETRAIN, STAGES
from harness.plan.stale import CodeState
from harness.plan.studies import ROOT, ConfigError, StageRun, expand
from harness.workflow.command_line import parse_config_words
from harness.workflow.plan import Plan
from harness.workflow.preflight import bill



@dataclass
class Status:
    state: str  # done | stale | running | queued | failed | stopped | not started
    detail: str = ""


def last_error(run: RunFolder) -> str:
    """The last line of the newest job log that names an error, if any."""
    logs = sorted(run.submitit.glob("*/*_log.err"), key=lambda p: p.stat().st_mtime)
    for log in reversed(logs):
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        errors = [ln for ln in lines if "Error" in ln or "error:" in ln or "Exception" in ln or "CANCELLED" in ln]
        if errors:
            return errors[-1][:200]
    return ""


def local_job_alive(job_id: str) -> bool:
    """submitit's local jobs are processes: their id is the pid (a zombie, ended but not yet
    reaped by its parent, is not alive)."""
    try:
        os.kill(int(job_id), 0)
    except (ValueError, ProcessLookupError, PermissionError):
        return False
    stat = Path(f"/proc/{int(job_id)}/stat")
    return not stat.exists() or stat.read_text().rsplit(")", 1)[-1].split()[0] != "Z"


def progress(run: RunFolder) -> str:
    if not run.progress.exists():
        return "starting"
    p = json.loads(run.progress.read_text())
    age = time.time() - p["time"]
    rate = f", {p['images_per_s']:.0f} img/s" if p.get("images_per_s") is not None else ""
    eta = f", ETA {hms(max(0.0, p['eta_s'] - age))}" if p.get("eta_s") is not None else ""
    return f"epoch {p['epoch']}/{p['epochs']}{rate}{eta} (updated {hms(age)} ago)"


def status(run: RunFolder, stage: str) -> Status:
    if run.result(stage).exists():
        metrics = json.loads(run.result(stage).read_text())["metrics"]
        return Status("done", ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    if not run.job.exists():
        return Status("not started")
    job = json.loads(run.job.read_text())
    if job["cluster"] == "slurm":
        # the workflow's shared view of the queue (one squeue for every run), newer than the job
        since = run.job.stat().st_mtime
        queue = Watcher(Results(run.path.parent.parent).slurm_queue).snapshot(fresh_after=since)
        live = queue.state(str(job["job_id"]), since)
        if live and live[0] in slurm.WAITING:
            return Status("queued", f"Slurm job {job['job_id']} {live[0]}, reason {live[1]}")
        if live and live[0] in slurm.LIVE:
            return Status("running", f"Slurm job {job['job_id']}: {progress(run)}")
    elif local_job_alive(str(job["job_id"])):
        return Status("running", f"local job {job['job_id']}: {progress(run)}")
    error = last_error(run)
    return Status("failed", error) if error else Status("stopped", f"job {job['job_id']} ended without a result")


def with_code(st: Status, code: CodeState | None) -> Status:
    """A done run made by other code than today's is stale, saying what changed; a done run
    that recorded no code (made before runs recorded it) says so and stays done."""
    if st.state != "done" or code is None:
        return st
    if code.stale:
        return Status("stale", f"{st.detail}; {code.describe()}")
    return Status("done", f"{st.detail}; code not recorded") if not code.recorded else st


def line(sig: str, run: StageRun, st: Status) -> str:
    cell = run.cells[0]
    name = f"{cell.study} · {cell.setting} · s{cell.seed} · {run.stage}"
    return f"{st.state:<12} {name:<48} {sig}  {st.detail}".rstrip()


def profile_config(profile: str) -> dict:
    """The harness settings of a Snakemake profile (its configfile)."""
    folder = ROOT / "profiles" / profile
    snake = yaml.safe_load((folder / "config.yaml").read_text()) or {}
    configfile = ROOT / snake.get("configfile", f"profiles/{profile}/harness.yaml")
    return yaml.safe_load(configfile.read_text()) or {}


def listing(plan: Plan) -> list[str]:
    """Every table: what it varies, its cells and the distinct runs it needs at the plan's settings."""
    out = [f"{'target':<8} {'cells':>5} {'runs':>4}  varies"]
    for study in plan.studies:
        table = plan.table_plan(study)
        cells = {(c.dataset, c.setting) for c in table.cells if not c.control}
        varies = "; ".join(f"{name}: {', '.join(label for label, _, _ in factor.variants(name))}"
                           for name, factor in study.factors.items()) or "one setting"
        out.append(f"{study.name:<8} {len(cells):>5} {len(table.inputs()):>4}  {varies}  ({study.caption})")
    return out + [f"[harness] scale {plan.scale}; cells per paper dataset and seed, runs with the controls, "
                  f"shared runs counted once per table"]


def show(plan: Plan, which: str) -> list[str]:
    """The resolved config and the run signatures of the cells `which` names: TABLE:SETTING (or its
    short name: table3:M=2), optionally TABLE:DATASET:SETTING."""
    table, _, rest = which.partition(":")
    study = next((s for s in plan.studies if s.name == table), None)
    if study is None or not rest:
        raise ConfigError(f"--show {which!r}: give TABLE:SETTING, e.g. 'table3:square M=2' (tables: "
                          f"{', '.join(s.name for s in plan.studies)})")
    dataset, _, setting = rest.rpartition(":")
    cells = [c for c in expand(study, plan.scale, plan.overrides, seeds=plan.cells.seeds, controls=plan.cells.controls)
             if setting in (c.setting, c.short) and dataset in ("", c.dataset)]
    if not cells:
        raise ConfigError(f"--show {which!r}: {table} has no cell {setting!r}; its settings are "
                          f"{', '.join(study.settings())}")
    out = []
    for cell in cells:
        out.append(f"# {cell.study} · {cell.label} · seed {cell.seed} (scale {plan.scale})")
        for stage in cell.stages(study.metrics):
            sig = cell.signature(stage)
            st = with_code(status(plan.results.run(sig), stage), plan.code.state(sig))
            out.append(f"#   {stage:<9} {sig}  {st.state}  results/runs/{sig}/")
        out.append(yaml.safe_dump(cell.config.model_dump(mode="json"), sort_keys=False).rstrip())
    return out


def main(argv: list[str] | None = None) -> int:
    from harness.core.config import deep_merge
    from harness.plan.studies import available_studies

    ap = argparse.ArgumentParser(prog="python -m harness.status", description=__doc__.splitlines()[0])
    ap.add_argument("targets", nargs="*", default=["all"], help=f"all, or tables: {', '.join(available_studies())}")
    ap.add_argument("--profile", default="local", help="local or slurm (its harness settings)")
    ap.add_argument("--config", nargs="*", action="extend", default=[],
                    help="the same KEY=VALUE overrides as Snakemake's (may be given more than once)")
    ap.add_argument("--directory", type=Path, default=Path("."), help="where results/ is (Snakemake's --directory)")
    ap.add_argument("--failed", action="store_true", help="only the runs that failed or stopped")
    ap.add_argument("--stale", action="store_true", help="only the stale runs (with --failed: either)")
    ap.add_argument("--json", action="store_true", help="one JSON list of the runs, for scripts")
    ap.add_argument("--list", action="store_true", help="the tables: what each varies, its cells and runs")
    ap.add_argument("--show", metavar="TABLE:SETTING", help="a cell's resolved config and its runs' signatures, "
                                                            "e.g. 'table3:square M=2'; launches nothing")
    ap.add_argument("--table", action="store_true", help="render each target's table from the runs finished so far "
                                                         "into results/tables/partial/ (… marks the rest)")
    ap.add_argument("--clean", action="store_true", help="list, with sizes, the run folders, superseded results and "
                    "code snapshots that neither this plan (targets, --config) nor a table nor a live job asks for")
    ap.add_argument("--delete", action="store_true", help="with --clean: delete them (and mark their MLflow runs deleted)")
    ap.add_argument("--replay", action="store_true", help="deliver to the tracking store what runs spooled while it "
                                                          "did not answer (harness.run.spool)")
    args = ap.parse_args(argv)
    try:
        config = deep_merge(profile_config(args.profile), parse_config_words(args.config))
        os.chdir(args.directory)
        plan = Plan.from_snakemake_config(config, args.targets)
        if args.list or args.show:
            print("\n".join(listing(plan) if args.list else show(plan, args.show)))
            return 0
    except (ConfigError, OSError) as err:
        print(f"randsac-harness: error: {err}", file=sys.stderr)
        return 1
    if args.table:
        return partial_tables(plan, args.targets)
    if args.clean or args.delete:
        return clean(plan, args.delete)
    if args.replay:
        return replay_spools(plan)
    wanted = ({"failed", "stopped"} if args.failed else set()) | ({"stale"} if args.stale else set())
    counts: dict[str, int] = {}
    found, spooled_runs = [], 0
    for sig, run in plan.runs.items():  # in study, cell, stage order
        st = with_code(status(plan.results.run(sig), run.stage), plan.code.state(sig))
        counts[st.state] = counts.get(st.state, 0) + 1
        spooled = Spool(plan.results.run(sig), run.stage).waiting()
        if spooled:
            spooled_runs += 1
            st = Status(st.state, f"{st.detail}; tracking: {spooled} events spooled".lstrip("; "))
        if wanted and st.state not in wanted:
            continue
        cell = run.cells[0]
        found.append({"signature": sig, "stage": run.stage, "table": cell.study, "setting": cell.setting,
                      "dataset": cell.dataset, "seed": cell.seed, "state": st.state, "detail": st.detail,
                      "tables": sorted({c.study for c in run.cells}), "spooled": spooled})
        if not args.json:
            print(line(sig, run, st))
    if args.json:
        print(json.dumps(found, indent=1))
        return 0
    print(f"[harness] {len(plan.runs)} runs at scale {plan.scale}: " + ", ".join(f"{n} {k}" for k, n in counts.items())
          + (f" (shown: {len(found)} {' or '.join(sorted(wanted))})" if wanted else ""))
    if counts.get("stale"):
        print("[harness] stale runs stay as they are; to redo them with today's code: snakemake ... "
              "--config rerun=stale (their results are kept in superseded-<when>/ of their run folders)")
    if spooled_runs:
        print(f"[harness] {spooled_runs} runs have tracking the store does not hold yet (it did not answer); "
              f"`python -m harness.status --replay` delivers it")
    print(bill(plan, args.targets))  # the unfinished runs' device-hours, from the last preflight
    return 0


def replay_spools(plan: Plan) -> int:
    """--replay: what runs spooled while the store did not answer, delivered now (idempotent)."""
    from harness.run.forwarder import replay

    if (why := plan.store.unreachable()) is not None:
        print(f"randsac-harness: error: tracking store {plan.store.uri} does not answer ({why}); nothing replayed",
              file=sys.stderr)
        return 1
    delivered, behind = replay(plan.results, plan.store)
    print(f"[harness] tracking: {delivered} spooled run(s) delivered to {plan.store.uri}"
          + (f"; {behind} could not be (the store failed meanwhile)" if behind else ""))
    return 1 if behind else 0


def clean(plan: Plan, delete: bool) -> int:
    """--clean: what nothing asks for (harness.report.cleanup), listed; with --delete, deleted."""
    from harness.report import cleanup

    if not (plan.results.root / "runs").exists():
        print(f"[harness] clean: no runs under {plan.results.root}")
        return 0
    live = {sig for sig in (p.name for p in (plan.results.root / "runs").iterdir() if p.is_dir())
            if status_of_folder(plan.results.run(sig)) in ("running", "queued")}
    items = cleanup.unplanned(plan.results, set(plan.runs), live)
    print("\n".join(cleanup.report(items)))
    if delete and items:
        print("\n".join(cleanup.delete(items, plan.store.uri, plan.results)))
    return 0


def status_of_folder(run: RunFolder) -> str:
    """running / queued / other, for a run folder whatever its stage."""
    stage = next((p.stem for p in run.path.glob("*.json") if p.stem in STAGES), None)
    return "done" if stage else status(run, PRETRAIN).state


def partial_tables(plan: Plan, targets: list[str]) -> int:
    """Each target's table from whatever has finished, beside the real ones: results/tables/partial/."""
    from harness.report.tables import render

    for study in plan.studies:
        if "all" not in targets and study.name not in targets:
            continue
        paths = render(plan.table_plan(study), results=plan.results, into=plan.results.tables / "partial")
        print(paths["md"].read_text())
        print(f"[harness] partial table written: {paths['md']} (and .tex, .csv, .png)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `... | head` stopped reading: nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        sys.exit(0)
