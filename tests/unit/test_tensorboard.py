"""TensorBoard event files in the store: read back with TensorBoard's own reader, one scalar per
metric and epoch, the epoch as its step, each epoch once (the file is rewritten whole from the
records after every epoch). A tiny pair trains in this process."""

from __future__ import annotations

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from kbench import records
from kbench.jobs import train as trainer
from kbench.jobs.distributed import Job
from kbench.jobs.tensorboard_events import EVENTS
from kbench.runs import Run, create_run
from kbench.spec import parse_grid
from kbench.storage import open_store, read_json

PAIR = "synthetic_clip-tiny"
GRID = (
    "datasets: [synthetic]\n"
    "models: {clip-tiny: {epochs: 3, batch_size: 16}}\n"
    "defaults: {train_limit: 64, eval_limit: 32, workers: 0, tensorboard: true}\n"
)


def scalars(path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(path))
    events.Reload()
    return {
        tag: [(s.step, s.value) for s in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def test_every_metric_of_every_epoch_reads_back_with_tensorboards_reader(tmp_path):
    store = open_store(str(tmp_path / "store"))
    grid = parse_grid(GRID, "g.yaml", "g")
    create_run(store, Run.new("tb", grid, "local"), grid.pairs)
    trainer.train(Job(store, "tb", PAIR, 0, 1, torch.device("cpu")))
    epochs = read_json(store, records.pair_key("tb", PAIR, records.METRICS))["epochs"]

    found = scalars(store.root / records.pair_key("tb", PAIR, EVENTS))
    assert [step for step, _ in found["top1"]] == [0, 1, 2, 3]  # once each: epoch 0 is zero-shot
    assert [v for _, v in found["top1"]] == pytest.approx([e["top1"] for e in epochs])
    assert [v for _, v in found["val_top1"]] == pytest.approx([e["val"]["top1"] for e in epochs])
    assert [step for step, _ in found["train_loss"]] == [1, 2, 3]  # none before training
    assert {"loss", "lr", "headline", "images_per_s"} <= set(found)
