"""What the code claims, each in a small test that fails when the claim does: WiSE-FT's
direction, a corrupt shard never trained on, the leftovers of interrupted checkpoints removed."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import pytest
import torch
from support.builders import assert_written, metrics
from torch import nn

from kbench import records
from kbench.errors import StoreError
from kbench.jobs import checkpoint, shards
from kbench.jobs.metrics import Evaluation
from kbench.jobs.wiseft import wise_ft_curve
from kbench.storage import open_store


def test_wise_ft_runs_from_the_zero_shot_weights_to_the_fine_tuned_ones():
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.fill_(1.0)  # fine-tuned
        model.bias.fill_(1.0)
    zero_shot = {"weight": torch.zeros(2, 3), "bias": torch.zeros(2)}

    curve = wise_ft_curve(model, zero_shot, lambda m: Evaluation(metrics(m.weight.mean().item())))

    alphas, weights = [a for a, _ in curve], [e.metrics["top1"] for _, e in curve]
    assert alphas == [i / 10 for i in range(11)]
    assert weights[0] == 0.0  # alpha 0: exactly zero-shot
    assert weights[-1] == 1.0  # alpha 1: exactly fine-tuned
    assert weights == pytest.approx(alphas)
    assert torch.equal(model.weight, torch.ones(2, 3))  # fine-tuned again afterwards


def test_wise_ft_reuses_the_evaluations_of_its_two_ends():
    """Alpha 0 and 1 are epoch 0's and the last epoch's weights exactly: their evaluations
    are taken from those epochs' records, and only the nine between are evaluated."""
    model = nn.Linear(3, 2)
    zero_shot = {"weight": torch.zeros(2, 3), "bias": torch.zeros(2)}
    evaluated = []

    def evaluate(m):
        evaluated.append(m.weight.mean().item())
        return Evaluation(metrics(evaluated[-1]))

    # epoch 0's and the last epoch's, as the recorder gives them back: no predictions
    known = {0.0: Evaluation(metrics(0.25)), 1.0: Evaluation(metrics(0.75), val=metrics(0.7))}
    curve = wise_ft_curve(model, zero_shot, evaluate, known)
    assert len(evaluated) == 9
    assert (curve[0][1], curve[-1][1]) == (known[0.0], known[1.0])
    assert len(wise_ft_curve(model, zero_shot, evaluate, {0.0: None, 1.0: None})) == 11
    assert len(evaluated) == 9 + 11  # ends not recorded: evaluated


def test_an_epoch_records_evaluation_is_what_evaluate_returned():
    from kbench.jobs.recorder import Recorder
    from kbench.spec import TrainConfig, load_recipe

    config = TrainConfig.from_dict(
        {**load_recipe("clip-tiny"), "dataset": "synthetic", "model": "clip-tiny"}
    )
    recorder = Recorder(
        None,
        "r",
        "p",
        config,
        eval_split="test",
        val_split="holdout",
        steps=1,
        images=1,
        rank=1,
        world=2,
        gpus=0,
    )
    first = metrics(0.5, samples=10, macro_f1=0.4, loss=1.25)
    val = metrics(0.45, samples=5, macro_f1=0.4, loss=1.5)
    recorder.epoch(0, Evaluation(first, val=val))
    recorder.epoch(1, Evaluation({**first, "top1": 0.7}), train_loss=0.3, lr=0.1, seconds=2.0)
    assert recorder.evaluation(0) == Evaluation(first, val=val)
    assert recorder.evaluation(1) == Evaluation({**first, "top1": 0.7})
    assert recorder.evaluation(2) is None
    assert (recorder.epochs[0]["val"]["split"], recorder.epochs[0]["val"]["headline"]) == (
        "holdout",
        0.45,
    )
    for record in recorder.epochs:
        assert_written(records.EpochRecord, record)


@pytest.fixture
def staged(tmp_path):
    """A store with one 'shard' and a manifest that names its checksum."""
    store = open_store(str(tmp_path / "store"))
    data = b"shard bytes" * 1000
    key = "datasets/d/train-000000.tar"
    store.write(key, data)
    entry = {"key": key, "sha256": hashlib.sha256(data).hexdigest()}
    manifest = {"splits": {"train": {"shards": [entry]}}}
    return store, key, data, manifest


def test_a_corrupt_shard_in_the_store_is_refused(staged, tmp_path):
    store, key, data, manifest = staged
    store.write(key, data[:-1] + b"!")  # one byte off, as a bad disk or a partial copy leaves it
    cache = tmp_path / "cache"
    with pytest.raises(StoreError, match=f"{key} does not match its checksum: stage it again"):
        shards.fetch(store, manifest, cache, ["train"])
    assert list(cache.iterdir()) == []  # nothing a loader could read


def test_a_corrupt_shard_in_the_node_cache_is_fetched_again(staged, tmp_path):
    store, key, data, manifest = staged
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "train-000000.tar").write_bytes(b"left by a killed download")
    shards.fetch(store, manifest, cache, ["train"])
    assert (cache / "train-000000.tar").read_bytes() == data


def test_the_next_checkpoint_removes_what_a_kill_left(tmp_path):
    """A kill after the pointer moved but before the old checkpoint's delete leaves it; a kill
    mid-upload leaves a hidden temporary file. The next save removes both."""
    store = open_store(str(tmp_path / "store"))
    checkpoint.save(store, "r", "p", {"epoch": 1})
    folder = store.root / records.pair_key("r", "p", "checkpoints")
    (folder / "epoch-0002.pt").write_bytes(b"an orphan")  # saved, never pointed at
    (folder / ".epoch-0003.pt.4242.tmp").write_bytes(b"half an upload")

    checkpoint.save(store, "r", "p", {"epoch": 3})

    assert sorted(p.name for p in folder.iterdir()) == ["epoch-0003.pt", "latest.json"]
    assert checkpoint.load_latest(store, "r", "p", str(tmp_path / "cache"))["epoch"] == 3


def test_checkpoints_upload_in_the_background_one_at_a_time(tmp_path):
    """The next epoch trains while a checkpoint uploads: `save` returns with the upload still
    going; the pointer moves only once it is complete; a second save waits for the first; an
    upload that fails is raised by the next wait."""
    import threading

    store = open_store(str(tmp_path / "store"))
    release, started = threading.Event(), []
    put_file = store.put_file

    def slow_put_file(key: str, path: str) -> None:
        started.append(key)
        assert release.wait(30)
        put_file(key, path)

    store.put_file = slow_put_file
    pointer = records.pair_key("r", "p", checkpoint.POINTER)
    uploader = checkpoint.Uploader()
    uploader.save(store, "r", "p", {"epoch": 1})  # returns at once
    assert not store.list(pointer)  # not complete: the pointer stays where it was
    second = threading.Thread(target=uploader.save, args=(store, "r", "p", {"epoch": 2}))
    second.start()
    second.join(0.5)
    assert second.is_alive() and len(started) == 1  # waits for the first: never two in flight
    release.set()
    second.join(30)
    uploader.wait()
    assert checkpoint.load_latest(store, "r", "p", str(tmp_path / "cache"))["epoch"] == 2
    assert not list(Path(tempfile.gettempdir()).glob("kbench-checkpoint-*"))  # local copies gone

    def broken(key: str, path: str) -> None:
        raise StoreError("the store went away")

    store.put_file = broken
    uploader.save(store, "r", "p", {"epoch": 3})
    with pytest.raises(StoreError, match="the store went away"):
        uploader.wait()
    assert checkpoint.load_latest(store, "r", "p", str(tmp_path / "cache2"))["epoch"] == 2
