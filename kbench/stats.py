"""How sure a difference is: metrics from per-sample predictions, paired bootstrap intervals and
McNemar's test, with scipy's implementations.

Both models of a dataset are evaluated on the same samples, so their difference is resampled
*paired*: each bootstrap draw takes the same samples for both. The bootstrap's generator is
seeded, so a report is the same every time it is built from the same records. With several
seeds a side, each draw also redraws each side's seeds (with replacement): the interval then
carries the spread between seeds as well as the choice of samples, and stays within what the
runs showed (a t-interval of two seeds is 12.7 standard errors wide).

The metric formulas live here only: kbench.jobs.metrics computes its records through
`from_confusion` too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 2000  # top-1 (a mean: drawn as counts, fast)
RESAMPLES_OTHER = 1000  # the other metrics: each draw recomputes them (iWildCam: ~4 ms)
SEED = 0  # the bootstrap's: a report is reproducible


def from_confusion(confusion: np.ndarray) -> dict[str, float]:
    """top1, mean per-class accuracy and macro-F1 from a confusion matrix (rows: true class).
    Classes absent from the split do not count; macro-F1 averages over the classes that occur
    as labels, as WILDS computes it (predicting an absent class still costs the true class)."""
    c = np.asarray(confusion, dtype=np.float64)
    true_per_class, predicted_per_class, hits = c.sum(axis=1), c.sum(axis=0), np.diag(c)
    present = true_per_class > 0
    samples = max(c.sum(), 1.0)
    per_class = hits[present] / true_per_class[present]
    f1 = 2 * hits[present] / (true_per_class[present] + predicted_per_class[present])
    return {
        "top1": float(hits.sum() / samples),
        "mean_per_class": float(per_class.mean()) if len(per_class) else 0.0,
        "macro_f1": float(f1.mean()) if len(f1) else 0.0,
    }


def worst_group(counts: Sequence[tuple[int, int]]) -> float:
    """The lowest accuracy over the groups present: counts are (samples, correct) per group."""
    scored = [correct / total for total, correct in counts if total]
    return min(scored) if scored else 0.0


@dataclass(frozen=True)
class Predictions:
    """One evaluation of a split: the true class and the predicted class of every sample, in
    the split's order (and each sample's group, -1 for none, where the split has groups)."""

    labels: np.ndarray
    predicted: np.ndarray
    groups: np.ndarray | None = None

    def metric(self, name: str, classes: int, index: np.ndarray | None = None) -> float:
        """`name` on the samples `index` picks (all of them by default; repeats count)."""
        labels, predicted = self.labels, self.predicted
        if index is not None:
            labels, predicted = labels[index], predicted[index]
        if name == "worst_region":
            if self.groups is None:
                raise ValueError("worst_region needs each sample's group")
            groups = self.groups if index is None else self.groups[index]
            correct = np.asarray(labels == predicted)
            counts = [
                (int((groups == g).sum()), int(correct[groups == g].sum()))
                for g in range(int(self.groups.max()) + 1)
            ]
            return worst_group(counts)
        confusion = np.bincount(labels * classes + predicted, minlength=classes * classes)
        return from_confusion(confusion.reshape(classes, classes))[name]


@dataclass(frozen=True)
class Difference:
    """A minus B in points, with its 95% interval and the bootstrap's two-sided p (the test
    the interval is: p < 0.05 where it excludes 0); McNemar's p on top-1 with one run a side."""

    difference: float
    low: float
    high: float
    p_value: float | None  # McNemar's exact test, on top-1 only
    seeds: int  # evaluations a side the difference averages
    p_bootstrap: float = 1.0  # twice the share of draws on the far side of 0, at least 1/draws

    @property
    def clear(self) -> bool:
        """The interval excludes 0: one side is better, not a coin toss."""
        return bool(self.low > 0 or self.high < 0)


def compare(
    a: Sequence[Predictions], b: Sequence[Predictions], metric: str, classes: int
) -> Difference:
    """A's metric minus B's (100 x, in points), averaged over each side's seeds, with a 95%
    percentile interval from bootstrap draws at two levels: the samples (paired: the same
    draw for both sides) and, with several seeds, the seeds of each side."""
    check_paired([*a, *b])
    labels = a[0].labels

    def difference(index: np.ndarray) -> float:  # on the samples a bootstrap draw picked
        side_a = np.mean([p.metric(metric, classes, index) for p in a])
        side_b = np.mean([p.metric(metric, classes, index) for p in b])
        return 100 * (side_a - side_b)

    # Each side's metric per seed (in points): the estimate is the difference of their means.
    per_seed = [np.array([100 * p.metric(metric, classes) for p in side]) for side in (a, b)]
    estimate = per_seed[0].mean() - per_seed[1].mean()
    if metric == "top1":  # a mean of per-sample differences in hits
        hits = np.mean([p.predicted == labels for p in a], axis=0) - np.mean(
            [p.predicted == labels for p in b], axis=0
        )
        draws = 100 * mean_draws(hits)
    else:
        draws = _draws(np.arange(len(labels)), difference)
    # Each draw also redraws the seeds of each side (with replacement): the spread between
    # seeds, as a deviation from the estimate; none with one seed a side.
    draws = draws + _seed_deviations(per_seed[0], per_seed[1], len(draws), estimate)
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(draws, [tail, 100 - tail])
    p_value = mcnemar(a[0], b[0]) if metric == "top1" and len(a) == len(b) == 1 else None
    # A two-sided bootstrap p: twice the smaller share of draws on either side of 0, never
    # below one draw's share (the resolution of RESAMPLES draws).
    far = min(np.mean(draws <= 0), np.mean(draws >= 0))
    p_bootstrap = float(min(1.0, max(2 * far, 1 / len(draws))))
    seeds = max(len(a), len(b))
    return Difference(float(estimate), float(low), float(high), p_value, seeds, p_bootstrap)


def holm(p_values: Sequence[float], alpha: float = 1 - CONFIDENCE) -> list[bool]:
    """Holm-Bonferroni: which of several tests reject at family-wise level `alpha`. The
    smallest p is held to alpha / m, the next to alpha / (m - 1), ..., until one fails; that
    one and every larger p do not reject."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    rejected = [False] * len(p_values)
    for rank, index in enumerate(order):
        if p_values[index] > alpha / (len(p_values) - rank):
            break
        rejected[index] = True
    return rejected


def check_paired(evaluations: Sequence[Predictions]) -> None:
    """Raises ValueError unless every evaluation scored the same samples (the same labels in
    the same order): only then are differences paired."""
    if any(not np.array_equal(p.labels, evaluations[0].labels) for p in evaluations):
        raise ValueError("the two sides were not evaluated on the same samples")


def mcnemar(a: Predictions, b: Predictions) -> float:
    """McNemar's exact test on top-1: of the samples exactly one model gets right, is the
    split even? (scipy.stats.binomtest, two-sided.)"""
    right_a, right_b = a.predicted == a.labels, b.predicted == b.labels
    only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    if only_a + only_b == 0:
        return 1.0
    from scipy import stats  # here: importing it takes a second, and most commands never need it

    return float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)


def accuracy_interval(p: Predictions) -> tuple[float, float]:
    """A single model's top-1 with its 95% Wilson interval (scipy.stats.binomtest)."""
    from scipy import stats

    hits = int((p.predicted == p.labels).sum())
    ci = stats.binomtest(hits, len(p.labels)).proportion_ci(CONFIDENCE, method="wilson")
    return float(ci.low), float(ci.high)


def mean_draws(values: np.ndarray) -> np.ndarray:
    """Bootstrap draws of a mean, drawn as counts: a resample of n values that take k distinct
    values is a multinomial draw of how often each is taken, so the same distribution as
    resampling the values (a test compares it with scipy.stats.bootstrap) costs k numbers a
    draw instead of n (42,791 samples: milliseconds instead of 3 CPU-seconds)."""
    distinct, counts = np.unique(values, return_counts=True)
    rng = np.random.default_rng(SEED)
    drawn = rng.multinomial(len(values), counts / len(values), size=RESAMPLES)
    return drawn @ distinct / len(values)


def _draws(data: np.ndarray, statistic: Callable) -> np.ndarray:
    """scipy's bootstrap draws of `statistic` over resampled sample indices."""
    if len(data) < 2:  # nothing to resample
        return np.array([statistic(data)])
    from scipy import stats

    result = stats.bootstrap(
        (data,),
        statistic,
        vectorized=False,
        n_resamples=RESAMPLES_OTHER,
        confidence_level=CONFIDENCE,
        method="percentile",
        rng=np.random.default_rng(SEED),
    )
    return np.asarray(result.bootstrap_distribution)


def _seed_deviations(a: np.ndarray, b: np.ndarray, draws: int, estimate: float) -> np.ndarray:
    """Per draw: the difference of the seed means when each side's per-seed values are drawn
    again with replacement, less the estimate; zeros with one seed a side."""
    rng = np.random.default_rng(SEED + 1)
    means = [rng.choice(values, size=(draws, len(values))).mean(axis=1) for values in (a, b)]
    return means[0] - means[1] - estimate
