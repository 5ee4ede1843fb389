"""The tracking store as a workflow starts: created once before the jobs log to it, and every
spool that an earlier run could not deliver replayed; a store that does not answer delays
nothing (the runs spool their tracking, harness.run.spool)."""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from harness.run.forwarder import replay

if TYPE_CHECKING:
    from harness.workflow.plan import Plan


def open_store(plan: "Plan") -> None:
    """Snakemake's onstart, when stage jobs will run."""
    why = plan.store.unreachable()
    if why is not None:
        print(f"[harness] tracking store {plan.store.uri} does not answer ({why}): the runs train on and spool "
              f"what they log into their folders; `python -m harness.status --replay` delivers it once the "
              f"store answers", flush=True)
        return
    try:
        plan.store.experiment_id()  # create the store once, before jobs write to it
    except Exception as err:  # noqa: BLE001 -- MlflowException; only a refusal is the user's to fix
        refusal = plan.store.refusal(err)
        if refusal is None:
            raise
        print(f"randsac-harness: error: {refusal}; no job started", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    delivered, behind = replay(plan.results, plan.store)
    if delivered or behind:
        print(f"[harness] tracking: {delivered} spooled run(s) delivered to the store"
              + (f", {behind} still waiting" if behind else ""), flush=True)
