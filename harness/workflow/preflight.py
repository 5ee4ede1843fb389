"""A target's preflight as Snakemake runs it (--config preflight=...; harness.run.preflight),
and the bill of what is left to run."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from harness.core.files import write_text_atomic
from harness.plan.studies import ConfigError, StageRun

if TYPE_CHECKING:
    from harness.workflow.plan import Plan


class Preflight:
    def __init__(self, plan: "Plan"):
        self.plan = plan

    @property
    def results(self):
        return self.plan.results

    def failure(self) -> list[str]:
        """The lines of a preflight that failed in this invocation (results/preflight/.failure,
        written after it started), for the Snakefile's onerror to print last."""
        path = self.results.preflights / ".failure"
        if not path.exists() or path.stat().st_mtime < self.plan.asked_at:
            return []
        return path.read_text().splitlines()

    def files(self, target: str) -> list[str]:
        """What a target asks for with --config preflight=...: a marker that its preflight passed
        (results/preflight/.passed/<target>). The report itself, results/preflight/<target>.md and
        .csv, is not a Snakemake output, so a failed preflight cannot make Snakemake delete the
        last good one; the failed report lands beside it, <target>.failed.md and .csv."""
        return [str(self.results.preflights / ".passed" / target)]

    def run(self, target: str) -> None:
        """Preflight the target's runs on the plan's executor, print and write the report. All
        ok: results/preflight/<target>.md|.csv and the marker. Any failed: the report goes to
        <target>.failed.md|.csv, the last good report stays, and a ConfigError names every failed
        run with its one line (the Snakefile's onerror prints them again, last)."""
        from harness.run.preflight import run_preflight, write

        plan = self.plan
        report = run_preflight(target, plan.target_runs(target), plan.executor, plan.preflight,
                               self.results.preflights / target, self.results.slurm_queue)
        md, csv = (self.results.preflight(target, ext) for ext in ("md", "csv"))
        failed_md, failed_csv = (self.results.preflight(target, f"failed.{ext}") for ext in ("md", "csv"))
        print(report.markdown(), flush=True)
        if report.failed:
            write(report, failed_md, failed_csv)
            kept = f"; the last good report stays in {md}" if md.exists() else ""
            lines = [f"preflight: {row['stage']} {row['signature']} ({row['cell']}) failed: {row['error']}"
                     for row in report.failed] + [f"preflight: report in {failed_md}{kept}"]
            # for the Snakefile's onerror, which prints them last (the rule may run in another process)
            write_text_atomic(self.results.preflights / ".failure", "\n".join(lines) + "\n")
            raise ConfigError("\n".join(lines))
        write(report, md, csv)
        for stale in (failed_md, failed_csv):
            stale.unlink(missing_ok=True)  # an earlier failure, measured again and passed
        marker = Path(self.files(target)[0])
        marker.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(marker, f"{report.when}\n")
        print(f"[preflight] report: {md}, {csv}", flush=True)


def bill(plan: "Plan", targets: list[str]) -> str:
    """The projected device-hours of the targets' unfinished runs, from the last preflight on the
    plan's executor (harness.report.bill), or how to measure them."""
    from harness.run.preflight import projected

    tables = [t for t in targets if t in {s.name for s in plan.studies}]
    if not tables or len(tables) < len(targets):  # all, or file targets: every planned run
        return projected(plan.runs, plan.results, plan.executor, "all")
    runs: dict[str, StageRun] = {sig: run for t in tables for sig, run in plan.target_runs(t).items()}
    return projected(runs, plan.results, plan.executor, " ".join(tables))
