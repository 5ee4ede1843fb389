"""The stages of a cell, declared once, and the config section each one reads.

A stage is a name, the model of its config section (`RunConfig.<name>`), the module that runs
it (`harness.stages.<name>`: its `run(ctx)` trains and returns metrics) and, for an evaluation,
the table metric it reports. Everything else that lists stages (the run config's sections, the
Snakefile's rules, metric names, the metrics a study may ask for, the tables' labels, the
stages a method runs) is derived from `DECLARED`: adding a stage is one line here, its config
model and its module (and its recipe per scale in harness.plan.scales).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    """A config section: unknown keys are errors, values are frozen once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class OptimConfig(Strict):
    epochs: int = Field(gt=0)
    warmup_epochs: float = Field(0, ge=0)
    batch_size: int = Field(gt=0)
    base_lr: float = Field(gt=0)  # lr = base_lr * batch_size / 256
    min_lr: float = Field(0.0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    optimizer: Literal["adamw", "lars", "sgd"] = "adamw"
    betas: tuple[float, float] = (0.9, 0.95)
    momentum: float = 0.9  # lars / sgd

    @property
    def lr(self) -> float:
        return self.base_lr * self.batch_size / 256


class PretrainConfig(OptimConfig):
    norm_pix_loss: bool = True
    crop_scale: tuple[float, float] | None = (0.2, 1.0)  # RandomResizedCrop scale; None: no crop
    hflip: float = Field(0.5, ge=0, le=1)


class LinprobeConfig(OptimConfig):
    augment: bool = True  # MAE's RandomResizedCrop+flip; False: features computed once and cached


class FinetuneConfig(OptimConfig):
    layer_decay: float = Field(0.75, gt=0, le=1)
    drop_path: float = Field(0.1, ge=0, lt=1)
    mixup: float = Field(0.8, ge=0)
    cutmix: float = Field(1.0, ge=0)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    rand_augment: str | None = None  # timm auto_augment string, e.g. "rand-m9-mstd0.5-inc1"
    crop_scale: tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop scale (timm's default)
    hflip: float = Field(0.5, ge=0, le=1)


@dataclass(frozen=True)
class Stage:
    name: str  # also its config section and its module, harness.stages.<name>
    config: type[OptimConfig]
    title: str  # how prose names it: "linear probe"
    metric: str | None = None  # the table metric it reports (evaluations only): "lin"
    label: str | None = None  # how a table prints that metric: "LIN"
    # Snakemake starts the ready job of the highest priority first (its own tie-break prefers jobs
    # with inputs, i.e. evaluations): pre-training first, then the longer evaluation, so that no long
    # pre-training starts last and runs alone at the end (docs/findings.md, ten tables at smoke)
    priority: int = 0

    @property
    def module(self) -> str:
        return f"harness.stages.{self.name}"

    @property
    def evaluates(self) -> bool:
        return self.metric is not None


DECLARED: tuple[Stage, ...] = (  # in the order they run
    Stage("pretrain", PretrainConfig, "pre-training", priority=2),
    Stage("linprobe", LinprobeConfig, "linear probe", metric="lin", label="LIN", priority=0),
    Stage("finetune", FinetuneConfig, "fine-tuning", metric="ft", label="FT", priority=1),
)
STAGES: tuple[str, ...] = tuple(s.name for s in DECLARED)
EVALUATIONS: tuple[str, ...] = tuple(s.name for s in DECLARED if s.evaluates)
PRETRAIN: str = next(s.name for s in DECLARED if not s.evaluates)  # the stage the evaluations read
BY_METRIC: dict[str, Stage] = {s.metric: s for s in DECLARED if s.metric}


def declared(name: str) -> Stage:
    for stage in DECLARED:
        if stage.name == name:
            return stage
    raise ValueError(f"unknown stage {name!r}; stages are {', '.join(STAGES)}")
