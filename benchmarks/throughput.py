"""Pre-training and evaluation throughput, measured side by side in one run on one device.

    python benchmarks/throughput.py [--device cpu|cuda] [--batch 512] [--steps 20] [--workers 8]
                                    [--images 50000] [--no-eval] [--no-project]

Every line is a full training step (forward, backward, AdamW) of ViT-Tiny/4 with a 3-layer
decoder (the paper's CIFAR recipe, Tables 1-6, 9, 10), square segments M=2, bf16 on CUDA and
fp32 on the CPU:
  - synthetic:     RandSAC's step on a batch already on the device (the step alone);
  - dense:         the same network without any mask (what the masks cost);
  - naive peer:    the same network written with torch's nn.TransformerEncoder/Decoder and
                   additive float masks of shape (B*heads, N, N), a first implementation;
  - device data:   end to end: CIFAR-sized uint8 images kept on the device, random resized crop
                   and flip batched there (harness.stages.device_data), then the step;
  - DataLoader:    end to end: PIL RandomResizedCrop + flip in N DataLoader workers, copied to
                   the device, then the step (the path ImageNet folders take).
Then the evaluation stages at the paper's CIFAR recipe (their batch sizes on CUDA), on the same
encoder, each as its step alone and end to end, to show which is data-bound:
  - linear probe:  frozen encoder + BatchNorm/linear head on RandomResizedCrop + flip views
                   (synthetic; device data, harness.stages.linprobe.device_augment; DataLoader);
  - fine-tuning:   the whole encoder with mixup/cutmix (synthetic; DataLoader with timm's
                   RandAugment, which has no device form).
Then the peak memory of each (CUDA), and the projected device-hours of every table's
pre-training at scale `paper` (epochs x training images / the measured rate of its encoder's
size; the device-data rate for CIFAR's ViT-Tiny/4, the synthetic step for the other sizes;
DINO's multi-crop is not measured and is counted apart).
The images are random uint8 of CIFAR's shape: nothing is downloaded. No threshold is asserted.
"""
from __future__ import annotations

import argparse
import copy
import time
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from harness.plan import studies
from harness.core.catalog import dataset_info
from harness.core.config import RunConfig
from harness.science import masks, methods
from harness.science.device_transforms import DeviceAugment
from harness.science.encoder import Classifier, LinearProbe
from harness.science.pixel_loss import normalized_pixel_loss, patchify
from harness.science.transforms import finetune_transform, pretrain_transform, probe_transform
from harness.stages import linprobe
from harness.stages.data import EpochOrder
from harness.stages.device_data import DeviceSet
from harness.stages.engine import autocast
from harness.stages.finetune import criterion_and_mixup

TABLES = tuple(studies.available_studies())  # every study: a new table is projected too


def cifar_config() -> RunConfig:
    """Table 3's M=2 cell at scale paper (CIFAR10, ViT-Tiny/4, 3-layer decoder)."""
    return next(c.config for c in studies.expand(studies.load_study("table3"), "paper", controls=False)
                if c.config.segments.size == 2)


class NaivePeer(nn.Module):
    """RandSAC's masked transformer with torch's nn.Transformer layers and additive float masks."""

    def __init__(self, cfg: RunConfig):
        super().__init__()
        m, info = cfg.model, dataset_info(cfg.data.name)
        self.p, tokens = m.patch_size, (cfg.data.image_size // m.patch_size) ** 2
        self.heads, self.decoder_heads = m.num_heads, m.decoder_num_heads
        self.embed = nn.Linear(self.p ** 2 * info.channels, m.embed_dim)
        self.pos = nn.Parameter(torch.randn(1, tokens, m.embed_dim) * 0.02)
        self.query = nn.Parameter(torch.randn(1, tokens, m.embed_dim) * 0.02)
        hidden = int(m.embed_dim * m.mlp_ratio)
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(
            m.embed_dim, m.num_heads, hidden, dropout=0.0, activation="gelu", batch_first=True, norm_first=True),
            m.depth, enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(nn.TransformerDecoderLayer(
            m.embed_dim, m.decoder_num_heads, hidden, dropout=0.0, activation="gelu", batch_first=True,
            norm_first=True), m.decoder_depth)
        self.pred = nn.Linear(m.embed_dim, self.p ** 2 * info.channels)

    @staticmethod
    def additive(allowed: torch.Tensor, heads: int, dtype: torch.dtype) -> torch.Tensor:
        mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, float("-inf"))
        return mask.repeat_interleave(heads, dim=0)  # (B * heads, N, N)

    def loss(self, imgs: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
        dtype = torch.get_autocast_dtype("cuda") if imgs.is_cuda and torch.is_autocast_enabled() else imgs.dtype
        x = self.embed(patchify(imgs, self.p)) + self.pos
        memory = self.encoder(x, mask=self.additive(masks.source_mask(ranks), self.heads, dtype))
        out = self.decoder(self.query.expand(len(imgs), -1, -1), memory,
                           tgt_mask=self.additive(masks.target_mask(ranks), self.decoder_heads, dtype),
                           memory_mask=self.additive(masks.memory_mask(ranks), self.decoder_heads, dtype))
        return normalized_pixel_loss(self.pred(out), imgs, ranks >= 1, self.p)[0]


class PILImages(Dataset):
    """uint8 (N, H, W, C) arrays read as PIL images through a torchvision transform."""

    def __init__(self, images: np.ndarray, transform: Callable):
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i])), 0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def rate(step: Callable[[], None], batch: int, steps: int, device: torch.device, warmup: int = 3) -> tuple[float, float]:
    """(images per second, peak device memory in GiB) of `step` over `steps` calls after `warmup`."""
    for _ in range(warmup):
        step()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if device.type == "cuda" else float("nan")
    return batch * steps / elapsed, peak


class Bench:
    """The RandSAC method of a config, its optimizer, and the steps measured on it."""

    def __init__(self, cfg: RunConfig, device: torch.device, batch: int):
        torch.manual_seed(0)
        self.cfg, self.device, self.batch = cfg, device, batch
        self.method = methods.method(cfg.method)(cfg)
        self.model = self.method.build().to(device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, fused=device.type == "cuda")
        info = dataset_info(cfg.data.name)
        self.imgs = torch.randn(batch, info.channels, cfg.data.image_size, cfg.data.image_size, device=device)

    def train(self, loss_of_batch: Callable[[], torch.Tensor], model: nn.Module | None = None) -> Callable[[], None]:
        optimizer = self.optimizer if model is None else torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step():
            with autocast(self.device):
                loss = loss_of_batch()
            loss = loss[0] if isinstance(loss, tuple) else loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return step

    def synthetic(self) -> Callable[[], None]:
        return self.train(lambda: self.method.loss((self.imgs, None), 0))

    def dense(self) -> Callable[[], None]:
        model = self.model

        def loss():
            ranks = torch.ones(self.batch, model.query_embed.shape[1], dtype=torch.long, device=self.device)
            memory = model.encoder(self.imgs)
            x = model.query_embed.expand(self.batch, -1, -1)
            for block in model.decoder:
                x = block(x, memory, None, None)
            return normalized_pixel_loss(model.decoder_pred(model.decoder_norm(x)), self.imgs, ranks >= 1,
                                         self.cfg.model.patch_size)
        return self.train(loss)

    def naive(self) -> Callable[[], None]:
        peer = NaivePeer(self.cfg).to(self.device)
        serializer = self.method.serializer
        return self.train(lambda: peer.loss(self.imgs, serializer(self.batch).to(self.device)), peer)

    def device_data(self, images: np.ndarray) -> Callable[[], None]:
        batches = device_batches(images, self.method.device_augment(), self.batch, self.device)
        return self.train(lambda: self.method.loss(batches(), 0))

    def dataloader(self, images: np.ndarray, workers: int) -> Callable[[], None]:
        pre = self.cfg.pretrain
        transform = pretrain_transform(dataset_info(self.cfg.data.name), self.cfg.data.image_size, pre.crop_scale,
                                       pre.hflip)
        batches = loader_batches(images, transform, self.batch, workers, self.device)
        return self.train(lambda: self.method.loss(batches(), 0))


def device_batches(images: np.ndarray, augment: DeviceAugment, batch: int,
                   device: torch.device) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    """Batches of `images` kept on the device and augmented there, epoch after epoch."""
    data = DeviceSet(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                     torch.zeros(len(images), dtype=torch.long), augment, device)
    batches = iter(())
    epoch = 0

    def next_batch():
        nonlocal batches, epoch
        for item in batches:
            return item
        epoch += 1
        batches = data.batches(EpochOrder(len(data), 0, epoch).order(), batch, 0, epoch, 0)
        return next(batches)
    return next_batch


def loader_batches(images: np.ndarray, transform: Callable, batch: int, workers: int,
                   device: torch.device) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    """Batches of PIL `transform`s made in `workers` DataLoader workers, copied to the device."""
    loader = DataLoader(PILImages(images, transform), batch_size=batch, shuffle=True, drop_last=True,
                        num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    batches = iter(loader)

    def next_batch():
        nonlocal batches
        try:
            imgs, labels = next(batches)
        except StopIteration:
            batches = iter(loader)
            imgs, labels = next(batches)
        return imgs.to(device, non_blocking=True), labels.to(device, non_blocking=True)
    return next_batch


class Evaluation:
    """The linear probe's and fine-tuning's training steps at the paper's CIFAR recipe, on a copy
    of a Bench's encoder; `batches` gives (images, labels) on the device."""

    def __init__(self, bench: Bench):
        self.bench, self.cfg = bench, bench.cfg
        self.info = dataset_info(self.cfg.data.name)

    def encoder(self) -> nn.Module:
        return copy.deepcopy(self.bench.model.encoder)

    def synthetic(self, batch: int) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
        size = self.cfg.eval_size
        imgs = torch.randn(batch, self.info.channels, size, size, device=self.bench.device)
        labels = torch.randint(0, self.info.num_classes, (batch,), device=self.bench.device)
        return lambda: (imgs, labels)

    def probe(self, batches: Callable[[], tuple[torch.Tensor, torch.Tensor]]) -> Callable[[], None]:
        probe = LinearProbe(self.encoder(), self.info.num_classes).to(self.bench.device)

        def loss():
            imgs, labels = batches()
            return nn.functional.cross_entropy(probe(imgs), labels)
        return self.bench.train(loss, probe.head)

    def finetune(self, batches: Callable[[], tuple[torch.Tensor, torch.Tensor]]) -> Callable[[], None]:
        opt = self.cfg.finetune
        model = Classifier(self.encoder(), self.info.num_classes).to(self.bench.device)
        criterion, mixup = criterion_and_mixup(opt, self.info.num_classes)

        def loss():
            imgs, labels = batches()
            if mixup is not None:
                imgs, labels = mixup(imgs, labels)
            return criterion(model(imgs), labels)
        return self.bench.train(loss, model)

    def measure(self, images: np.ndarray, workers: int, steps: int, cuda: bool, batch: int) -> dict:
        """name -> (img/s, peak GiB, the synthetic rate it is compared with)."""
        device, size, opt = self.bench.device, self.cfg.eval_size, self.cfg.finetune
        probe_batch, tune_batch = (self.cfg.linprobe.batch_size, opt.batch_size) if cuda else (batch, batch)
        probe_batch = min(probe_batch, len(images))
        out = {}
        probe_rate = rate(self.probe(self.synthetic(probe_batch)), probe_batch, steps, device)
        out[f"linear probe, synthetic (batch {probe_batch})"] = (*probe_rate, probe_rate[0])
        out["linear probe, device data"] = (*rate(self.probe(device_batches(
            images, linprobe.device_augment(self.info, size), probe_batch, device)), probe_batch, steps, device),
            probe_rate[0])
        out[f"linear probe, DataLoader, {workers} workers"] = (*rate(self.probe(loader_batches(
            images, probe_transform(self.info, size), probe_batch, workers, device)), probe_batch, steps, device),
            probe_rate[0])
        tune_rate = rate(self.finetune(self.synthetic(tune_batch)), tune_batch, steps, device)
        out[f"fine-tuning, synthetic (batch {tune_batch})"] = (*tune_rate, tune_rate[0])
        out[f"fine-tuning, DataLoader, {workers} workers, {opt.rand_augment}"] = (*rate(self.finetune(loader_batches(
            images, finetune_transform(self.info, size, opt.rand_augment, opt.crop_scale, opt.hflip), tune_batch,
            workers, device)), tune_batch, steps, device), tune_rate[0])
        return out


def projection(rates: dict[tuple, float], measure: Callable[[RunConfig], float]) -> list[tuple[str, int, float, int]]:
    """(table, its distinct pre-training runs at scale paper, device-hours of those measured, how
    many were not measured) for every table."""
    out = []
    for table in TABLES:
        runs = [r for r in studies.plan([studies.load_study(table)], "paper", controls=False).values()
                if r.stage == "pretrain"]
        seconds, unmeasured = 0.0, 0
        for run in runs:
            key = (run.config.model.model_dump_json(), run.config.data.image_size, run.config.method)
            if key not in rates:
                rates[key] = measure(run.config)
            n = run.config.data.train_subset or dataset_info(run.config.data.name).train_size
            if rates[key] != rates[key]:  # NaN: not measured (DINO)
                unmeasured += 1
                continue
            seconds += run.config.pretrain.epochs * n / rates[key]
        out.append((table, len(runs), seconds / 3600, unmeasured))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=None, help="default: 512 on cuda, 32 on cpu")
    ap.add_argument("--steps", type=int, default=None, help="default: 50 on cuda, 3 on cpu")
    ap.add_argument("--workers", type=int, default=8, help="DataLoader workers of the PIL path")
    ap.add_argument("--images", type=int, default=None, help="default: 50,000 on cuda, 2,048 on cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-project", dest="project", action="store_false")
    ap.add_argument("--no-eval", dest="eval", action="store_false", help="skip the evaluation stages")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    cuda = device.type == "cuda"
    batch, steps = args.batch or (512 if cuda else 32), args.steps or (50 if cuda else 3)
    where = torch.cuda.get_device_name() if cuda else f"cpu, {args.threads} threads"
    cfg = cifar_config().model_copy(update={"device": device.type})
    images = np.random.default_rng(0).integers(0, 256, (args.images or (50_000 if cuda else 2_048), 32, 32, 3),
                                               dtype=np.uint8)
    print(f"# pre-training throughput, {where}, {'bf16 autocast' if cuda else 'fp32'}, batch {batch}, "
          f"{steps} steps; ViT-Tiny/4 + 3-layer decoder, 32x32x3, square segments M=2")
    bench = Bench(cfg, device, batch)
    measured = {
        "synthetic": rate(bench.synthetic(), batch, steps, device),
        "dense (no masks)": rate(bench.dense(), batch, steps, device),
        "naive peer": rate(bench.naive(), batch, steps, device),
        "device data": rate(bench.device_data(images), batch, steps, device),
        f"DataLoader, {args.workers} workers": rate(bench.dataloader(images, args.workers), batch, steps, device),
    }
    synthetic = measured["synthetic"][0]
    print(f"{'path':<24} {'img/s':>10} {'/ synthetic':>12} {'peak GiB':>9}")
    for name, (ips, peak) in measured.items():
        print(f"{name:<24} {ips:>10.1f} {ips / synthetic:>12.3f} {peak:>9.2f}")
    print(f"masked / dense: {synthetic / measured['dense (no masks)'][0]:.3f}; "
          f"synthetic / naive peer: {synthetic / measured['naive peer'][0]:.2f}x; "
          f"device data / synthetic: {measured['device data'][0] / synthetic:.3f}")
    if args.eval:
        print(f"\n# evaluation stages at the paper's CIFAR recipe, {where}: each step alone (synthetic) and "
              f"end to end")
        print(f"{'path':<60} {'img/s':>10} {'/ synthetic':>12} {'peak GiB':>9}")
        for name, (ips, peak, alone) in Evaluation(bench).measure(images, args.workers, steps, cuda, batch).items():
            print(f"{name:<60} {ips:>10.1f} {ips / alone:>12.3f} {peak:>9.2f}")
    if not args.project:
        return
    rates = {(cfg.model.model_dump_json(), cfg.data.image_size, cfg.method): measured["device data"][0]}

    def measure(run_cfg: RunConfig) -> float:  # another encoder size: its synthetic step
        if run_cfg.method == "dino":  # multi-crop views: not measured here
            return float("nan")
        b = max(8, batch * 32 * 32 // run_cfg.data.image_size ** 2)
        return rate(Bench(run_cfg.model_copy(update={"device": device.type}), device, b).synthetic(), b,
                    max(2, steps // 5), device)[0]

    unit = "GPU-hours" if cuda else "CPU-hours"
    print(f"\n# projected pre-training {unit} at scale paper ({where}): epochs x images / measured img/s")
    print(f"{'table':<8} {'pre-trainings':>13} {unit:>10}")
    for table, n, hours, unmeasured in projection(rates, measure):
        print(f"{table:<8} {n:>13} {hours:>10.1f}" + (f"  + {unmeasured} DINO run(s) not measured" if unmeasured else ""))


if __name__ == "__main__":
    main()
