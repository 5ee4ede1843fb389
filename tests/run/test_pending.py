"""squeue's reason codes, each a wait or a refusal (harness.run.pending), as Slurm's documentation
describes them: a drained node or a maintenance reservation is a wait, an invalid QOS is not."""
import pytest

from harness.run.pending import FITS, NEVER, REASONS, WAIT, classify


@pytest.mark.parametrize("reason, code, detail, verdict", [
    ("ReqNodeNotAvail, UnavailableNodes:localhost", "ReqNodeNotAvail", "UnavailableNodes:localhost", FITS),
    ("ReqNodeNotAvail, Reserved for maintenance", "ReqNodeNotAvail", "Reserved for maintenance", FITS),
    ("Nodes required for job are DOWN, DRAINED or reserved for jobs in higher priority partitions",
     "Nodes required for job are DOWN, DRAINED or reserved for jobs in higher priority partitions", "", WAIT),
    ("PartitionDown", "PartitionDown", "", WAIT),
    ("Reservation", "Reservation", "", WAIT),
    ("Priority", "Priority", "", WAIT),
    ("JobHeldUser", "JobHeldUser", "", WAIT),
    ("AssocGrpCpuLimit", "AssocGrpCpuLimit", "", WAIT),  # a group limit: clears as other jobs end
    ("QOSMaxJobsPerUserLimit", "QOSMaxJobsPerUserLimit", "", WAIT),
    ("QOSMaxWallDurationPerJobLimit", "QOSMaxWallDurationPerJobLimit", "", NEVER),  # the job's own request
    ("AssocMaxCpuPerJobLimit", "AssocMaxCpuPerJobLimit", "", NEVER),
    ("InvalidQOS", "InvalidQOS", "", NEVER),
    ("InvalidAccount", "InvalidAccount", "", NEVER),
    ("PartitionTimeLimit", "PartitionTimeLimit", "", NEVER),
    ("DependencyNeverSatisfied", "DependencyNeverSatisfied", "", NEVER),
    ("SomethingNew", "SomethingNew", "", WAIT),  # unknown: a wait, said as it is
    ("", "None", "", WAIT),
])
def test_reasons_as_the_documentation_describes_them(reason, code, detail, verdict):
    r = classify(reason)
    assert (r.code, r.detail, r.verdict) == (code, detail, verdict) and r.meaning


def test_only_the_queue_turn_is_not_a_blocked_wait():
    assert {c for c in REASONS if classify(c).is_turn} == {"None", "Priority", "Resources", "WaitingForScheduling",
                                                          "BeginTime", "Dependency"}
    assert all(v in (WAIT, NEVER, FITS) and meaning for v, meaning in REASONS.values())
