"""Pre-training step throughput of RandSAC against its cost floor, measured side by side.

    python benchmarks/throughput.py [--device cpu|cuda] [--batch 64] [--steps 10] [--threads 2]

For each size (ViT-Tiny of the paper's CIFAR recipe, and the `smoke` scale's model) it times a
full step (forward + backward + AdamW) of
  - randsac: the masked transformer with a fresh random square serialization (M=2) per image,
  - dense:   the same encoder-decoder with no masks at all (the floor: masks should be free),
and the share of the RandSAC step spent sampling serializations and building the three masks.
It prints ratios measured in one run on one machine; no thresholds are asserted.
"""
from __future__ import annotations

import argparse
import time

import torch

from harness.science import masks
from harness.core.config import ModelConfig, SegmentConfig
from harness.stages.engine import autocast
from harness.science.model import RandSAC, normalized_pixel_loss
from harness.scales import preset
from harness.science.segments import Serializer

SIZES = {
    "vit-tiny": ModelConfig(patch_size=4, embed_dim=192, depth=12, num_heads=3, decoder_depth=3, decoder_num_heads=3),
    "smoke": ModelConfig(**preset("smoke", "cifar10")["model"]),
}


def dense_loss(model: RandSAC, imgs: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
    """The same network and loss with every mask removed (full attention everywhere)."""
    memory = model.encoder(imgs)
    x = model.query_embed.expand(imgs.shape[0], -1, -1)
    for block in model.decoder:
        x = block(x, memory, None, None)
    return normalized_pixel_loss(model.decoder_pred(model.decoder_norm(x)), imgs, ranks >= 1, model.cfg.patch_size)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(model, step, batch, device, steps, warmup=3) -> float:
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            start = time.perf_counter()
        step()
    sync(device)
    return batch * steps / (time.perf_counter() - start)


def bench(name: str, cfg: ModelConfig, device: torch.device, batch: int, steps: int, channels: int) -> dict:
    torch.manual_seed(0)
    model = RandSAC(cfg, 32, channels).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    imgs = torch.randn(batch, channels, 32, 32, device=device)
    serializer = Serializer(SegmentConfig(size=2), 32 // cfg.patch_size)

    def train_step(loss_fn):
        def step():
            with autocast(device):
                loss = loss_fn()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return step

    fixed_ranks = serializer(batch).to(device)
    randsac = train_step(lambda: model.loss(imgs, serializer(batch).to(device)))
    dense = train_step(lambda: dense_loss(model, imgs, fixed_ranks))

    def build_only():
        ranks = serializer(batch).to(device)
        for make in (masks.source_mask, masks.target_mask, masks.memory_mask):
            masks.for_heads(make(ranks))

    # interleave the two measurements so that drifts in machine load hit both alike
    r1, d1 = time_steps(model, randsac, batch, device, steps), time_steps(model, dense, batch, device, steps)
    r2, d2 = time_steps(model, randsac, batch, device, steps), time_steps(model, dense, batch, device, steps)
    masks_per_s = time_steps(model, build_only, batch, device, steps * 5)
    randsac_ips, dense_ips = max(r1, r2), max(d1, d2)
    return {"size": name, "randsac img/s": randsac_ips, "dense img/s": dense_ips,
            "randsac/dense": randsac_ips / dense_ips, "serialization+masks share": randsac_ips / masks_per_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=None, help="default: 64 on cpu, 512 on cuda")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--channels", type=int, default=3)
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    batch = args.batch or (512 if device.type == "cuda" else 64)
    precision = "bf16 autocast" if device.type == "cuda" else "fp32"
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu, {args.threads} threads"
    print(f"# pre-training step throughput, {where}, {precision}, batch {batch}, 32x32x{args.channels}, "
          f"square segments M=2 (16 segments)")
    print(f"{'size':<10} {'randsac img/s':>14} {'dense img/s':>12} {'randsac/dense':>14} {'serialization+masks share':>26}")
    for name, cfg in SIZES.items():
        r = bench(name, cfg, device, batch, args.steps, args.channels)
        print(f"{r['size']:<10} {r['randsac img/s']:>14.1f} {r['dense img/s']:>12.1f} {r['randsac/dense']:>14.3f} "
              f"{r['serialization+masks share']:>25.1%}")


if __name__ == "__main__":
    main()
