"""What every stage's training loop shares: device, seeding, schedule, loaders, checkpoints.

Loops are written per stage (pretrain.py, linprobe.py, finetune.py) and call these helpers.
The data order of epoch e is a function of (seed, e) alone and the RNG states are part of the
checkpoint, so a resumed run continues exactly where an uninterrupted one would be. Helpers take
a `rank`/`world_size` so data-parallel training can shard the sampler without restructuring.
"""
from __future__ import annotations

import math
import os
import random
import tempfile
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from harness.config import OptimConfig, RunConfig
from harness.distributed import SINGLE, Dist


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite: the stage stops at once and its MLflow run fails."""


class Interrupted(RuntimeError):
    """A stage stopped on purpose before its last epoch (tests of resume use it)."""


def select_device(cfg: RunConfig) -> torch.device:
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda was asked for but no CUDA device is visible to this job")
    if cfg.device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def autocast(device: torch.device):
    """bf16 autocast on CUDA; plain fp32 on the CPU (bf16 is many times slower there)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


def subset(ds: Dataset, n: int | None) -> Dataset:
    """A fixed random subset of n items (the same for every run), or the whole set."""
    if n is None or n >= len(ds):
        return ds
    return Subset(ds, torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:n].tolist())


def splits(cfg: RunConfig, train_transform, eval_transform) -> tuple[Dataset, Dataset | None, str]:
    """(training set, evaluation set, its name) of a stage.

    Evaluation is on the test split, or, with `data.validation`, on a fixed held-out share of
    the training split (hyper-parameter search never sees the test split); the held-out images
    are then left out of every stage's training, pre-training included.
    """
    from harness.data import build_dataset

    name, root = cfg.data.name, cfg.data.root
    train = build_dataset(name, root, train=True, transform=train_transform)
    if not cfg.data.validation:
        if eval_transform is None:  # pre-training evaluates nothing
            return subset(train, cfg.data.train_subset), None, "test"
        test = build_dataset(name, root, train=False, transform=eval_transform)
        return subset(train, cfg.data.train_subset), subset(test, cfg.data.test_subset), "test"
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(12345)).tolist()
    cut = int(len(train) * cfg.data.validation)
    held_out = Subset(build_dataset(name, root, train=True, transform=eval_transform), order[:cut])
    return (subset(Subset(train, order[cut:]), cfg.data.train_subset), subset(held_out, cfg.data.test_subset), "val")


def epoch_loader(ds: Dataset, batch_size: int, seed: int, epoch: int, *, shuffle: bool = True,
                 drop_last: bool = True, num_workers: int = 0, rank: int = 0,
                 world_size: int = 1) -> DataLoader:
    """The loader of one epoch; its order and its workers' seeds depend on (seed, epoch) only."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    sampler = None
    if world_size > 1:
        sampler = torch.utils.data.DistributedSampler(ds, world_size, rank, shuffle=shuffle, seed=seed)
        sampler.set_epoch(epoch)
        shuffle = False
    batch_size = min(batch_size, len(ds)) if drop_last else batch_size
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, sampler=sampler, generator=g,
                      drop_last=drop_last, num_workers=num_workers, pin_memory=torch.cuda.is_available())


def steps_per_epoch(n: int, batch_size: int, drop_last: bool = True) -> int:
    batch_size = min(batch_size, n) if drop_last else batch_size
    return n // batch_size if drop_last else math.ceil(n / batch_size)


def warmup_cosine(optimizer: torch.optim.Optimizer, opt: OptimConfig, steps_per_epoch: int):
    """Per-iteration schedule: linear warm-up from 0 to lr, then cosine decay to min_lr."""
    total = opt.epochs * steps_per_epoch
    warmup = int(opt.warmup_epochs * steps_per_epoch)
    floor = opt.min_lr / opt.lr

    def factor(step: int) -> float:
        if step < warmup:
            return step / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def check_finite(loss: torch.Tensor, epoch: int, step: int) -> None:
    if not torch.isfinite(loss):
        raise NonFiniteLoss(f"loss is {loss.item()} at epoch {epoch}, step {step}: stopping this stage")


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj: Any, path: Path) -> None:
    """Write next to `path`, fsync, then rename: a kill mid-write leaves the old file intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Checkpoint:
    """The end-of-epoch checkpoint of one stage: modules, optimizer, schedule, scaler, RNG, epoch."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "checkpoint.pt"

    def save(self, epoch: int, history: list[dict], dist: Dist = SINGLE, **objects: Any) -> None:
        """Rank 0 writes; the RNG states of every rank go in (a collective call)."""
        rngs = dist.gather(rng_state())
        if dist.is_main:
            state = {name: obj.state_dict() for name, obj in objects.items()}
            atomic_save({"epoch": epoch, "history": history, "rng": rngs, "state": state}, self.path)
        dist.barrier()

    def resume(self, dist: Dist = SINGLE, **objects: Any) -> tuple[int, list[dict]]:
        """Load the last checkpoint into `objects`; returns (epochs done, metric history)."""
        if not self.path.exists():
            return 0, []
        ckpt = torch.load(self.path, map_location="cpu", weights_only=False)
        for name, obj in objects.items():
            obj.load_state_dict(ckpt["state"][name])
        rngs = ckpt["rng"]
        set_rng_state(rngs[min(dist.rank, len(rngs) - 1)])
        return ckpt["epoch"], ckpt["history"]


@torch.no_grad()
def accuracy(model: torch.nn.Module, batches: Iterable, device: torch.device) -> float:
    model.eval()
    correct = total = 0
    for imgs, labels in batches:
        imgs, labels = imgs.to(device), labels.to(device)
        with autocast(device):
            logits = model(imgs)
        correct += (logits.argmax(dim=1) == labels).sum().item()
        total += labels.numel()
    return 100.0 * correct / total


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, (list, tuple)):
        return [to_device(b, device) for b in batch]
    return batch.to(device, non_blocking=True)


def fit(*, train_set: Dataset, opt_cfg: OptimConfig, seed: int, num_workers: int, device: torch.device,
        module: torch.nn.Module, loss_fn, optimizer: torch.optim.Optimizer, schedule, checkpoint: Checkpoint,
        saved: dict[str, Any], tracker, evaluate=None, eval_name: str = "test", stop_after: int | None = None,
        after_step=None, dist: Dist = SINGLE) -> list[dict]:
    """The epoch loop every stage shares; resumes from `checkpoint` and returns the metric history.

    `loss_fn(*batch, epoch=e)` computes the loss of one batch (already on `device`); `module`
    is put in train mode each epoch; `saved` names what the checkpoint holds; `evaluate()` ->
    top-1 on the evaluation set `eval_name` (test or val); `after_step(global_step,
    total_steps)` runs after each optimizer step (EMA). With several ranks (`dist`) each trains
    on its shard with batch_size / world_size images and gradients are averaged before a step.
    """
    if opt_cfg.batch_size % dist.world_size:
        raise ValueError(f"batch_size {opt_cfg.batch_size} does not split over {dist.world_size} processes")
    rank_batch = opt_cfg.batch_size // dist.world_size
    start, history = checkpoint.resume(dist, **saved)
    if start and dist.is_main:
        tracker.log({"resumed_at_epoch": start}, step=start)
    if dist.active and not start:  # one random stream per rank (augmentations, serializations)
        seed_everything(seed * 7919 + dist.rank)
    per_epoch = steps_per_epoch(len(train_set), opt_cfg.batch_size)
    for epoch in range(start, opt_cfg.epochs):
        module.train()
        total, count = 0.0, 0
        loader = epoch_loader(train_set, rank_batch, seed, epoch, num_workers=num_workers, rank=dist.rank,
                              world_size=dist.world_size)
        for step, batch in enumerate(loader):
            batch = to_device(batch, device)
            with autocast(device):
                loss = loss_fn(*batch, epoch=epoch)
            check_finite(loss, epoch, step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if dist.active:
                dist.average_gradients(module.parameters())
            optimizer.step()
            schedule.step()
            if after_step is not None:
                after_step(epoch * per_epoch + step, opt_cfg.epochs * per_epoch)
            total, count = total + loss.item(), count + 1
        metrics = {"loss": dist.mean(total / count), "lr": max(g["lr"] for g in optimizer.param_groups)}
        if evaluate is not None:
            metrics[f"{eval_name}_acc1"] = evaluate()
        history.append(metrics)
        if dist.is_main:
            tracker.log(metrics, step=epoch)
        checkpoint.save(epoch + 1, history, dist, **saved)
        if stop_after is not None and epoch + 1 >= stop_after and epoch + 1 < opt_cfg.epochs:
            raise Interrupted(f"stopped after epoch {epoch + 1} as asked")
    return history


def final_accuracy(history: list[dict], eval_name: str) -> dict[str, float]:
    """The last epoch's top-1 on the evaluation set, and the best one (logged, never tabled)."""
    key = f"{eval_name}_acc1"
    return {key: history[-1][key], f"best_{key}": max(h[key] for h in history)}


def optimizer_and_schedule(params_or_model, opt_cfg: OptimConfig, n_train: int, **kwargs):
    """timm's optimizer factory (no weight decay on norms and biases) + the warm-up/cosine schedule."""
    from timm.optim import create_optimizer_v2

    extra = {"betas": opt_cfg.betas} if opt_cfg.optimizer == "adamw" else {"momentum": opt_cfg.momentum}
    optimizer = create_optimizer_v2(params_or_model, opt_cfg.optimizer, lr=opt_cfg.lr,
                                    weight_decay=opt_cfg.weight_decay, **extra, **kwargs)
    for group in optimizer.param_groups:  # layer-wise lr decay: timm leaves the scaling to its schedulers
        group["lr"] = group["lr"] * group.get("lr_scale", 1.0)
    return optimizer, warmup_cosine(optimizer, opt_cfg, steps_per_epoch(n_train, opt_cfg.batch_size))
