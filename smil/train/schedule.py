"""Optimiser parameter groups, the epoch-keyed learning-rate schedule, and staged unfreezing."""

from __future__ import annotations

import math

import torch

from smil.config import OptimConfig


def learning_rate(optim: OptimConfig, epoch: int, step_fraction: float = 0.0) -> float:
    """Head learning rate at ``epoch`` (+ fraction of it done).

    The epoch-keyed table sets the base rate from each listed epoch on; linear warm-up scales the first
    ``warmup_epochs``; with ``cosine`` the rate then decays to 0 at the end of the run.
    """
    lr = optim.lr
    for start in sorted(optim.lr_schedule):
        if epoch >= start:
            lr = optim.lr_schedule[start]
    t = epoch + step_fraction
    if optim.warmup_epochs > 0 and t < optim.warmup_epochs:
        lr *= (t + 1e-3) / optim.warmup_epochs
    elif optim.cosine:
        span = max(optim.epochs - optim.warmup_epochs, 1)
        progress = min(max((t - optim.warmup_epochs) / span, 0.0), 1.0)
        lr *= 0.5 * (1.0 + math.cos(math.pi * progress))
    return lr


def parameter_groups(model: torch.nn.Module, optim: OptimConfig) -> list[dict]:
    """Backbone and head groups; the backbone's LR is the head's times ``backbone_lr_mult``."""
    inner = model.module if hasattr(model, "module") else model
    backbone = list(inner.backbone.parameters())
    ids = {id(p) for p in backbone}
    head = [p for p in inner.parameters() if id(p) not in ids]
    return [
        {"params": backbone, "name": "backbone", "lr_mult": optim.backbone_lr_mult},
        {"params": head, "name": "head", "lr_mult": 1.0},
    ]


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)


def backbone_frozen(freeze: bool, unfreeze_epoch: int, epoch: int) -> bool:
    return freeze and (unfreeze_epoch < 0 or epoch < unfreeze_epoch)


def set_backbone_trainable(model: torch.nn.Module, trainable: bool) -> None:
    inner = model.module if hasattr(model, "module") else model
    for p in inner.backbone.parameters():
        p.requires_grad_(trainable)
