"""The job's processes: rank, world size and device from torchrun's environment, CUDA checked
where GPUs were given (no silent CPU fallback), and values averaged over the processes."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from kbench.command import GPUS_ENV
from kbench.errors import ConfigError
from kbench.storage import Store


@dataclass(frozen=True)
class Job:
    """This process's part of the job: the pair it trains, where its records go, its rank."""

    store: Store
    run_id: str
    pair: str
    rank: int
    world: int
    device: torch.device
    until: int | None = None  # a sweep's trial: the epoch its rung ends at (kbench.halving)


def setup_distributed() -> tuple[int, int, torch.device]:
    """Rank, world size and device from torchrun's environment (one process without it)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    gpus = int(os.environ.get(GPUS_ENV) or 0)  # what the pod was given (none locally)
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    elif gpus:  # no silent CPU fallback
        raise ConfigError(cuda_unusable(gpus))
    else:
        device = torch.device("cpu")
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def cuda_unusable(gpus: int) -> str:
    """Why CUDA cannot be used, in one line: a driver older than the image's CUDA, no device
    visible, or a torch built without CUDA."""
    built = torch.version.cuda
    if built is None:
        why = "this torch is built without CUDA"
    else:
        try:
            torch.cuda.init()
            why = f"no CUDA device is visible ({torch.cuda.device_count()} found)"
        except Exception as e:  # the driver's own words, e.g. "driver ... is too old"
            why = " ".join(str(e).split())
    return (
        f"this pod was given {gpus} GPU(s) but CUDA is unusable: {why}; the image's torch "
        f"{torch.__version__} is built for CUDA {built}: use an image whose CUDA the nodes' "
        "driver supports (nvidia-smi shows the driver's CUDA)"
    )


def mean_across_processes(value: torch.Tensor) -> float:
    if dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value)
        value /= dist.get_world_size()
    return float(value)
