"""Run under torchrun by tests/e2e/test_world_sizes.py: the trainer's own evaluation (its eval
loader, its `evaluate`, every process's predictions gathered) of a fixed random linear model,
which predicts many classes, on the synthetic split; rank 0 writes the predicted classes to the
file named on the command line (.npy)."""

from __future__ import annotations

import sys

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from kbench.jobs.datasets import Splits, build_splits, normalization
from kbench.jobs.distributed import Job, setup_distributed
from kbench.jobs.eval_cache import EvalBatches
from kbench.jobs.loaders import Placement, build_loaders
from kbench.jobs.train import evaluate
from kbench.registry import model_info
from kbench.spec import TrainConfig, parse_grid

GRID = (
    "datasets: [synthetic]\nmodels: {resnet-tiny: {batch_size: 12}}\n"
    "defaults: {train_limit: 64, eval_limit: 37, workers: 0}\n"
)


def config() -> TrainConfig:
    return parse_grid(GRID, "g.yaml", "g").pairs[0].config


def splits_of(config: TrainConfig) -> Splits:
    return build_splits(config, model_info(config.model))


def linear_model(splits: Splits) -> nn.Module:
    torch.manual_seed(0)  # the same weights in every process and in the test
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(len(splits.classes)))


def placement(config: TrainConfig, device: torch.device) -> Placement:
    return Placement(device, False, *normalization(model_info(config.model)))


def main(out: str) -> None:
    rank, world, device = setup_distributed()
    try:
        found = config()
        splits = splits_of(found)
        model = linear_model(splits)
        loader = build_loaders(found, splits, Job(None, "r", "p", rank, world, device)).test
        place = placement(found, device)
        with torch.no_grad():  # LazyLinear takes its shape from a first image
            model(place(*next(iter(loader))[:2])[0])
        test = EvalBatches(loader, device)
        evaluation = evaluate(model, test=test, val=None, splits=splits, config=found, place=place)
        if rank == 0 and evaluation.predictions is not None:
            np.save(out, evaluation.predictions.predicted)
    finally:
        # As the trainer ends: a process that exits with its group still up may find a peer
        # gone first, and gloo aborts it (SIGABRT, seen once with 3 processes on 2 CPUs)
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
