"""One owner for the facts derived from a pair's records (kbench.pairs): the trainer's
result.json, `kbench status` and the report read the same records and must say the same thing."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from support.builders import (
    ENVIRONMENT,
    FOUR_MODELS,
    assert_written,
    epoch_record,
    job_recorder,
    local_process,
    metrics,
    new_run,
    result_record,
    scored,
    train_pair,
)

from kbench import records
from kbench.cli.main import cli
from kbench.jobs.metrics import Evaluation
from kbench.jobs.recorder import Recorder
from kbench.pairs import Outcome, PairRecords, PairState, chosen_epoch, pair_state
from kbench.spec import load_grid
from kbench.storage import open_store, read_json, write_json

NAN = float("nan")


def test_result_json_and_the_report_name_the_same_best_epoch_when_zero_shot_is_best(
    tmp_path, collect
):
    store = open_store(str(tmp_path / "store"))
    clip, resnet = new_run(store, "best")
    # CLIP's zero-shot head beats every fine-tuned epoch (as the study saw on small datasets).
    train_pair(store, "best", clip, {0: 0.90, 1: 0.70, 2: 0.85, 3: 0.80})
    train_pair(store, "best", resnet, {1: 0.50, 2: 0.60, 3: 0.55})

    result = read_json(store, records.pair_key("best", clip.name, records.RESULT))
    assert_written(records.ResultRecord, result)
    _, results = collect(store, tmp_path / "report")
    report = {p["pair"]: p for p in results["pairs"]}

    assert (result["best_epoch"], result["best"]) == (2, 0.85)  # fine-tuned best, not epoch 0
    assert result["zero_shot"] == 0.90  # zero-shot, reported on its own
    assert report[clip.name]["chosen_epoch"] == result["best_epoch"]
    assert report[clip.name]["chosen"] == result["best"]
    assert report[clip.name]["zero_shot"] == result["zero_shot"]
    resnet_result = read_json(store, records.pair_key("best", resnet.name, records.RESULT))
    assert report[resnet.name]["chosen_epoch"] == resnet_result["best_epoch"] == 2


def test_a_pair_whose_every_trained_epoch_diverged_has_no_best():
    epochs = [epoch_record(0, 0.4), epoch_record(1, NAN)]
    for select_on in ("val", "test", "last"):
        assert chosen_epoch(epochs, select_on) is None
        assert chosen_epoch(epochs[:1], select_on) is None  # zero-shot is not fine-tuning's
        chosen = chosen_epoch([*epochs, epoch_record(2, 0.3)], select_on)
        assert chosen is not None and chosen["epoch"] == 2


@pytest.mark.parametrize(
    ("result", "epochs", "backend", "expected"),
    [
        # a written result settles it, whatever the backend last saw
        ("result", [], Outcome(PairState.FAILED, "x"), Outcome(PairState.SUCCEEDED)),
        (None, ["epoch"], Outcome(PairState.RESTARTING, "1 restart(s)"), None),  # its word
        (None, ["epoch"], None, Outcome(PairState.RUNNING)),  # records alone: it trained
        (None, [], None, Outcome(PairState.PENDING)),  # nothing at all: not started
    ],
)
def test_pair_state(result, epochs, backend, expected):
    config = load_grid("smoke").pairs[0].config
    trained = [epoch_record(1, 0.5) for _ in epochs]
    written = result_record("p", [epoch_record(1, 0.5)]) if result else None
    found = PairRecords("p", config, trained, written)
    assert pair_state(found, backend) == (expected or backend)


def test_status_and_the_report_agree_on_every_pair_state(tmp_path, collect):
    store = open_store(str(tmp_path / "store"))
    done, failed, running, waiting = new_run(store, "states", FOUR_MODELS)
    train_pair(store, "states", done, {0: 0.2, 1: 0.3})
    key = lambda pair, name: records.pair_key("states", pair.name, name)  # noqa: E731
    write_json(store, key(failed, records.LOCAL_STATE), local_process("failed", reason="OOM"))
    job_recorder(store, "states", running).epoch(1, Evaluation(metrics(0.5)), seconds=1.0)

    status = CliRunner().invoke(cli, ["status", "--store", store.uri, "-o", "json"])
    assert status.exit_code == 3, status.output  # one pair failed
    shown = {p["pair"]: p["state"] for p in json.loads(status.stdout)["pairs"]}
    reported = {p["pair"]: p["state"] for p in collect(store, tmp_path / "report")[1]["pairs"]}
    assert (
        shown
        == reported
        == {
            done.name: "succeeded",
            failed.name: "failed",
            running.name: "running",
            waiting.name: "pending",
        }
    )


def test_a_pair_trained_on_a_reduced_staged_copy_says_so_in_its_records_and_report(
    tmp_path, collect
):
    store = open_store(str(tmp_path / "store"))
    _, resnet = new_run(store, "reduced")
    recorder = Recorder(
        store, "reduced", resnet.name, resnet.config, eval_split="test", steps=4, images=400,
        staging={"frac": 0.5, "max_short_side": 448}, rank=0, world=1, gpus=0,
    )  # fmt: skip
    recorder.epoch(1, Evaluation(metrics(0.6)), train_loss=1.0, seconds=2.0)
    stored = read_json(store, records.pair_key("reduced", resnet.name, records.METRICS))
    assert_written(records.MetricsRecord, stored)
    assert stored["epochs"][0]["data"] == {"frac": 0.5, "max_short_side": 448}

    pairs = {p["pair"]: p for p in collect(store, tmp_path / "report")[1]["pairs"]}
    flags = pairs[resnet.name]["flags"]
    assert "trained and evaluated on 0.5 of each split (data stage --frac)" in flags
    assert any(f.startswith("images stored at a short side of at most 448 px") for f in flags)


@pytest.mark.parametrize(("resnet_right", "winner"), [(150, "no clear winner"), (100, "clip-tiny")])
def test_the_report_names_a_winner_only_when_the_interval_excludes_zero(
    tmp_path, resnet_right, winner, collect
):
    """Both pairs record predictions through the Recorder (as the job does); the report's
    interval, McNemar's p and its verdict come from them."""
    store = open_store(str(tmp_path / "store"))
    clip, resnet = new_run(store, "sure")
    labels = np.arange(200) % 10
    # CLIP gets samples 0 to 156 right at its best, ResNet samples 20 to 20 + its best.
    for pair, by_epoch, first in (
        (clip, {0: 60, 1: 120, 2: 156, 3: 150}, 0),
        (resnet, {1: 90, 2: 120, 3: resnet_right}, 20),
    ):
        recorder = job_recorder(store, "sure", pair)
        for epoch, right in by_epoch.items():
            recorder.epoch(epoch, scored(labels, right, first), seconds=float(epoch > 0))
        wise_ft = None
        if pair is clip:  # alphas between the ends evaluated; 0 and 1 are epochs 0 and 3
            ends = {0.0: recorder.evaluation(0), 1.0: recorder.evaluation(3)}
            wise_ft = [
                (a / 10, ends[a / 10] if a in (0, 10) else scored(labels, 150 + a))
                for a in range(11)
            ]
        recorder.finish(parameters=10, wise_ft=wise_ft, environment=ENVIRONMENT)
    summary = read_json(store, records.pair_key("sure", clip.name, records.SUMMARY))
    assert summary["predictions"] == [
        *(f"alpha_0.{a}" for a in range(1, 10)),
        *(f"epoch_{e}" for e in range(4)),
    ]

    out = tmp_path / "report"
    printed, results = collect(store, out)
    dataset = results["datasets"][0]
    top1 = dataset["top1"]
    assert top1["difference"] == pytest.approx(100 * (156 - max(120, resnet_right)) / 200)
    low, high = top1["interval"]
    assert low < top1["difference"] < high
    assert top1["winner"] == winner and (low > 0) == (winner == "clip-tiny")
    assert dataset["verdict"] in printed
    assert dataset["verdict"].endswith(winner if winner == "no clear winner" else "clip-tiny wins")
    # McNemar on the best epochs, by hand: the samples only one of them gets right.
    resnet_end = 20 + max(120, resnet_right)
    only_clip, only_resnet = 20 + max(0, 156 - resnet_end), max(0, resnet_end - 156)
    n, k = only_clip + only_resnet, max(only_clip, only_resnet)
    by_hand = min(1.0, 2 * sum(math.comb(n, i) for i in range(k, n + 1)) / 2**n)
    assert top1["mcnemar_p"] == pytest.approx(by_hand)
    assert (top1["mcnemar_p"] < 0.05) == (winner == "clip-tiny") and not top1["borderline"]
    # At equal epochs (3): CLIP right on samples 0-150, ResNet on 20-170 (the same count: no
    # clear winner) or on 20-120 (CLIP 25 points ahead).
    equal = dataset["equal_epochs"]
    assert equal["epoch"] == 3 and equal["winner"] == winner
    assert equal["difference"] == pytest.approx(100 * (150 - resnet_right) / 200)
    assert equal["interval"][0] <= equal["difference"] <= equal["interval"][1]
    # Within CLIP: fine-tuned (epoch 2, 156) over zero-shot (60); WiSE-FT's best alpha (0.9,
    # 159) over the fine-tuned end (epoch 3, 150).
    assert dataset["fine_tuning"]["difference"] == pytest.approx(48.0)
    assert dataset["fine_tuning"]["clear"]
    assert dataset["wise_ft"]["alpha"] == 0.9
    assert dataset["wise_ft"]["difference"] == pytest.approx(4.5)
    pairs = {p["pair"]: p for p in results["pairs"]}
    low, high = pairs[clip.name]["chosen_top1_interval"]
    assert low < 156 / 200 < high
    assert "How sure" in (out / "report.md").read_text()


def test_pairs_scored_on_different_samples_get_no_interval_and_the_report_says_why(
    tmp_path, collect
):
    store = open_store(str(tmp_path / "store"))
    pairs = new_run(store, "unpaired")
    for pair, labels in zip(pairs, (np.arange(200) % 10, np.arange(200) % 7), strict=True):
        recorder = job_recorder(store, "unpaired", pair)
        for epoch in range(0 if pair.config.model == "clip-tiny" else 1, 4):
            recorder.epoch(epoch, scored(labels, 100 + epoch), seconds=1.0)
        recorder.finish(parameters=10, wise_ft=None, environment=ENVIRONMENT)
    dataset = collect(store, tmp_path / "report")[1]["datasets"][0]
    assert dataset["top1"]["interval"] is None
    assert dataset["verdict"].endswith(
        "(no interval: the two sides were not evaluated on the same samples): undecided"
    )
    assert dataset["top1"]["winner"] is None  # no interval, no winner: never a threshold rule
