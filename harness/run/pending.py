"""Why a pending Slurm job waits, and whether the wait can end: squeue's reason codes, one table.

Source: Slurm's documentation, squeue(1), section "JOB REASON CODES"
(https://slurm.schedmd.com/squeue.html#SECTION_JOB-REASON-CODES, Slurm 22.05), and the
resource-limit reasons of https://slurm.schedmd.com/resource_limits.html ("Job Reason
Codes"). Each code is a verdict for a job this harness submitted:

- WAIT: the job can start once something changes by itself or by an admin's hand: other jobs
  end (priority, resources, group limits), a time comes (begin time, a reservation ends), a
  node or partition comes back (drained, down, inactive), a hold is released.
- NEVER: nothing that happens to the cluster lets this job start as submitted: its own request
  is above a per-job limit, its account, QOS or reservation is invalid, its dependency failed.
- FITS: the code says either (ReqNodeNotAvail, PartitionNodeLimit, PartitionConfig can mean "the
  nodes are busy, drained or reserved" or "no node of the partition has that much"): a wait when
  some node of the partition, whatever its state, could hold the request (one sinfo), else NEVER.

A code the table does not know is a wait: the launcher says it, and `executor.patience_h`
bounds how long a run waits for anything but its turn.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

WAIT, NEVER, FITS = "wait", "never", "fits"

# code -> (verdict, what it means for the run, in the launcher's line)
REASONS: dict[str, tuple[str, str]] = {
    # its turn in the queue: the normal wait
    "None": (WAIT, "just submitted"),
    "Priority": (WAIT, "jobs of higher priority go first"),
    # busy nodes; a request no node could hold gets PartitionConfig instead (seen on this cluster),
    # so the common wait costs no sinfo call per waiting run
    "Resources": (WAIT, "the nodes it needs are busy"),
    "WaitingForScheduling": (WAIT, "the scheduler has not looked at it yet"),
    "Dependency": (WAIT, "waits for the jobs it depends on"),
    "BeginTime": (WAIT, "asked not to start before its begin time"),
    "Licenses": (WAIT, "the licenses it needs are in use"),
    "JobArrayTaskLimit": (WAIT, "its array runs as many tasks at once as allowed"),
    "Cleaning": (WAIT, "its last attempt is being cleaned up"),
    "Prolog": (WAIT, "its prolog runs"),
    "Nodes required for job are DOWN, DRAINED or reserved for jobs in higher priority partitions":
        (WAIT, "the nodes it needs are down, drained or reserved"),
    # nodes, partitions, reservations: an admin's action or time ends them
    "ReqNodeNotAvail": (FITS, "a node it needs is drained, down, reserved or not responding"),
    "NodeDown": (WAIT, "a node it needs is down"),
    "FrontEndDown": (WAIT, "no front end node is available"),
    "PartitionDown": (WAIT, "its partition is down"),
    "PartitionInactive": (WAIT, "its partition is inactive"),
    "PartitionNodeLimit": (FITS, "its partition's nodes are down or drained, or fewer than it asks"),
    "PartitionConfig": (FITS, "its partition cannot give what it asks now"),
    "Reservation": (WAIT, "waits for its reservation to become usable"),
    "PowerNotAvail": (WAIT, "not enough power for its nodes"),
    "BurstBufferResources": (WAIT, "its burst buffer is in use"),
    "BurstBufferStageIn": (WAIT, "its burst buffer stages in"),
    "SystemFailure": (WAIT, "Slurm, a file system or the network failed"),
    "JobHeldAdmin": (WAIT, "an admin holds it (scontrol release)"),
    "JobHeldUser": (WAIT, "held by its user (scontrol release <job id>)"),
    "FedJobLock": (WAIT, "its federation is syncing"),
    # limits of accounts and QOS shared with other jobs: they clear as other jobs end
    "AssociationJobLimit": (WAIT, "its account's job limit is reached"),
    "AssociationResourceLimit": (WAIT, "its account's resource limit is reached"),
    "AssociationTimeLimit": (WAIT, "its account's time limit is reached"),
    "QOSJobLimit": (WAIT, "its QOS's job limit is reached"),
    "QOSResourceLimit": (WAIT, "its QOS's resource limit is reached"),
    "QOSTimeLimit": (WAIT, "its QOS's time limit is reached"),
    "QOSUsageThreshold": (WAIT, "its QOS's usage threshold is reached"),
    "AccountingPolicy": (WAIT, "an accounting limit is reached"),
    # nothing lets it start as submitted
    "PartitionTimeLimit": (NEVER, "its time limit is above its partition's"),
    "BadConstraints": (NEVER, "its constraints cannot be met by any node"),
    "InvalidAccount": (NEVER, "its account is invalid"),
    "InvalidQOS": (NEVER, "its QOS is invalid"),
    "AccountNotAllowed": (NEVER, "its account may not use its partition"),
    "QOSNotAllowed": (NEVER, "its QOS may not use its partition"),
    "ReservationDeleted": (NEVER, "the reservation it asked for was deleted"),
    "DependencyNeverSatisfied": (NEVER, "a job it depends on failed"),
    "JobLaunchFailure": (NEVER, "it could not be launched (its program or file system)"),
    "InactiveLimit": (NEVER, "it reached the system's inactive limit"),
}

# Per-limit codes of resource_limits.html: a Grp limit (shared by the group), a per-user or
# per-account one and a count of jobs clear as other jobs end; a limit per job (MaxXPerJob,
# MaxWall...PerJob, MinX) is the job's own request and never clears.
_LIMIT = re.compile(r"^(Assoc|QOS)(Grp|Max|Min)\w+$")


@dataclass(frozen=True)
class Reason:
    code: str  # the code, e.g. ReqNodeNotAvail
    detail: str  # what Slurm adds after the code, e.g. "UnavailableNodes:localhost"
    verdict: str  # WAIT, NEVER or FITS
    meaning: str

    @property
    def is_turn(self) -> bool:
        """The ordinary wait for its turn, or for what it asked to wait for (a begin time, a
        dependency): said as before, and no patience setting ends it."""
        return self.code in TURN

    @property
    def text(self) -> str:
        return f"{self.code}, {self.detail}" if self.detail else self.code


TURN = {"None", "Priority", "Resources", "WaitingForScheduling", "BeginTime", "Dependency"}


def classify(reason: str) -> Reason:
    """The verdict of a reason as squeue prints it ("ReqNodeNotAvail, UnavailableNodes:n1")."""
    reason = (reason or "None").strip()
    code, _, detail = reason.partition(",")
    code = code.strip()
    if reason in REASONS:  # a whole sentence is the code
        code, detail = reason, ""
    if code in REASONS:
        verdict, meaning = REASONS[code]
    elif limit := _LIMIT.match(code):
        per_job = limit.group(2) == "Min" or "PerJob" in code
        verdict = NEVER if per_job else WAIT
        meaning = ("its own request is above a per-job limit of its " if per_job else "a limit of its ") + \
            ("account" if code.startswith("Assoc") else "QOS") + f" ({code})"
    else:
        verdict, meaning = WAIT, "a reason this harness does not know; it waits"
    return Reason(code, detail.strip(), verdict, meaning)


def refusal(reason: Reason, executor=None) -> str | None:
    """Why a job waiting for `reason` can never start (one line), or None when its wait can end.
    A FITS reason is a refusal only when no node of the partition, in any state, can hold the
    request of `executor` (harness.run.executor.ExecutorConfig; without one, a wait)."""
    from harness.run import slurm
    from harness.run.executor import unservable

    if reason.verdict == NEVER:
        return f"{reason.text} ({reason.meaning})"
    if reason.verdict == FITS and executor is not None:
        try:
            problem = unservable(executor, slurm.nodes())
        except slurm.SlurmError:
            return None  # cannot ask now: it waits, and is asked again when the reason changes
        return f"{reason.text} ({problem})" if problem else None
    return None
