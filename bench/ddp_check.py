"""One DDP training step of kbench's step over NCCL (or gloo on a CPU), under torchrun: the
collective path a multi-GPU pair takes, checked on however many GPUs a machine has (the
trainer itself only starts a process group for more than one process).

    torchrun --nproc-per-node 1 bench/ddp_check.py     # on a GPU machine
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from kbench.jobs.models import build_model
from kbench.jobs.optim import build_optimizer, build_scheduler
from kbench.jobs.step import setup_device, train_step, uses_channels_last
from kbench.spec import TrainConfig, load_recipe


def main() -> None:
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank()
    device = torch.device("cuda", int(os.environ["LOCAL_RANK"])) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    setup_device(device)
    for name in ("resnet-tiny", "clip-tiny"):
        recipe = {**load_recipe(name), "dataset": "synthetic", "model": name, "compile": True}
        config = TrainConfig.from_dict(recipe)
        model = build_model(config, ["a", "b"], ["{}"], device).train()
        channels_last = uses_channels_last(config, "resnet" if "resnet" in name else "clip", device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = build_optimizer(config, model, device)
        scheduler = build_scheduler(config, optimizer, total_steps=10)
        wrapped = torch.compile(DistributedDataParallel(model))
        images = torch.randn(8, 3, 32, 32, device=device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = torch.randint(0, 2, (8,), device=device)
        losses = [
            train_step(wrapped, images, labels, optimizer, scheduler, config, device)
            for _ in range(3)
        ]
        total = torch.stack(losses).sum()
        shown = [round(x.item(), 3) for x in losses]
        dist.all_reduce(total)
        print(
            f"rank {rank}: {name} on {device} over {dist.get_backend()}, world "
            f"{dist.get_world_size()}, bf16 autocast {cuda and config.precision == 'bf16'}, "
            f"channels_last {channels_last}, compiled, losses {shown}, "
            f"all_reduce {total.item():.3f}",
            flush=True,
        )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
