"""Data-parallel training inside one job: N processes over one or several nodes.

submitit starts one process per task (`tasks_per_node` x `nodes`); each calls `setup()`, which
reads the job environment (Slurm's, or submitit's local one), exports MASTER_ADDR/PORT, RANK
and WORLD_SIZE and joins the process group (gloo on the CPU, nccl on GPUs). Each rank trains
on its shard with batch / world_size images, so the global batch and the lr scaling are those
of one process with the same global batch; gradients are averaged across ranks before every
step. Only rank 0 logs to MLflow and writes checkpoints; every rank keeps its own RNG stream,
saved in the checkpoint, so a resumed run continues exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as torch_dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def average_gradients(self, params) -> None:
        for p in params:
            if p.grad is not None:
                torch_dist.all_reduce(p.grad)
                p.grad /= self.world_size

    def mean(self, value: float) -> float:
        if not self.active:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        torch_dist.all_reduce(t)
        return t.item() / self.world_size

    def any(self, flag: bool) -> bool:
        """True on every rank when any rank's flag is (a collective call with several ranks)."""
        if not self.active:
            return flag
        t = torch.tensor([float(flag)])
        torch_dist.all_reduce(t)
        return t.item() > 0

    def gather(self, obj):
        """Every rank's `obj`, on every rank (a list indexed by rank)."""
        if not self.active:
            return [obj]
        out = [None] * self.world_size
        torch_dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.active:
            torch_dist.barrier()


SINGLE = Dist()


def setup() -> Dist:
    """Join the job's process group when it runs several tasks; a single process otherwise."""
    import submitit

    try:
        env = submitit.JobEnvironment()
    except RuntimeError:  # not inside a submitit job (tests, notebooks)
        return SINGLE
    if env.num_tasks == 1:
        return SINGLE
    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend)
    if torch.cuda.is_available():
        torch.cuda.set_device(env.local_rank % torch.cuda.device_count())
    return Dist(torch_dist.get_rank(), torch_dist.get_world_size(), env.local_rank)


def teardown(d: Dist) -> None:
    if d.active and torch_dist.is_initialized():
        torch_dist.destroy_process_group()
