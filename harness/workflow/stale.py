"""Runs made by other code than today's, as the Snakefile sees them: the stage rule's
`superseded` param, and --config rerun=stale starting them over (harness.plan.stale)."""
from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from harness.plan.stale import start_over
from harness.run.tracking import tag_superseded

if TYPE_CHECKING:
    from harness.workflow.plan import Plan


class _NotCompared:
    """A param value Snakemake cannot represent, hence leaves out of what it compares."""

    def __repr__(self) -> str:
        return "not compared"


NOT_COMPARED = _NotCompared()


class StaleRuns:
    def __init__(self, plan: "Plan"):
        self.plan = plan
        self._superseded: dict[str, Any] = {}  # the superseded param of each run, once per invocation

    def superseded(self, sig: str):
        """The stage rule's `superseded` param: how many times run `sig` was started over with
        newer code, plus one when this invocation starts it over (`rerun=stale` and the run is
        stale). Snakemake redoes a job whose params changed, so the run is planned exactly then;
        the next invocation finds the same count and plans nothing. The count is the one its
        result file recorded (deleting a `superseded-*` folder to free space redoes nothing),
        or, while it has no result, the number of those folders. Never started over:
        NOT_COMPARED, which Snakemake leaves out of its comparison, as runs recorded before this
        param existed have it. Computed once per invocation: Snakemake evaluates a job's params
        again when its input is made, after onstart has moved the run's results aside."""
        if sig not in self._superseded:
            self._superseded[sig] = self._count(sig)
        return self._superseded[sig]

    def _count(self, sig: str):
        plan = self.plan
        run = plan.results.run(sig)
        result = run.result(plan.runs[sig].stage)
        count = (json.loads(result.read_text()).get("superseded", 0) if result.exists()
                 else len(run.superseded()))
        if plan.rerun_stale and (state := plan.code.state(sig)) is not None and state.stale:
            count += 1
        return count or NOT_COMPARED

    def start_over(self, jobs: list[tuple[str, str]]) -> None:
        """Before the jobs start (Snakemake's onstart, never in a dry run): each stale run among
        `jobs` ((stage, signature) of the stage jobs Snakemake will run) keeps its results aside
        and is tagged superseded in MLflow (harness.plan.stale.start_over)."""
        plan = self.plan
        if not plan.rerun_stale:
            return
        today = time.strftime("%Y-%m-%d %H:%M")

        def tag(run_id: str, why: str) -> None:
            try:
                tag_superseded(plan.store, run_id, why)
            except Exception as err:  # deleted from the store, or another store: the results are kept all the same
                print(f"[harness] MLflow run {run_id} not tagged superseded: {str(err).splitlines()[0]}", flush=True)

        for stage, sig in jobs:
            state = plan.code.state(sig) if sig in plan.runs else None
            if state is None or not state.stale:
                continue
            folder = start_over(plan.results.run(sig), stage, f"{today}: started over with newer code ({state.describe()})",
                                tag=tag)
            print(f"[harness] {stage} {sig}: stale ({state.describe()}); its results kept in {folder}, "
                  f"started over with today's code", flush=True)
