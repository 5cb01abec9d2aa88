"""`kbench compare RUN RUN...`: two runs of the same pairs with different learning rates, side
by side — the settings that differ listed, each difference with its paired interval where
both runs scored the same test samples, none where they did not."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from support.builders import ENVIRONMENT, job_recorder, new_run, scored

from kbench.cli.main import cli
from kbench.storage import open_store

LABELS = np.arange(200) % 10
GRID = (
    "datasets: [synthetic]\n"
    "models: {{clip-tiny: {{epochs: 2{lr}}}, resnet-tiny: {{epochs: 2}}}}\n"
    "defaults: {{select_on: last}}\n"
)


def a_run(store, run_id: str, lr: str, right: dict[str, int], labels=LABELS) -> None:
    """The run's pairs trained as their loop records them: `right` test samples at the end."""
    for pair in new_run(store, run_id, GRID.format(lr=lr)):
        recorder = job_recorder(store, run_id, pair)
        for epoch in (1, 2):
            recorder.epoch(
                epoch, scored(labels, right[pair.config.model] - 10 * (2 - epoch)), seconds=1.0
            )
        recorder.finish(parameters=10, wise_ft=None, environment=ENVIRONMENT)


def test_two_runs_side_by_side_with_intervals_and_the_settings_that_differ(tmp_path):
    store = open_store(str(tmp_path))
    a_run(store, "slow", "", {"clip-tiny": 140, "resnet-tiny": 120})
    a_run(store, "fast", ", lr: 0.001", {"clip-tiny": 160, "resnet-tiny": 120})
    shifted = np.roll(LABELS, 1)  # another test split: the samples are not the same
    a_run(store, "other", "", {"clip-tiny": 150, "resnet-tiny": 120}, labels=shifted)

    result = CliRunner().invoke(
        cli, ["compare", "slow", "fast", "other", "--store", str(tmp_path), "-o", "json"]
    )
    assert result.exit_code == 0, result.output
    compared = json.loads(result.output)
    rows = {row["pair"]: row for row in compared["pairs"]}
    clip, resnet = rows["synthetic_clip-tiny"], rows["synthetic_resnet-tiny"]
    assert [(s["top1"], s["epoch"]) for s in clip["sides"]] == [(0.7, 2), (0.8, 2), (0.75, 2)]
    faster, other = clip["differences"]
    # 20 samples right in one run only
    assert faster["difference"] == pytest.approx(10.0) and faster["clear"]
    assert faster["low"] > 0 and faster["p_mcnemar"] < 0.001
    assert other["difference"] == pytest.approx(5.0) and "low" not in other  # not the same samples
    assert other["why"].startswith("no interval: not the same test samples")
    assert clip["settings"]["lr"][1] == 0.001 and clip["settings"]["lr"][0] != 0.001
    assert set(clip["settings"]) == {"lr"}
    assert resnet["settings"] == {} and resnet["differences"][0]["difference"] == pytest.approx(0.0)

    table = CliRunner().invoke(cli, ["compare", "slow", "fast", "--store", str(tmp_path)])
    assert table.exit_code == 0, table.output
    header, first, *_ = table.output.splitlines()
    assert header.split() == [
        "PAIR",
        "slow",
        "fast",
        "fast",
        "-",
        "slow",
        "SETTINGS",
        "THAT",
        "DIFFER",
    ]
    assert "70.00 @2" in first and "+10.00 (95% CI +" in first and "lr: " in first
    markdown = CliRunner().invoke(
        cli, ["compare", "slow", "fast", "--store", str(tmp_path), "-o", "md"]
    )
    assert markdown.output.startswith("| pair | slow | fast | fast - slow | settings that differ |")


def test_compare_needs_two_known_runs(tmp_path):
    store = open_store(str(tmp_path))
    a_run(store, "slow", "", {"clip-tiny": 140, "resnet-tiny": 120})
    one = CliRunner().invoke(cli, ["compare", "slow", "--store", str(tmp_path)])
    assert one.exit_code == 2 and "compare needs two runs or more" in one.output
    unknown = CliRunner().invoke(cli, ["compare", "slow", "nope", "--store", str(tmp_path)])
    assert unknown.exit_code == 2 and "no run 'nope'" in unknown.output
    assert "Traceback" not in unknown.output
