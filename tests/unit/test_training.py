"""The training loop, run in this process (one process, no DataLoader workers, a local store):
what the end-to-end tests see through real torchrun, checked here in seconds. The learning rate
follows its schedule over the whole run, and a job stopped after an epoch and started again
ends exactly where an uninterrupted one ends (its optimizer, schedule and RNG continue)."""

from __future__ import annotations

import pytest
import torch
from support.training import warmup_then_cosine

from kbench import records
from kbench.jobs import train as trainer
from kbench.jobs.distributed import Job
from kbench.runs import Run, create_run
from kbench.spec import parse_grid
from kbench.storage import open_store, read_json

PAIR = "synthetic_clip-tiny"
GRID = (
    "datasets: [synthetic]\n"
    "models: {clip-tiny: {epochs: 3, batch_size: 16, warmup: 0.25}}\n"
    "defaults: {train_limit: 64, eval_limit: 32, workers: 0}\n"
)


def run_pair(store, run_id: str) -> None:
    trainer.train(Job(store, run_id, PAIR, 0, 1, torch.device("cpu")))


def epochs_of(store, run_id: str) -> list[dict]:
    """What must match between runs: not the timings."""
    found = read_json(store, records.pair_key(run_id, PAIR, records.METRICS))["epochs"]
    keep = ("epoch", "top1", "top5", "loss", "train_loss", "lr", "samples")
    return [{k: record[k] for k in keep} for record in found]


@pytest.fixture
def store(tmp_path):
    store = open_store(str(tmp_path / "store"))
    grid = parse_grid(GRID, "g.yaml", "g")
    for run_id in ("straight", "stopped"):
        create_run(store, Run.new(run_id, grid, "local"), grid.pairs)
    return store


def test_the_learning_rate_follows_its_schedule_over_the_whole_run(store):
    run_pair(store, "straight")
    epochs = epochs_of(store, "straight")
    config = records.load_config(store, "straight", PAIR)
    steps = 64 // 16
    expected = warmup_then_cosine(config.lr, config.warmup, config.epochs, steps)
    assert [e["lr"] for e in epochs if e["epoch"] >= 1] == pytest.approx(expected, abs=1e-12)
    assert epochs[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine to zero at the last step


def test_a_job_stopped_after_an_epoch_resumes_exactly(store, monkeypatch):
    run_pair(store, "straight")

    save = trainer.save_checkpoint

    def stop_after_the_first(job, epoch, *args):
        uploader = args[-1]
        save(job, epoch, *args)
        if epoch == 1:  # the checkpoint in the store, then a preemption
            uploader.wait()
            raise trainer.Preempted

    monkeypatch.setattr(trainer, "save_checkpoint", stop_after_the_first)
    with pytest.raises(trainer.Preempted):
        run_pair(store, "stopped")
    assert [e["epoch"] for e in epochs_of(store, "stopped")] == [0, 1]
    torch.manual_seed(12345)  # whatever the process did since: the checkpoint says
    run_pair(store, "stopped")

    assert epochs_of(store, "stopped") == epochs_of(store, "straight")
    kept = {
        run_id: records.decode_predictions(
            store.read(records.pair_key(run_id, PAIR, records.PREDICTIONS))
        )
        for run_id in ("straight", "stopped")
    }
    assert kept["stopped"].keys() == kept["straight"].keys()
    for name, predictions in kept["straight"].items():
        assert (kept["stopped"][name].predicted == predictions.predicted).all(), name
