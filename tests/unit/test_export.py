"""`kbench export`: the chosen epoch's weights and a card. The exported file, loaded into a
fresh model of the library by the card's own lines, with the card's preprocessing, predicts
what the run predicted at that epoch; a pair without a result is refused in one line. Pairs
train in this process on the tiny models."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from torchvision.transforms import InterpolationMode, v2

from kbench import records
from kbench.cli.main import cli
from kbench.jobs import train as trainer
from kbench.jobs.datasets import Source, raw_splits
from kbench.jobs.datasets import _limit as limit
from kbench.jobs.distributed import Job
from kbench.runs import Run, create_run
from kbench.spec import parse_grid
from kbench.storage import open_store

GRID = (
    "datasets: [synthetic]\n"
    "models: {clip-tiny: {epochs: 2, batch_size: 16}, resnet-tiny: {epochs: 2, batch_size: 16}}\n"
    "defaults: {train_limit: 96, eval_limit: 64, workers: 0}\n"
)


@pytest.fixture
def store(tmp_path):
    store = open_store(str(tmp_path / "store"))
    grid = parse_grid(GRID, "g.yaml", "g")
    create_run(store, Run.new("r", grid, "local"), grid.pairs)
    return store


def preprocess(card: dict):
    """The card's preprocessing, as a user's own code would write it."""
    p = card["preprocessing"]
    interpolation = InterpolationMode(p["interpolation"])
    resize = [p["resize"]] * 2 if p["squash"] else p["resize"]
    return v2.Compose(
        [
            v2.ToImage(),
            v2.RGB(),
            v2.Resize(resize, interpolation=interpolation),
            v2.CenterCrop(p["crop"]),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(p["mean"], p["std"]),
        ]
    )


@pytest.mark.parametrize("pair", ["synthetic_clip-tiny", "synthetic_resnet-tiny"])
def test_the_exported_file_predicts_what_the_run_did(store, tmp_path, pair):
    trainer.train(Job(store, "r", pair, 0, 1, torch.device("cpu")))
    out = tmp_path / "export"
    result = CliRunner().invoke(
        cli, ["export", pair, "--store", store.uri, "--run", "r", "--out-dir", str(out)]
    )
    assert result.exit_code == 0, result.output
    card = json.loads((out / f"{pair}.card.json").read_text())
    assert card["classes"] and card["epoch"] == card["selection"]["epoch"]
    assert "from safetensors.torch import load_file" in (out / f"{pair}.md").read_text()

    scope: dict = {"PATH": str(out / f"{pair}.safetensors")}
    exec(card["load"], scope)  # the card's lines, as given
    config = records.load_config(store, "r", pair)
    # The test samples the run scored, in its order: its eval_limit's fixed subset.
    test = limit(raw_splits(Source.of(config, trainer.model_info(config.model)))["test"], 64)
    images = torch.stack([preprocess(card)(test[i][0]) for i in range(32)])
    predicted = scope["classify"](images)
    kept = records.decode_predictions(store.read(records.pair_key("r", pair, "predictions.npz")))
    ran = kept[f"epoch_{card['epoch']}"].predicted[:32]
    assert (predicted.numpy() == ran).mean() >= 31 / 32


def test_a_pair_without_a_result_is_refused_in_one_line(store):
    args = ["export", "synthetic_clip-tiny", "--store", store.uri, "--run", "r"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert result.output == (
        "Error: synthetic_clip-tiny of run r has no finished result: nothing to export\n"
    )
