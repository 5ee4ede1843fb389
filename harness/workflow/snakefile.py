"""What the Snakefile loads: the plan of the studies its command line asks for, and the helpers
of its rules, or one clear error line and exit 1 before Snakemake schedules anything."""
from __future__ import annotations

import sys
from typing import Any, NamedTuple

from harness.plan.studies import ConfigError
from harness.workflow.command_line import CommandLine
from harness.workflow.plan import Plan
from harness.workflow.preflight import Preflight, bill
from harness.workflow.stale import StaleRuns


class Workflow(NamedTuple):
    plan: Plan
    preflight: Preflight
    stale: StaleRuns


def load(config: dict[str, Any], argv: list[str]) -> Workflow:
    """The Snakefile's PLAN, PREFLIGHT and STALE for `snakemake <argv>` with `config`; a dry run
    prints the bill of the jobs it lists."""
    try:
        line = CommandLine.read(argv)
        plan = Plan.from_snakemake_config(line.merged_config(config), line.targets)
        if line.dry_run and not plan.preflight:  # what the jobs listed will cost
            print(bill(plan, line.targets), flush=True)
        return Workflow(plan, Preflight(plan), StaleRuns(plan))
    except ConfigError as err:
        print(f"randsac-harness: error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
