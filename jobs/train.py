"""Fine-tune one dataset x model pair and write its records to storage.

The pair's resolved config is read from the store (`runs/<run>/<pair>/config.json`, written at
submit time), so the pod, the local backend and a hand-run process all train the same thing:

    torchrun --standalone --nproc-per-node 2 -m kbench.jobs.train --store S --run-id R --pair P
    python -m kbench.jobs.train --store S --run-id R --pair P        # one process

Epoch 0 evaluates the model before training (for CLIP: its zero-shot head); then every epoch
trains and evaluates. Only rank 0 writes.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset

from kbench.errors import JOB_ERROR_EXIT_CODE, JOB_ERROR_PREFIX, ConfigError
from kbench.jobs.datasets import build_splits
from kbench.jobs.metrics import EvalAccumulator
from kbench.jobs.models import ImageClassifier, build_model
from kbench.jobs.recorder import Recorder
from kbench.registry import dataset_info, model_info
from kbench.runs import load_config
from kbench.spec import TrainConfig
from kbench.storage import open_store


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rank, world, device = setup_distributed()
    store = open_store(args.store)
    config = load_config(store, args.run_id, args.pair)
    torch.manual_seed(config.seed + rank)  # different augmentations per process

    info = model_info(config.model)
    splits = build_splits(config, info)
    model = build_model(config, splits.classes, splits.templates, device)
    train_loader, eval_loader = build_loaders(config, splits, rank, world, device)
    steps = len(train_loader)
    optimizer = build_optimizer(config, model)
    scheduler = build_scheduler(config, optimizer, total_steps=config.epochs * steps)
    ddp = DistributedDataParallel(model) if world > 1 else model

    headline = dataset_info(config.dataset).headline
    recorder = Recorder(store, args.run_id, args.pair, enabled=rank == 0)
    base = {
        "split": splits.eval_split,
        "headline_metric": headline,
        "world_size": world,
        "gpus": world if device.type == "cuda" else 0,
    }
    status = {"epochs": config.epochs, "steps": steps}

    if info.family == "clip":  # epoch 0: the zero-shot head, untrained
        recorder.progress(
            force=True, phase="eval", epoch=0, step=0, images_per_s=0.0, eta_s=None, **status
        )
        metrics = evaluate(model, eval_loader, len(splits.classes), device)
        recorder.epoch(
            {
                **base,
                **metrics,
                "epoch": 0,
                "headline": metrics[headline],
                "train_loss": None,
                "lr": None,
                "epoch_seconds": 0.0,
                "images_per_s": 0.0,
            }
        )

    train_seconds = 0.0
    for epoch in range(1, config.epochs + 1):
        train_loader.sampler.set_epoch(epoch)
        model.train()
        started, loss_sum = time.perf_counter(), torch.zeros((), device=device)
        for step, (images, labels) in enumerate(train_loader, start=1):
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            loss = F.cross_entropy(ddp(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach()

            elapsed = time.perf_counter() - started
            images_per_s = step * config.batch_size / elapsed
            left = (config.epochs - epoch) * steps + steps - step
            recorder.progress(
                phase="train",
                epoch=epoch,
                step=step,
                images_per_s=images_per_s,
                eta_s=left * config.batch_size / images_per_s,
                **status,
            )
        epoch_seconds = time.perf_counter() - started
        train_seconds += epoch_seconds
        train_loss = mean_across_processes(loss_sum / steps)

        recorder.progress(
            force=True,
            phase="eval",
            epoch=epoch,
            step=steps,
            images_per_s=steps * config.batch_size / epoch_seconds,
            eta_s=None,
            **status,
        )
        metrics = evaluate(model, eval_loader, len(splits.classes), device)
        recorder.epoch(
            {
                **base,
                **metrics,
                "epoch": epoch,
                "headline": metrics[headline],
                "train_loss": train_loss,
                "lr": optimizer.param_groups[0]["lr"],
                "epoch_seconds": epoch_seconds,
                "images_per_s": steps * config.batch_size / epoch_seconds,
            }
        )

    recorder.progress(
        force=True,
        phase="done",
        epoch=config.epochs,
        step=steps,
        images_per_s=config.epochs * steps * config.batch_size / train_seconds,
        eta_s=0.0,
        **status,
    )
    recorder.result(summarize(args.pair, config, recorder.epochs, model, train_seconds, base))
    if world > 1:
        dist.destroy_process_group()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m kbench.jobs.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--store", required=True, help="storage URI: s3://bucket/prefix or a dir")
    parser.add_argument("--run-id", required=True, help="run id")
    parser.add_argument("--pair", required=True, help="pair name, <dataset>_<model>")
    return parser.parse_args(argv)


def setup_distributed() -> tuple[int, int, torch.device]:
    """Rank, world size and device from torchrun's environment (one process without it)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def build_loaders(config: TrainConfig, splits, rank: int, world: int, device: torch.device):
    if config.batch_size % world:
        raise ConfigError(
            f"batch_size {config.batch_size} does not split evenly over {world} processes"
        )
    per_process = config.batch_size // world
    if per_process > len(splits.train) // world:
        raise ConfigError(
            f"batch_size {config.batch_size} is larger than the {len(splits.train)} training "
            "samples: lower batch_size or train_limit"
        )
    common = {
        "num_workers": config.workers,
        "pin_memory": device.type == "cuda",
        "persistent_workers": config.workers > 0,
    }
    # Training: a shuffled, equal-sized shard per process (drop_last keeps steps in lockstep).
    sampler = DistributedSampler(
        splits.train, num_replicas=world, rank=rank, shuffle=True, seed=config.seed, drop_last=True
    )
    train = DataLoader(
        splits.train, batch_size=per_process, sampler=sampler, drop_last=True, **common
    )
    # Eval: disjoint strided shards without padding, so each sample is counted exactly once.
    shard = Subset(splits.eval, range(rank, len(splits.eval), world))
    evaluation = DataLoader(shard, batch_size=per_process, shuffle=False, **common)
    return train, evaluation


def build_optimizer(config: TrainConfig, model: ImageClassifier) -> torch.optim.Optimizer:
    """Two parameter groups, backbone and head, each with its own learning rate."""
    groups = [
        {"params": list(model.encoder.parameters()), "lr": config.lr, "name": "backbone"},
        {
            "params": list(model.head.parameters()),
            "lr": config.head_lr or config.lr,
            "name": "head",
        },
    ]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    return torch.optim.SGD(groups, momentum=config.momentum, weight_decay=config.weight_decay)


def warmup_steps(config: TrainConfig, total_steps: int) -> int:
    if config.warmup_steps is None:
        return round(config.warmup * total_steps)
    if config.warmup_steps > total_steps:
        print(
            f"warning: warmup_steps={config.warmup_steps} exceeds the run's {total_steps} "
            f"steps; clamped to {total_steps}",
            flush=True,
        )
    return min(config.warmup_steps, total_steps)


def build_scheduler(config: TrainConfig, optimizer, total_steps: int):
    """Linear warmup, then cosine decay to zero (or constant), stepped once per batch."""
    warmup = warmup_steps(config, total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def evaluate(
    model: ImageClassifier, loader: DataLoader, num_classes: int, device: torch.device
) -> dict[str, float | int]:
    model.eval()
    accumulator = EvalAccumulator(num_classes, device)
    for images, labels in loader:
        images = images.to(device, non_blocking=True)
        accumulator.update(model(images), labels.to(device, non_blocking=True))
    accumulator.all_reduce()
    return accumulator.compute()


def mean_across_processes(value: torch.Tensor) -> float:
    if dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value)
        value /= dist.get_world_size()
    return float(value)


def summarize(pair, config, epochs, model, train_seconds, base) -> dict:
    scored = [r for r in epochs if not math.isnan(r["headline"])] or epochs  # NaN: diverged
    best = max(scored, key=lambda r: r["headline"])
    zero_shot = next((r["headline"] for r in epochs if r["epoch"] == 0), None)
    return {
        "pair": pair,
        "dataset": config.dataset,
        "model": config.model,
        "headline_metric": base["headline_metric"],
        "best_epoch": best["epoch"],
        "best": best["headline"],
        "final": epochs[-1]["headline"],
        "zero_shot": zero_shot,
        "epochs": config.epochs,
        "train_seconds": train_seconds,
        "parameters": sum(p.numel() for p in model.parameters()),
        "world_size": base["world_size"],
        "gpus": base["gpus"],
    }


if __name__ == "__main__":
    try:
        main()
    except ConfigError as e:  # a bad config will not get better on retry: say so and exit 2
        print(f"{JOB_ERROR_PREFIX} {e}", file=sys.stderr, flush=True)
        raise SystemExit(JOB_ERROR_EXIT_CODE) from None
