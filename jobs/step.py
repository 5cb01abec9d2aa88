"""The training step and the settings that make it fast without changing the recipe.

Shared by the training loop and `bench/train_step.py`, so the benchmark measures the step that
really trains.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from kbench.spec import TrainConfig


def setup_device(device: torch.device) -> None:
    if device.type == "cuda":
        # TF32 for whatever still runs in fp32; cuDNN picks the fastest conv kernels.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True


def autocast(config: TrainConfig, device: torch.device):
    """bf16 autocast on GPUs (no gradient scaler needed, unlike fp16); fp32 on a CPU."""
    if device.type == "cuda" and config.precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def uses_channels_last(config: TrainConfig, family: str, device: torch.device) -> bool:
    return config.channels_last and family == "resnet" and device.type == "cuda"


def optimizer_kwargs(device: torch.device) -> dict:
    """Fused kernels: one launch per step for all parameters instead of one per tensor."""
    return {"fused": True} if device.type == "cuda" else {}


def train_step(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    config: TrainConfig,
    device: torch.device,
) -> torch.Tensor:
    """One optimisation step; returns the loss as a tensor (no host sync)."""
    with autocast(config, device):
        loss = F.cross_entropy(model(images), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()
    scheduler.step()
    return loss.detach()
