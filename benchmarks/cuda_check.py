"""Checks that need a GPU: the CUDA path of the model and of every stage, under bf16 autocast.

    python benchmarks/cuda_check.py

1. The autoregressive contract on CUDA in bf16: perturbing segment s_k leaves the predictions
   of s_1..s_k bit-identical and changes s_(k+1) (the masks are exact in any precision).
2. Pre-train (data on the device; compiled), linear probe (cached features; augmented, data on
   the device) and fine-tune (RandAugment) at scale tiny run end to end on CUDA in-process.
Prints what it saw; exits non-zero on the first failed check.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from harness.core.layout import RunFolder
from harness.core.config import ModelConfig, SegmentConfig, dotted_to_nested
from harness.run.runner import stage_module
from harness.stages.context import StageContext
from harness.stages.engine import autocast
from harness.science.model import RandSAC
from harness.science.segments import Serializer
from harness.plan.studies import expand, load_study


class Printer:
    def log(self, metrics, step):
        print(f"    epoch {step}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))

    def log_artifact(self, path):
        print(f"    artifact {path}")

    def log_input(self, **dataset):
        print(f"    input {dataset}")


def contract(device: torch.device) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(patch_size=4, embed_dim=192, depth=12, num_heads=3, decoder_depth=3, decoder_num_heads=3)
    model = RandSAC(cfg, 32, 3).to(device).eval()
    ranks = Serializer(SegmentConfig(size=2), 8)(4, torch.Generator().manual_seed(0)).to(device)
    imgs = torch.randn(4, 3, 32, 32, device=device)
    with torch.no_grad(), autocast(device):
        base = model(imgs, ranks)
        for k in (0, 5, 14, 15):
            token = (ranks == k).reshape(4, 8, 8).repeat_interleave(4, 1).repeat_interleave(4, 2)
            out = model(imgs + 3 * torch.randn_like(imgs) * token[:, None], ranks)
            diff = (out - base).abs().amax(-1)
            leak = diff[ranks <= k].max().item()
            nxt = diff[ranks == k + 1].min().item() if k < 15 else float("nan")
            print(f"  segment rank {k:2d}: max change at ranks <= k = {leak:.3g}, min change at rank k+1 = {nxt:.3g}")
            assert leak == 0.0, "information leaked to an earlier or the same segment"
            assert k == 15 or nxt > 0, "the next segment does not depend on segment k"


def stages() -> None:
    def tiny(**dotted):
        return expand(load_study("table3"), "tiny", dotted_to_nested({"device": "cuda", **dotted}))[1].config

    cfg = tiny()
    root = Path(tempfile.mkdtemp())
    pretrained = RunFolder(root / "pretrain")
    for i, (name, stage, run_cfg, parent) in enumerate((
            ("pretrain (data on the device)", "pretrain", cfg, None),
            ("linear probe (cached features)", "linprobe", cfg, pretrained),
            ("linear probe (augmented, data on the device)", "linprobe", tiny(**{"linprobe.augment": True}),
             pretrained),
            ("fine-tune (DataLoader, RandAugment)", "finetune",
             tiny(**{"finetune.rand_augment": "rand-m9-mstd0.5-inc1"}), pretrained),
            ("pretrain (compiled)", "pretrain", tiny(compile=True), None))):
        start = time.perf_counter()
        print(f"  {name}:")
        folder = pretrained if i == 0 else RunFolder(root / f"{i}-{stage}")  # the first is the others' parent
        result = stage_module(stage).run(StageContext(run_cfg, folder, Printer(), parent))
        print(f"    -> {result} in {time.perf_counter() - start:.1f}s")


def main() -> None:
    assert torch.cuda.is_available(), "no CUDA device"
    device = torch.device("cuda")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    print("1. autoregressive contract, ViT-Tiny, bf16 autocast")
    contract(device)
    print("2. stages on CUDA (scale tiny)")
    stages()
    print("cuda checks passed")


if __name__ == "__main__":
    main()
