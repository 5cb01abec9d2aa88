"""How sure a difference is: intervals and McNemar's test on constructed predictions whose
answers are known by hand."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from kbench import records, stats
from kbench.jobs.metrics import EvalAccumulator
from kbench.stats import Predictions


def constructed() -> tuple[Predictions, Predictions]:
    """100 samples of 4 classes: A right on 60, B on 50; both right on 45, only A on 15, only B
    on 5, both wrong on 35."""
    labels = np.arange(100) % 4
    wrong = (labels + 1) % 4
    a_right = np.r_[np.ones(45), np.ones(15), np.zeros(5), np.zeros(35)].astype(bool)
    b_right = np.r_[np.ones(45), np.zeros(15), np.ones(5), np.zeros(35)].astype(bool)
    return (
        Predictions(labels, np.where(a_right, labels, wrong)),
        Predictions(labels, np.where(b_right, labels, wrong)),
    )


def test_identical_predictions_differ_by_exactly_nothing():
    a, _ = constructed()
    difference = stats.compare([a], [a], "top1", 4)
    assert (difference.difference, difference.low, difference.high) == (0, 0, 0)
    assert difference.p_value == 1.0 and not difference.clear
    assert stats.compare([a], [a], "mean_per_class", 4).high == 0


def test_a_known_difference_has_the_interval_and_p_value_worked_out_by_hand():
    a, b = constructed()
    difference = stats.compare([a], [b], "top1", 4)
    assert difference.difference == pytest.approx(10.0)
    # McNemar, exact: 15 of the 20 discordant samples went A's way; two-sided binomial p =
    # 2 * sum_{k=15..20} C(20, k) / 2^20.
    by_hand = 2 * sum(math.comb(20, k) for k in range(15, 21)) / 2**20
    assert difference.p_value == pytest.approx(by_hand) and by_hand == pytest.approx(0.04139, 1e-3)
    # The paired differences are +1 (15), -1 (5), 0 (80): mean 0.1, standard error
    # sqrt((0.2 - 0.01) / 100) = 0.0436, so the 95% interval is about 10 +- 8.5 points.
    half = 100 * 1.96 * math.sqrt((0.2 - 0.1**2) / 100)
    assert difference.low == pytest.approx(10 - half, abs=1.5)
    assert difference.high == pytest.approx(10 + half, abs=1.5)
    assert difference.clear  # the interval excludes 0: A is better
    again = stats.compare([a], [b], "top1", 4)
    assert (again.low, again.high) == (difference.low, difference.high)  # a fixed seed


def test_the_interval_of_a_mean_drawn_as_counts_is_scipys_bootstrap():
    from scipy.stats import bootstrap

    a, b = constructed()
    hits = (a.predicted == a.labels).astype(float) - (b.predicted == b.labels)
    ours = tuple(np.percentile(stats.mean_draws(hits), [2.5, 97.5]))
    theirs = bootstrap(
        (hits,), np.mean, n_resamples=20000, method="percentile", rng=np.random.default_rng(1)
    ).confidence_interval
    assert ours == pytest.approx((theirs.low, theirs.high), abs=0.01)  # Monte Carlo error


def test_a_difference_within_the_noise_is_not_clear():
    a, b = constructed()
    # Move 8 of A's 15 solo wins to B: A 52, B 58 of the same 100, 7 against 13 discordant.
    labels, predicted_a, predicted_b = a.labels, a.predicted.copy(), b.predicted.copy()
    predicted_a[45:53], predicted_b[45:53] = (labels[45:53] + 1) % 4, labels[45:53]
    difference = stats.compare(
        [Predictions(labels, predicted_a)], [Predictions(labels, predicted_b)], "top1", 4
    )
    assert difference.difference == pytest.approx(-6.0)
    assert difference.low < 0 < difference.high and not difference.clear
    assert difference.p_value > 0.05


def test_seeds_widen_the_interval_by_their_spread_and_no_further():
    a, b = constructed()
    one = stats.compare([a], [b], "top1", 4)
    same = stats.compare([a, a], [b, b], "top1", 4)  # seeds that agree add nothing
    assert (same.difference, same.low, same.high) == (one.difference, one.low, one.high)
    # A second seed of A that gets 6 more samples right: the interval is that of the seed
    # means' sampling widened by the spread between A's seeds (their means are 6 points apart),
    # by about that spread, not 12.7 times it (Student's t of two seeds).
    better = a.predicted.copy()
    better[60:66] = a.labels[60:66]
    seeds = [a, Predictions(a.labels, better)]
    two = stats.compare(seeds, [b, b], "top1", 4)
    assert two.difference == pytest.approx(13.0) and two.seeds == 2
    hits = np.mean([p.predicted == p.labels for p in seeds], axis=0) - (b.predicted == b.labels)
    low, high = 100 * np.percentile(stats.mean_draws(hits), [2.5, 97.5])
    assert high - low < two.high - two.low <= high - low + 6 + 0.5


def test_the_metrics_of_records_and_of_intervals_are_the_same_formulas():
    """The job's accumulator (torch, on the device) and the report (numpy, from predictions)
    agree on every metric of random predictions, and the predictions it keeps are the split's."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(300, 7, generator=generator)
    labels = torch.randint(0, 6, (300,), generator=generator)  # class 6 never a label
    groups = torch.randint(-1, 3, (300,), generator=generator)
    accumulator = EvalAccumulator(7, torch.device("cpu"), ("a", "b", "c"))
    for start in range(0, 300, 64):
        accumulator.update(
            logits[start : start + 64], labels[start : start + 64], groups[start : start + 64]
        )
    recorded = accumulator.compute()
    kept = accumulator.predictions(300)
    assert np.array_equal(kept.labels, labels.numpy())
    assert np.array_equal(kept.predicted, logits.argmax(1).numpy())
    for metric in ("top1", "mean_per_class", "macro_f1", "worst_region"):
        assert kept.metric(metric, 7) == pytest.approx(recorded[metric]), metric


def test_predictions_round_trip_and_a_hostile_file_is_refused():
    a, b = constructed()
    data = records.encode_predictions(
        a.labels, None, {"epoch_0": a.predicted, "alpha_0.5": b.predicted}
    )
    decoded = records.decode_predictions(data)
    assert set(decoded) == {"epoch_0", "alpha_0.5"}
    assert np.array_equal(decoded["alpha_0.5"].predicted, b.predicted)
    assert np.load(io.BytesIO(data))["epoch_0"].dtype == np.int16  # compact

    def npz(**arrays) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    hostile = {
        "not a zip": b"PK\x03\x04 nothing",
        "objects": npz(labels=np.arange(3), epoch_1=np.array([1, "x", None], dtype=object)),
        "lengths": npz(labels=np.arange(3), epoch_1=np.arange(4)),
        "negative": npz(labels=np.arange(3), epoch_1=np.array([0, -1, 2])),
        "names": npz(labels=np.arange(3), **{"../escape": np.arange(3)}),
        "floats": npz(labels=np.arange(3), epoch_1=np.zeros(3)),
    }
    for name, data in hostile.items():
        with pytest.raises(ValueError):
            records.decode_predictions(data)
            pytest.fail(f"accepted: {name}")
