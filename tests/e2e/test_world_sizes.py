"""One process or several, the same numbers: each sample's prediction comes back in the split's
order, the training loss is the mean over every process's batches, and the throughput counts
every process's images. Real torchrun, gloo processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from support import evaluation
from support.training import PAIR, finish, outcome, start

from kbench.runs import Run, create_run
from kbench.spec import parse_grid
from kbench.storage import open_store

SCRIPT = Path(evaluation.__file__)


def predicted_by(processes: int, out: Path) -> list[int]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc-per-node={processes}", str(SCRIPT), str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return np.load(out).tolist()


def test_predictions_come_back_in_the_splits_order_whatever_the_process_count(tmp_path):
    config = evaluation.config()
    splits = evaluation.splits_of(config)
    model, place = (
        evaluation.linear_model(splits),
        evaluation.placement(config, torch.device("cpu")),
    )
    with torch.no_grad():  # the model applied to each sample in order, in this one process
        expected = [
            int(model(place(image[None], torch.tensor([label]))[0]).argmax())
            for image, label in splits.eval
        ]
    assert len(expected) == 37 and len(set(expected)) >= 3  # not one class for everything
    for processes in (1, 2, 3):
        assert predicted_by(processes, tmp_path / f"{processes}.npy") == expected, processes


GRID = (
    "datasets: [synthetic]\n"
    # A learning rate too small to move a weight: each sample's loss is the same whichever
    # process trains it, and in whatever batch.
    "models: {clip-tiny: {epochs: 1, batch_size: 32, lr: 1.0e-30, augment: none}}\n"
    "defaults: {train_limit: 384, eval_limit: 32, workers: 0}\n"
)


def test_the_loss_and_the_throughput_are_of_every_process(tmp_path):
    store = open_store(str(tmp_path / "store"))
    trained = {}
    for processes in (1, 2):
        run_id = f"nproc-{processes}"
        grid = parse_grid(GRID, "g.yaml", "g")
        create_run(store, Run.new(run_id, grid, "local"), grid.pairs)
        finish(start(store, run_id, nproc=processes))
        trained[processes] = outcome(store, run_id)[0][1]
        assert trained[processes]["epoch"] == 1 and grid.pairs[0].name == PAIR
    for processes, epoch in trained.items():
        images = epoch["images_per_s"] * epoch["epoch_seconds"]
        assert images == pytest.approx(384), processes  # every process's images
        assert epoch["world_size"] == processes
    # The mean over all 384 images' losses, however the batches were split between processes.
    assert trained[2]["train_loss"] == pytest.approx(trained[1]["train_loss"], rel=1e-5)
