"""The training loop every stage shares, and what it needs: device, seeds, batches, schedule.

A stage (pretrain.py, linprobe.py, finetune.py) builds a `Task` (what it trains and how it
scores a batch) and calls `fit(ctx, task)`: the epoch loop, resumed from the stage's checkpoint,
logging one line of metrics per epoch; `train_one_epoch` runs the steps of one epoch on the
batches of the training set's `BatchSource`. The data order of epoch e is a function of (seed, e)
alone, an item's augmentation a function of (seed, e, item) (of (seed, e, step) for a training set
kept on the device, harness.stages.device_data), and the RNG states and the position
in the epoch are in the checkpoint, so a resumed run continues exactly, from the end of an epoch
or from the step at which it was asked to stop. With several processes (`ctx.dist`) each trains
on its shard and gradients are averaged.
"""
from __future__ import annotations

import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from harness.core import metrics as names
from harness.core import processes
from harness.core.config import RunConfig
from harness.core.stages import OptimConfig
from harness.core.errors import StageStopped
from harness.stages.data import EpochOrder, SeededItems, epoch_seed, rank_seed
from harness.stages.device_data import DeviceSet
from harness.stages import turns
from harness.stages.distributed import SINGLE, Dist


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite: the stage stops at once and its MLflow run fails."""


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


def epoch_loader(ds: Dataset, batch_size: int, seed: int, epoch: int, *, shuffle: bool = True,
                 drop_last: bool = True, num_workers: int = 0, rank: int = 0, world_size: int = 1,
                 start_batch: int = 0) -> DataLoader:
    """The loader of one epoch, from batch `start_batch` on; its order depends on (seed, epoch) only."""
    batch_size = min(batch_size, len(ds)) if drop_last else batch_size
    order = EpochOrder(len(ds), seed, epoch, shuffle, rank, world_size, start=start_batch * batch_size)
    own = torch.Generator().manual_seed(epoch_seed(seed, epoch))  # the loader's draws leave the global stream alone
    return DataLoader(ds, batch_size=batch_size, sampler=order, drop_last=drop_last, num_workers=num_workers,
                      generator=own, pin_memory=torch.cuda.is_available())


def eval_loader(ds: Dataset) -> DataLoader:
    """Every item once, in order: for evaluation and feature extraction."""
    return epoch_loader(ds, 256, 0, 0, shuffle=False, drop_last=False)


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


def weight_decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """timm's parameter groups (param_groups_weight_decay): trainable norms, biases and other
    1-D parameters without weight decay, the rest with it; all in one group without decay."""
    no_decay, decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if not weight_decay or p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [g for g in ({"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay})
            if g["params"]]


def optimizer_and_schedule(params_or_model, opt_cfg: OptimConfig, n_train: int, **kwargs):
    """The optimizer as timm's factory makes it (no weight decay on norms and biases) + the
    warm-up/cosine schedule. AdamW without layer-wise decay (pre-training) is built here, the
    same groups and arguments: importing timm imports torchvision, start-up a pre-training job
    need not pay (harness.science.blocks); LARS and layer-wise decay come from timm."""
    if opt_cfg.optimizer == "adamw" and "layer_decay" not in kwargs and isinstance(params_or_model, torch.nn.Module):
        groups = weight_decay_groups(params_or_model, opt_cfg.weight_decay)
        optimizer = torch.optim.AdamW(groups, lr=opt_cfg.lr, weight_decay=0.0, betas=opt_cfg.betas, **kwargs)
        return optimizer, warmup_cosine(optimizer, opt_cfg, steps_per_epoch(n_train, opt_cfg.batch_size))
    from timm.optim import create_optimizer_v2

    extra = {"betas": opt_cfg.betas} if opt_cfg.optimizer == "adamw" else {"momentum": opt_cfg.momentum}
    optimizer = create_optimizer_v2(params_or_model, opt_cfg.optimizer, lr=opt_cfg.lr,
                                    weight_decay=opt_cfg.weight_decay, **extra, **kwargs)
    for group in optimizer.param_groups:  # layer-wise lr decay: timm leaves the scaling to its schedulers
        group["lr"] = group["lr"] * group.get("lr_scale", 1.0)
    return optimizer, warmup_cosine(optimizer, opt_cfg, steps_per_epoch(n_train, opt_cfg.batch_size))


def process_age_s() -> float | None:
    """Seconds since this process started, by the kernel's clock of it (Linux); None elsewhere.
    A warm-started job (harness.run.warm) counts from its client's start, the process submitit
    started."""
    if "HARNESS_JOB_STARTED" in os.environ:
        return time.time() - float(os.environ["HARNESS_JOB_STARTED"])
    return processes.age_s()


def taking_turns(items: Iterable, device: torch.device, dist: Dist = SINGLE) -> Iterable:
    """`items`, each used in a turn of a CPU shared with other jobs (harness.stages.turns) with
    this process's threads; on a GPU, or with several ranks (whose collectives must not wait
    for a turn a sibling holds), as they are."""
    return turns.for_cpu(device.type == "cpu" and not dist.active).each(items, torch.get_num_threads())


def check_finite(loss: torch.Tensor, epoch: int, step: int) -> None:
    if not torch.isfinite(loss):
        raise NonFiniteLoss(f"loss is {loss.item()} at epoch {epoch}, step {step}: stopping this stage")


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, (list, tuple)):
        return [to_device(b, device) for b in batch]
    return batch.to(device, non_blocking=True)


@torch.no_grad()
def accuracy(model: torch.nn.Module, batches: Iterable, device: torch.device) -> float:
    model.eval()
    correct = total = 0
    for imgs, labels in taking_turns(batches, device):
        imgs, labels = imgs.to(device), labels.to(device)
        with autocast(device):
            logits = model(imgs)
        correct += (logits.argmax(dim=1) == labels).sum().item()
        total += labels.numel()
    return 100.0 * correct / total


@dataclass
class Task:
    """What a stage trains: `module` (put in train mode each epoch) with its optimizer and
    schedule on `train_set`, `loss(batch, epoch)` of one batch already on the device (a tensor,
    or (tensor, other values to average per epoch) such as its floor), what the checkpoint holds
    (`saved`), and optionally `evaluate()` -> top-1 on the split `eval_split`,
    `before_step(optimizer, epoch, global step, total steps)` between the backward pass and the
    optimizer step (DINO's clipping, frozen last layer and weight-decay schedule) and
    `after_step(global step, total steps)` after each optimizer step (DINO's teacher)."""

    train_set: Dataset
    opt: OptimConfig
    module: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Any
    loss: Callable[[Any, int], torch.Tensor]
    saved: dict[str, Any]
    evaluate: Callable[[], float] | None = None
    eval_split: str = "test"
    before_step: Callable[[torch.optim.Optimizer, int, int, int], None] | None = None
    after_step: Callable[[int, int], None] | None = None


class BatchSource(Protocol):
    """Where a training set's batches come from, chosen once per stage (`batch_source`)."""

    def batches(self, epoch: int, first_step: int) -> Iterable:
        """This rank's batches of epoch `epoch`, from step `first_step` on."""


@dataclass
class LoaderBatches:
    """A dataset's batches through `epoch_loader`; its items are fixed (cached features)."""

    items: Dataset
    batch_size: int  # this rank's
    seed: int
    dist: Dist
    num_workers: int = 0

    def batches(self, epoch: int, first_step: int) -> Iterable:
        return epoch_loader(self.items, self.batch_size, self.seed, epoch, num_workers=self.num_workers,
                            rank=self.dist.rank, world_size=self.dist.world_size, start_batch=first_step)


class SeededLoaderBatches(LoaderBatches):
    """`LoaderBatches` of items augmented as (seed, epoch, item) say (`items`: SeededItems)."""

    def batches(self, epoch: int, first_step: int) -> Iterable:
        self.items.set_epoch(epoch)
        return super().batches(epoch, first_step)


@dataclass
class DeviceBatches:
    """A DeviceSet's batches: the items in EpochOrder, as `epoch_loader` gives them, each batch
    augmented on the device as (seed, epoch, step) say."""

    items: DeviceSet
    batch_size: int  # this rank's
    seed: int
    dist: Dist

    def batches(self, epoch: int, first_step: int) -> Iterable:
        order = EpochOrder(len(self.items), self.seed, epoch, rank=self.dist.rank, world_size=self.dist.world_size,
                           start=first_step * self.batch_size).order()
        return self.items.batches(order, min(self.batch_size, len(self.items)), rank_seed(self.seed, self.dist.rank),
                                  epoch, first_step)


def batch_source(train_set: Dataset | DeviceSet, batch_size: int, seed: int, dist: Dist,
                 num_workers: int = 0) -> BatchSource:
    """How `train_set` gives this rank its batches of `batch_size`: a DeviceSet augments each
    batch itself, a TensorDataset's items are fixed tensors (cached features: nothing to seed),
    any other dataset's items are augmented in its loader, seeded per item (SeededItems)."""
    if isinstance(train_set, DeviceSet):
        return DeviceBatches(train_set, batch_size, seed, dist)
    if isinstance(train_set, TensorDataset):
        return LoaderBatches(train_set, batch_size, seed, dist, num_workers)
    return SeededLoaderBatches(SeededItems(train_set, rank_seed(seed, dist.rank)), batch_size, seed, dist, num_workers)


def where(epoch: int, epochs: int, steps_done: int, per_epoch: int) -> str:
    """A position in training as progress lines count it: 0-based `epoch` is "epoch epoch+1/epochs"."""
    return f"epoch {epoch + 1}/{epochs}, step {steps_done}/{per_epoch}"


def fit(ctx, task: Task) -> list[dict]:
    """The epoch loop every stage shares; resumes from `ctx.checkpoint`, returns the metric history.

    `ctx` is the stage's StageContext (harness.stages.context). Every epoch logs the mean loss
    (and of every other value the loss returns), `loss_ratio` = loss / loss_floor where the
    loss has a floor, and the lr. With several ranks each trains on its shard with batch_size /
    world_size images and gradients are averaged before a step.
    """
    dist, opt_cfg = ctx.dist, task.opt
    if opt_cfg.batch_size % dist.world_size:
        raise ValueError(f"batch_size {opt_cfg.batch_size} does not split over {dist.world_size} processes")
    start, history, position = ctx.checkpoint.resume(dist, **task.saved)
    per_epoch = steps_per_epoch(len(task.train_set), opt_cfg.batch_size)
    if start or position:
        done = position["step"] if position else 0
        ctx.log({names.RESUMED_AT_EPOCH: start + done / per_epoch}, step=start)
        ctx.say(f"resuming at {where(start, opt_cfg.epochs, done, per_epoch)} from {ctx.checkpoint.path}")
    if dist.active and not (start or position):  # one random stream per rank (serializations, masks)
        seed_everything(rank_seed(ctx.cfg.seed, dist.rank))
    source = batch_source(task.train_set, opt_cfg.batch_size // dist.world_size, ctx.cfg.seed, dist,
                          ctx.cfg.data.num_workers)
    if ctx.meter is not None:  # a preflight times one evaluation after its steps
        ctx.meter.evaluation = task.evaluate
    started = time.perf_counter()
    for epoch in range(start, opt_cfg.epochs):
        epoch_start = time.perf_counter()
        at = position if epoch == start else None
        first = at["step"] if at else 0
        sums, count = train_one_epoch(ctx, task, epoch, source.batches(epoch, first), per_epoch, history, at)
        metrics = {key: dist.mean(total / count) for key, total in sums.items()}
        if names.LOSS_FLOOR in metrics:
            metrics[names.LOSS_RATIO] = metrics[names.LOSS] / metrics[names.LOSS_FLOOR]
        metrics[names.LR] = max(g["lr"] for g in task.optimizer.param_groups)
        if task.evaluate is not None:
            metrics[names.acc1(task.eval_split)] = task.evaluate()
        history.append(metrics)
        ctx.log(metrics, step=epoch)
        ctx.checkpoint.save(epoch + 1, history, dist, **task.saved)
        now = time.perf_counter()
        done_here = epoch + 1 - start - (first / per_epoch if epoch == start else 0)
        # a job stopped after the last step of an epoch resumes with none of it left: no step of
        # this attempt timed yet, so no rate and no ETA until the next epoch (not "0 img/s")
        rate = (count - first) * opt_cfg.batch_size / (now - epoch_start) if count > first else None
        eta = (now - started) / done_here * (opt_cfg.epochs - epoch - 1) if done_here > 0 else None
        ctx.progress(Progress(epoch + 1, opt_cfg.epochs, metrics, rate, now - started, eta, ctx.startup_s))
    return history


def train_one_epoch(ctx, task: Task, epoch: int, batches: Iterable, per_epoch: int, history: list[dict],
                    position: dict | None = None) -> tuple[dict[str, float], int]:
    """The steps of epoch `epoch` on `batches` (MAE's engine_pretrain.train_one_epoch); returns the
    sums of the loss and of every other value it returns, and the number of steps summed.

    `position`: where a resumed epoch starts (`step`, the `sums` of the steps before it), None
    for a whole epoch; `history`: the epochs before, for the checkpoint written when the stage is
    asked to stop (it then raises StageStopped).
    """
    dist, device, total_steps = ctx.dist, ctx.device, task.opt.epochs * per_epoch
    first = position["step"] if position else 0
    sums: dict[str, float] = dict(position["sums"]) if first else {}
    count = first
    task.module.train()
    for step, batch in enumerate(taking_turns(batches, device, dist), start=first):
        batch = to_device(batch, device)
        if ctx.meter is not None:  # a preflight times the data and the compute of each step apart
            ctx.meter.fetched()
        with autocast(device):
            loss = task.loss(batch, epoch)
        loss, extras = loss if isinstance(loss, tuple) else (loss, {})
        check_finite(loss, epoch, step)
        task.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if dist.active:
            dist.average_gradients(task.module.parameters())
        if task.before_step is not None:
            task.before_step(task.optimizer, epoch, epoch * per_epoch + step, total_steps)
        task.optimizer.step()
        task.schedule.step()
        if task.after_step is not None:
            task.after_step(epoch * per_epoch + step, total_steps)
        for key, value in {names.LOSS: loss, **extras}.items():
            sums[key] = sums.get(key, 0.0) + value.item()
        count += 1
        if ctx.startup_s is None:  # the job's start-up: interpreter, imports, data, model, one step
            ctx.startup_s = process_age_s()
        if ctx.meter is not None:
            ctx.meter.stepped(loss)
        if dist.any(ctx.stop_requested()):  # preemption, a time limit: keep this step, then stop
            ctx.checkpoint.save(epoch, history, dist, position={"step": count, "sums": sums}, **task.saved)
            raise StageStopped(f"stopped on request at {where(epoch, task.opt.epochs, count, per_epoch)}; "
                               f"checkpoint {ctx.checkpoint.path} continues from there")
    return sums, count


@dataclass
class Progress:
    """Where a stage stands after an epoch: what its progress line and `progress.json` say."""

    epoch: int  # epochs done
    epochs: int
    metrics: dict[str, float]
    images_per_s: float | None  # training images of the last epoch (all ranks), evaluation included in
    # the time; None when this attempt has timed no step yet (resumed at an epoch's end)
    elapsed_s: float  # since this attempt started
    eta_s: float | None  # None: no step of this attempt timed yet
    startup_s: float | None = None  # from this process's start to the end of its first step

    def line(self, name: str) -> str:
        shown = [f"{k} {v:.4g}" for k, v in self.metrics.items() if k != names.LR]
        rate = f"  {self.images_per_s:.0f} img/s" if self.images_per_s is not None else ""
        eta = f"  ETA {names.hms(self.eta_s)}" if self.eta_s is not None else ""
        return (f"[{name}] epoch {self.epoch}/{self.epochs}  {'  '.join(shown)}  lr {self.metrics[names.LR]:.2e}"
                f"{rate}  elapsed {names.hms(self.elapsed_s)}{eta}")


def final_accuracy(history: list[dict], split: str) -> dict[str, float]:
    """The last epoch's top-1 on the evaluation split, and the best one (logged, never tabled)."""
    key = names.acc1(split)
    return {key: history[-1][key], names.best(key): max(h[key] for h in history)}
