"""Stage 1: pre-training (appendix B.4), RandSAC or one of Table 7's baselines (MAE, DINO).

AdamW (no weight decay on norms and biases), lr = base_lr * batch / 256 with a per-iteration
linear warm-up and cosine decay; the method (harness.science.methods) gives the model, the
augmentation and the loss of a batch; on CUDA, datasets that fit are kept and augmented on the
device (harness.stages.device_data). Saves the encoder, what evaluation stages read.
"""
from __future__ import annotations

from harness.core import metrics as names
from harness.stages import device_data, engine
from harness.stages.checkpoint import atomic_save
from harness.stages.context import StageContext
from harness.stages.data import sample_images


def run(ctx: StageContext) -> dict[str, float]:
    cfg = ctx.cfg
    engine.seed_everything(cfg.seed)
    method = ctx.method()
    train, _, _ = ctx.splits(method.transform(), None)
    augment = method.device_augment()
    if device_data.wanted(cfg, ctx.device, augment):  # the images and their augmentation on the device
        train = device_data.DeviceSet.of(train, augment, ctx.device)
    model = method.build().to(ctx.device)
    if cfg.compile:  # in place: the state dict (checkpoints, the saved encoder) keeps its keys
        model.compile()
    fused = {"fused": True} if cfg.compile and cfg.pretrain.optimizer == "adamw" else {}
    optimizer, schedule = engine.optimizer_and_schedule(model, cfg.pretrain, len(train), **fused)
    history = engine.fit(ctx, engine.Task(
        train_set=train, opt=cfg.pretrain, module=model, optimizer=optimizer, schedule=schedule,
        loss=method.loss, before_step=method.before_step, after_step=method.after_step,
        saved={"model": model, "optimizer": optimizer, "schedule": schedule}))
    if ctx.dist.is_main:
        atomic_save(model.encoder.state_dict(), ctx.run.encoder)
        picture = method.reconstruction(sample_images(cfg, 4).to(ctx.device), ctx.run.reconstruction)
        if picture is not None:
            ctx.log_artifact(picture)
    ctx.dist.barrier()
    return {k: v for k, v in history[-1].items() if k in (names.LOSS, names.LOSS_FLOOR, names.LOSS_RATIO)}
