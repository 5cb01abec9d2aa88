"""A recipe's optimizer and learning-rate schedule: the backbone and the head each with its
own rate, linear warmup, then cosine decay to zero (or constant), stepped once per batch."""

from __future__ import annotations

import math

import torch

from kbench.jobs.models import ImageClassifier
from kbench.jobs.step import optimizer_kwargs
from kbench.spec import TrainConfig


def build_optimizer(
    config: TrainConfig, model: ImageClassifier, device: torch.device
) -> torch.optim.Optimizer:
    """Two parameter groups, backbone and head, each with its own learning rate."""
    groups = [
        {"params": list(model.encoder.parameters()), "lr": config.lr, "name": "backbone"},
        {
            "params": list(model.head.parameters()),
            "lr": config.head_lr or config.lr,
            "name": "head",
        },
    ]
    fast = optimizer_kwargs(device)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, weight_decay=config.weight_decay, **fast)
    return torch.optim.SGD(
        groups, momentum=config.momentum, weight_decay=config.weight_decay, **fast
    )


def warmup_steps(config: TrainConfig, total_steps: int, quiet: bool = False) -> int:
    """The warmup's steps: a fraction of the run's, or a count as given. A count longer than
    the run is kept, as WiSE-FT's cosine_lr keeps it: the run never leaves warmup (the study's
    500 steps on its small datasets), and the job says so."""
    if config.warmup_steps is None:
        return round(config.warmup * total_steps)
    if config.warmup_steps > total_steps and not quiet:
        print(
            f"warning: warmup_steps={config.warmup_steps} exceeds the run's {total_steps} "
            "steps: the learning rate never reaches its base (as WiSE-FT's cosine_lr)",
            flush=True,
        )
    return config.warmup_steps


def build_scheduler(config: TrainConfig, optimizer, total_steps: int):
    """Linear warmup, `base * (step + 1) / warmup` at step `step`, then cosine decay to zero
    (or constant), stepped once per batch: WiSE-FT's cosine_lr."""
    warmup = warmup_steps(config, total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
