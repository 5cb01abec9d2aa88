"""Steps per epoch, total steps and warmup steps of every pair of a grid, on the nine datasets'
real training-split sizes (less the validation hold-out where a pair chooses on one), counted by
iterating the trainer's own batch sampler (not computed from a formula) for each process of a
`--world`-process job.

    python bench/steps_per_epoch.py                       # grids all and study, 1 process
    python bench/steps_per_epoch.py --world 8 --json

Needs no data: the sampler only sees the split's length.
"""

from __future__ import annotations

import argparse
import json

from torch.utils.data import DistributedSampler

from kbench import budget
from kbench.jobs.loaders import EpochBatches
from kbench.jobs.optim import warmup_steps
from kbench.spec import TrainConfig, load_grid


def train_images(config: TrainConfig) -> int:
    """The images a pair trains on, less its validation hold-out (kbench.budget's count)."""
    found = budget.train_images(config)
    assert found is not None, config.dataset
    return found[0]


def count(images: int, batch_size: int, world: int) -> tuple[int, int]:
    """(steps per epoch, images per epoch) of a `world`-process job, by iterating each rank's
    batches; every rank must take the same number of steps."""
    steps, seen = set(), 0
    for rank in range(world):
        sampler = DistributedSampler(range(images), num_replicas=world, rank=rank, seed=0)
        batches = EpochBatches(sampler, batch_size // world, seed=0, rank=rank)
        batches.set_epoch(1)
        listed = list(batches)
        steps.add(len(listed))
        seen += sum(len(b) for b in listed)
    (per_epoch,) = steps  # lockstep
    return per_epoch, seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grids", nargs="+", default=["all", "study"])
    parser.add_argument("--world", type=int, default=1, help="training processes (GPUs)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="the grid `all` only")
    args = parser.parse_args()
    rows = []
    for grid in ["all"] if args.quick else args.grids:
        for pair in load_grid(grid).pairs:
            config = pair.config
            images = train_images(config)
            steps, seen = count(images, config.batch_size, args.world)
            total = steps * config.epochs
            rows.append(
                {
                    "grid": grid,
                    "pair": pair.name,
                    "train_images": images,
                    "batch_size": config.batch_size,
                    "world": args.world,
                    "steps_per_epoch": steps,
                    "images_per_epoch": seen,
                    "epochs": config.epochs,
                    "total_steps": total,
                    "warmup_steps": warmup_steps(config, total, quiet=True),
                }
            )
    if args.json:
        print(json.dumps({"rows": rows}))
        return
    print(f"{'grid':6} {'pair':28} {'images':>7} {'batch':>5} {'steps':>5} {'seen':>7} "
          f"{'epochs':>6} {'total':>6} {'warmup':>6}")  # fmt: skip
    for r in rows:
        print(
            f"{r['grid']:6} {r['pair']:28} {r['train_images']:>7} {r['batch_size']:>5} "
            f"{r['steps_per_epoch']:>5} {r['images_per_epoch']:>7} {r['epochs']:>6} "
            f"{r['total_steps']:>6} {r['warmup_steps']:>6}"
        )


if __name__ == "__main__":
    main()
