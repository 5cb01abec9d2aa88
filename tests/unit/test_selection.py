"""Choose on validation, score the test split once: which epoch and which WiSE-FT alpha a pair
reports under each `select_on`, as result.json and the report say it; and the report's one
decision rule (a winner only with a paired interval that excludes 0, McNemar beside it, the
tally adjusted for the number of datasets, a pair that did not learn left out)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from support.builders import ENVIRONMENT, job_recorder, new_run, scored, train_pair

from kbench import records, stats
from kbench.jobs.metrics import Evaluation
from kbench.report.compare import p_text, tally
from kbench.report.render import CHOICES, SEED_NOTE
from kbench.stats import Predictions
from kbench.storage import open_store, read_json

LABELS = np.arange(200) % 10

# Samples right on the test split and top-1 on the validation split, per epoch: each split
# prefers another epoch, and the last is neither's best.
CLIP = {0: (100, 0.50), 1: (120, 0.90), 2: (160, 0.70), 3: (140, 0.80)}
RESNET = {1: (100, 0.60), 2: (110, 0.70), 3: (130, 0.50)}


def wise_ft_point(alpha: int):
    """Alpha a/10 between the ends: the test split best at 0.9 (159 right), the validation
    split at 0.3."""
    return scored(LABELS, 150 + alpha, val=0.95 if alpha == 3 else 0.60)


@pytest.mark.parametrize(
    ("select_on", "split", "clip_epoch", "resnet_epoch", "alpha"),
    [
        ("val", "holdout", 1, 2, 0.3),
        ("test", "test", 2, 3, 0.9),
        ("last", None, 3, 3, 1.0),
    ],
)
def test_each_select_on_reports_the_test_split_at_its_own_choice(
    tmp_path, collect, select_on, split, clip_epoch, resnet_epoch, alpha
):
    store = open_store(str(tmp_path / "store"))
    grid = (
        "datasets: [synthetic]\nmodels: {clip-tiny: {epochs: 3}, resnet-tiny: {epochs: 3}}\n"
        f"defaults: {{select_on: {select_on}}}\n"
    )
    clip, resnet = new_run(store, "chosen", grid)
    for pair, by_epoch in ((clip, CLIP), (resnet, RESNET)):
        recorder = job_recorder(store, "chosen", pair)
        for epoch, (right, val) in by_epoch.items():
            recorder.epoch(epoch, scored(LABELS, right, val=val), seconds=1.0)
        wise_ft = None
        if pair is clip:  # alpha 0 and 1 are epoch 0's and the last epoch's evaluations
            ends = {0: recorder.evaluation(0), 10: recorder.evaluation(3)}
            wise_ft = [(a / 10, ends.get(a) or wise_ft_point(a)) for a in range(11)]
        recorder.finish(parameters=10, wise_ft=wise_ft, environment=ENVIRONMENT)

    result = read_json(store, records.pair_key("chosen", clip.name, records.RESULT))
    assert result["selection"] == {
        "select_on": select_on,
        "split": split,
        "metric": "top1",
        "epoch": clip_epoch,
        "alpha": alpha,
    }
    assert (result["best_epoch"], result["best"]) == (clip_epoch, CLIP[clip_epoch][0] / 200)

    out = tmp_path / "report"
    _, results = collect(store, out)
    pairs = {p["pair"]: p for p in results["pairs"]}
    for pair, by_epoch, epoch in ((clip, CLIP, clip_epoch), (resnet, RESNET, resnet_epoch)):
        found = pairs[pair.name]
        assert (found["chosen_top1_epoch"], found["chosen_top1"]) == (
            epoch,
            by_epoch[epoch][0] / 200,
        )
    (dataset,) = results["datasets"]
    expected = 100 * (CLIP[clip_epoch][0] - RESNET[resnet_epoch][0]) / 200
    assert dataset["top1"]["difference"] == pytest.approx(expected)
    assert dataset["wise_ft"]["alpha"] == alpha
    at_alpha = {0.0: CLIP[0][0], 1.0: CLIP[3][0]}.get(alpha, 150 + round(10 * alpha))
    assert dataset["wise_ft"]["difference"] == pytest.approx(100 * (at_alpha - CLIP[3][0]) / 200)
    # What chose is said first, before any number; one seed: what the intervals cover
    markdown = (out / "report.md").read_text()
    assert results["overall"]["select_on"] == select_on
    assert markdown.split("\n\n")[2] == f"**{CHOICES[select_on]}**"
    assert SEED_NOTE in markdown
    assert f"chosen on {select_on}" in markdown  # each pair's settings
    # WiSE-FT's curve on the validation split beside the test split's, where it chose on it
    assert (f"| {clip.name}, validation (holdout) | 50.00 |" in markdown) == (select_on == "val")


# --------------------------------------------------------------------------- decision rule


def predictions(only_a: int, only_b: int, n: int = 400, both: int = 200):
    """Two models' predictions on the same `n` samples: `both` right for each, then `only_a`
    right for A alone and `only_b` for B alone."""
    labels = np.arange(n) % 10
    a, b = (labels + 1) % 10, (labels + 1) % 10
    a[:both] = b[:both] = labels[:both]
    a[both : both + only_a] = labels[both : both + only_a]
    b[both + only_a : both + only_a + only_b] = labels[both + only_a : both + only_a + only_b]
    return Predictions(labels, a), Predictions(labels, b)


def test_holm_by_hand():
    # Sorted: 0.01 <= 0.05/4 rejects; 0.03 > 0.05/3 stops there: 0.04 and 0.2 do not reject,
    # though 0.03 and 0.04 would each alone
    assert stats.holm([0.04, 0.01, 0.2, 0.03]) == [False, True, False, False]
    assert stats.holm([0.01, 0.02, 0.03]) == [True, True, True]  # 0.0167, 0.025, 0.05
    assert stats.holm([0.02, 0.02]) == [True, True]  # 0.025, then 0.05
    assert stats.holm([]) == []


def dataset(name: str, p_value: float | None, family: str | None, left_out: str | None = None):
    """One dataset as the tally reads it: its test's p, the side its interval favours."""
    comparison = {"p_value": p_value, "winner_family": family, "difference": 1.0}
    return {"dataset": name, "left_out": left_out, "top1": comparison}


def test_the_tally_counts_a_win_only_where_it_holds_after_holm():
    datasets = [
        dataset("a", 0.01, "clip"),
        dataset("b", 0.04, "clip"),
        dataset("c", 0.03, "resnet"),
        dataset("d", 0.2, None),
        dataset("e", None, None),  # no interval: undecided, not tested
        dataset("f", 0.001, "clip", left_out="did not learn"),
    ]
    counted = tally(datasets, "top1")
    assert (counted["clip_wins"], counted["resnet_wins"]) == (1, 0)
    assert counted["unadjusted"] == {"clip_wins": 2, "resnet_wins": 1}
    assert (counted["tests"], counted["unclear"], counted["undecided"]) == (4, 3, 1)
    assert counted["left_out"] == [{"dataset": "f", "reason": "did not learn"}]
    assert counted["mean_over"] == 5  # f's difference is in no average
    assert [d["top1"]["adjusted"] for d in datasets[:4]] == [True, False, False, False]


def test_a_pair_that_did_not_learn_is_marked_and_left_out_of_the_tally(tmp_path, collect):
    store = open_store(str(tmp_path / "store"))
    clip, resnet = new_run(store, "collapsed")
    train_pair(store, "collapsed", clip, {0: 0.60, 1: 0.30, 2: 0.20, 3: 0.25})  # below zero-shot
    train_pair(store, "collapsed", resnet, {1: 0.50, 2: 0.55, 3: 0.52})
    _, results = collect(store, tmp_path / "report")
    reason = "did not learn: fine-tuned top-1 30.00% is below its zero-shot 60.00%"
    pairs = {p["pair"]: p for p in results["pairs"]}
    assert pairs[clip.name]["unreliable"] == reason
    assert f"left out of averages and the tally: {reason}" in pairs[clip.name]["flags"]
    (found,) = results["datasets"]
    assert found["left_out"] == reason and found["verdict"].endswith(
        f"left out of the tally: {reason}"
    )
    top1 = results["overall"]["top1"]
    assert (top1["left_out"], top1["mean_difference"], top1["mean_over"]) == (
        [{"dataset": "synthetic", "reason": reason}],
        None,
        0,
    )
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert f"Left out of the tally and the mean: synthetic, {reason}." in markdown


def test_an_interval_and_mcnemar_that_disagree_are_called_borderline(tmp_path, collect):
    """16 samples only CLIP gets right against 6: the interval excludes 0, McNemar's exact p
    is 0.0525."""
    a, b = predictions(16, 6)
    difference = stats.compare([a], [b], "top1", 10)
    assert difference.clear and difference.p_value == pytest.approx(0.0525, abs=5e-4)

    store = open_store(str(tmp_path / "store"))
    clip, resnet = new_run(store, "edge")
    for pair, found in ((clip, a), (resnet, b)):
        recorder = job_recorder(store, "edge", pair)
        if pair is clip:
            recorder.epoch(0, scored(found.labels, 0), seconds=0.0)
        for epoch in (1, 2, 3):
            right = int((found.predicted == found.labels).sum())
            evaluation = scored(found.labels, right)  # its metrics, with these predictions
            recorder.epoch(epoch, Evaluation(evaluation.metrics, found, evaluation.val))
        recorder.finish(parameters=10, wise_ft=None, environment=ENVIRONMENT)
    printed, results = collect(store, tmp_path / "report")
    top1 = results["datasets"][0]["top1"]
    assert top1["winner"] == "clip-tiny" and top1["borderline"] == (
        "McNemar's p = 0.052 does not agree"
    )
    assert results["datasets"][0]["verdict"].endswith(
        "clip-tiny wins (borderline: McNemar's p = 0.052 does not agree)"
    )
    assert "borderline: McNemar's p = 0.052 does not agree" in printed


def test_a_p_value_too_small_for_a_float_is_printed_as_a_bound():
    a, b = predictions(1100, 0, n=1400, both=100)  # 2 * 0.5**1100: below the smallest float
    difference = stats.compare([a], [b], "top1", 10)
    assert difference.p_value is not None and difference.p_value < 1e-300
    assert p_text(difference.p_value) == "< 1e-300"
    assert p_text(0.0) == "< 1e-300" and p_text(0.0123) == "= 0.012"
    assert not math.isnan(difference.p_bootstrap) and difference.p_bootstrap == 1 / 2000
