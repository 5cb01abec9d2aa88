"""Fine-tune one dataset x model pair and write its records to storage.

The pair's resolved config is read from the store (`runs/<run>/<pair>/config.json`, written at
submit time), so the pod, the local backend and a hand-run process all train the same thing:

    torchrun --standalone --nproc-per-node 2 -m kbench.jobs.train --store S --run-id R --pair P
    python -m kbench.jobs.train --store S --run-id R --pair P        # one process

Epoch 0 evaluates the model before training (for CLIP: its zero-shot head); then every epoch
trains, evaluates and checkpoints. A restarted job resumes after its last checkpoint. After the
last epoch, CLIP gets its WiSE-FT curve. Only rank 0 writes; SIGTERM (preemption) stops the job
between two writes with exit code 143.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import tempfile
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset

from kbench.errors import JOB_ERROR_EXIT_CODE, JOB_ERROR_PREFIX, ConfigError
from kbench.jobs import checkpoint
from kbench.jobs.datasets import Splits, build_splits
from kbench.jobs.metrics import EvalAccumulator
from kbench.jobs.models import ImageClassifier, build_model
from kbench.jobs.recorder import Recorder
from kbench.jobs.step import (
    autocast,
    optimizer_kwargs,
    setup_device,
    train_step,
    uses_channels_last,
)
from kbench.jobs.wiseft import wise_ft_curve
from kbench.registry import dataset_info, model_info
from kbench.runs import load_config
from kbench.spec import TrainConfig
from kbench.storage import open_store

PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM, as a process killed by it


class Preempted(BaseException):
    """Raised by the SIGTERM handler; a BaseException so no `except Exception` swallows it."""


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rank, world, device = setup_distributed()
    setup_device(device)
    store = open_store(args.store)
    config = load_config(store, args.run_id, args.pair)
    info = model_info(config.model)
    splits = build_splits(config, info, store)
    model = build_model(config, splits.classes, splits.templates, device)
    channels_last = uses_channels_last(config, info.family, device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    zero_shot = None  # CLIP's starting weights, for WiSE-FT at the end
    if info.family == "clip":
        zero_shot = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.manual_seed(config.seed + rank)  # after building: each process augments differently

    train_loader, eval_loader = build_loaders(config, splits, rank, world, device)
    steps = len(train_loader)
    optimizer = build_optimizer(config, model, device)
    scheduler = build_scheduler(config, optimizer, total_steps=config.epochs * steps)
    ddp = DistributedDataParallel(model) if world > 1 else model
    trained = torch.compile(ddp) if config.compile else ddp

    headline = dataset_info(config.dataset).headline
    base = {
        "split": splits.eval_split,
        "headline_metric": headline,
        "world_size": world,
        "gpus": world if device.type == "cuda" else 0,
    }
    recorder = Recorder(store, args.run_id, args.pair, enabled=rank == 0, gpus=base["gpus"])

    def progress(
        phase: str,
        epoch: int,
        step: int,
        images_per_s: float = 0.0,
        eta_s: float | None = None,
        force: bool = True,
    ) -> None:
        recorder.progress(
            force=force,
            phase=phase,
            epoch=epoch,
            step=step,
            steps=steps,
            epochs=config.epochs,
            images_per_s=images_per_s,
            eta_s=eta_s,
        )

    def evaluate_now(m: ImageClassifier) -> dict:
        return evaluate(m, eval_loader, splits, config, device, channels_last)

    # Resume after the last checkpoint, or start with epoch 0.
    cache = os.path.join(tempfile.gettempdir(), "kbench", args.run_id, args.pair)
    state = checkpoint.load_latest(store, args.run_id, args.pair, cache)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if len(state["rng"]) == world:
            checkpoint.set_rng_state(state["rng"][rank])
        recorder.restore(state["epochs"])
        first_epoch, train_seconds = state["epoch"] + 1, state["train_seconds"]
        log(rank, f"resumed after epoch {state['epoch']} from the store's checkpoint")
    else:
        first_epoch, train_seconds = 1, 0.0
        if info.family == "clip":  # epoch 0: the zero-shot head, untrained
            progress("eval", epoch=0, step=0)
            recorder.epoch(epoch_record(base, evaluate_now(model), epoch=0), config.epochs)

    for epoch in range(first_epoch, config.epochs + 1):
        train_loader.sampler.set_epoch(epoch)
        model.train()
        started, loss_sum = time.perf_counter(), torch.zeros((), device=device)
        for step, (images, labels, *_) in enumerate(train_loader, start=1):
            images = images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            labels = labels.to(device, non_blocking=True)
            loss_sum += train_step(trained, images, labels, optimizer, scheduler, config, device)

            images_per_s = step * config.batch_size / (time.perf_counter() - started)
            left = (config.epochs - epoch + 1) * steps - step
            eta_s = left * config.batch_size / images_per_s
            progress("train", epoch, step, images_per_s, eta_s, force=False)
        epoch_seconds = time.perf_counter() - started
        train_seconds += epoch_seconds
        train_loss = mean_across_processes(loss_sum / steps)
        images_per_s = steps * config.batch_size / epoch_seconds

        progress("eval", epoch, steps, images_per_s)
        record = epoch_record(
            base,
            evaluate_now(model),
            epoch,
            train_loss=train_loss,
            lr=optimizer.param_groups[0]["lr"],
            seconds=epoch_seconds,
            images_per_s=images_per_s,
        )
        recorder.epoch(record, config.epochs)
        rng = checkpoint.gather_rng_states(world)
        if rank == 0:
            checkpoint.save(
                store,
                args.run_id,
                args.pair,
                {
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": rng,
                    "epochs": recorder.epochs,
                    "train_seconds": train_seconds,
                    "config": config.to_dict(),
                },
            )

    wise_ft = None
    if zero_shot is not None:
        progress("eval", config.epochs, steps)
        curve = wise_ft_curve(model, zero_shot, evaluate_now)
        wise_ft = [{**point, "headline": point[headline]} for point in curve]
    mean_images_per_s = config.epochs * steps * config.batch_size / max(train_seconds, 1e-9)
    progress("done", config.epochs, steps, mean_images_per_s, eta_s=0.0)
    recorder.result(
        summarize(args.pair, config, recorder.epochs, model, train_seconds, base, wise_ft)
    )
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


def log(rank: int, message: str) -> None:
    if rank == 0:
        print(f"kbench.jobs.train: {message}", flush=True)


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
    model: ImageClassifier,
    loader: DataLoader,
    splits: Splits,
    config: TrainConfig,
    device: torch.device,
    channels_last: bool,
) -> dict[str, float | int]:
    model.eval()
    accumulator = EvalAccumulator(len(splits.classes), device, splits.groups)
    for images, labels, *groups in loader:  # a group per sample where the dataset has groups
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(config, device):
            logits = model(images)
        labels = labels.to(device, non_blocking=True)
        accumulator.update(logits, labels, groups[0].to(device) if groups else None)
    accumulator.all_reduce()
    return accumulator.compute()


def epoch_record(
    base: dict,
    metrics: dict,
    epoch: int,
    *,
    train_loss: float | None = None,
    lr: float | None = None,
    seconds: float = 0.0,
    images_per_s: float = 0.0,
) -> dict:
    """One epoch's record (records.EPOCH_RECORD_SCHEMA); epoch 0 trained nothing."""
    return {
        **base,
        **metrics,
        "epoch": epoch,
        "headline": metrics[base["headline_metric"]],
        "train_loss": train_loss,
        "lr": lr,
        "epoch_seconds": seconds,
        "images_per_s": images_per_s,
        "images_per_s_per_gpu": images_per_s / base["gpus"] if base["gpus"] and epoch else None,
    }


def mean_across_processes(value: torch.Tensor) -> float:
    if dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value)
        value /= dist.get_world_size()
    return float(value)


def summarize(pair, config, epochs, model, train_seconds, base, wise_ft) -> dict:
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
        "wise_ft": wise_ft,
        "epochs": config.epochs,
        "train_seconds": train_seconds,
        "parameters": sum(p.numel() for p in model.parameters()),
        "world_size": base["world_size"],
        "gpus": base["gpus"],
        "environment": environment(),
    }


def environment() -> dict:
    """What trained: for the report's run metadata."""
    import open_clip
    import torchvision

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {
        "device": gpu or f"CPU ({os.cpu_count()} cores)",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "open_clip": open_clip.__version__,
        "python": sys.version.split()[0],
        "cuda": torch.version.cuda if gpu else None,
    }


def _on_sigterm(signum, frame) -> None:
    raise Preempted


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        main()
    except ConfigError as e:  # a bad config will not get better on retry: say so and exit 2
        print(f"{JOB_ERROR_PREFIX} {e}", file=sys.stderr, flush=True)
        raise SystemExit(JOB_ERROR_EXIT_CODE) from None
    except Preempted:
        # Every write replaces a whole object, so stopping here corrupts nothing; the next
        # start resumes after the last checkpoint.
        print(
            "kbench.jobs.train: SIGTERM: stopped; a restart resumes from the last checkpoint",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(PREEMPTED_EXIT_CODE) from None
