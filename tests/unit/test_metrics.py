"""Evaluation metrics against values worked out by hand."""

from __future__ import annotations

import math

import torch

from kbench.jobs.metrics import EvalAccumulator


def logits_for(predictions: list[int], num_classes: int) -> torch.Tensor:
    """Logits whose argmax is `predictions` and whose next-best class is (p + 1) % C."""
    logits = torch.zeros(len(predictions), num_classes)
    for row, p in enumerate(predictions):
        logits[row, p] = 2.0
        logits[row, (p + 1) % num_classes] = 1.0
    return logits


def test_metrics_from_a_known_confusion_matrix():
    # labels:      0 0 0 0 1 1 2 2   (class 3 never occurs as a label)
    # predictions: 0 0 0 1 1 3 2 0
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    predictions = [0, 0, 0, 1, 1, 3, 2, 0]
    acc = EvalAccumulator(num_classes=6, device=torch.device("cpu"))
    acc.update(logits_for(predictions[:5], 6), labels[:5])  # in two batches
    acc.update(logits_for(predictions[5:], 6), labels[5:])
    m = acc.compute()
    assert m["samples"] == 8
    assert math.isclose(m["top1"], 5 / 8)
    # per class: 3/4, 1/2, 1/2 -> mean over the three classes that occur
    assert math.isclose(m["mean_per_class"], (3 / 4 + 1 / 2 + 1 / 2) / 3)
    # F1 per class = 2TP / (2TP + FP + FN): c0 6/8, c1 2/4, c2 2/3; class 3, predicted but
    # never a label, is left out of the mean (WILDS' convention for iWildCam)
    assert math.isclose(m["macro_f1"], (6 / 8 + 2 / 4 + 2 / 3) / 3)
    # top-5 with 6 classes: the true class is in the top 5 unless it has the lowest logit; here
    # every label is either the argmax, the runner-up, or ties at 0 with four others.
    assert 0 < m["top5"] <= 1
    expected_loss = torch.nn.functional.cross_entropy(logits_for(predictions, 6), labels)
    assert math.isclose(m["loss"], float(expected_loss), rel_tol=1e-6)


def test_top5_counts_hits_beyond_the_argmax():
    acc = EvalAccumulator(num_classes=10, device=torch.device("cpu"))
    logits = torch.arange(10, dtype=torch.float32).repeat(3, 1)  # ranking 9, 8, 7, 6, 5, ...
    acc.update(logits, torch.tensor([9, 5, 0]))
    m = acc.compute()
    assert math.isclose(m["top1"], 1 / 3)
    assert math.isclose(m["top5"], 2 / 3)  # 9 and 5 are in the top five, 0 is not


def test_macro_f1_is_wilds_f1_macro():
    """WILDS scores iWildCam with scikit-learn's f1_score over the labels present."""
    from sklearn.metrics import f1_score

    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 30, (500,), generator=generator)  # some of 40 classes never occur
    logits = torch.randn(500, 40, generator=generator)
    logits[torch.arange(250), labels[:250]] += 3  # half of them right
    acc = EvalAccumulator(num_classes=40, device=torch.device("cpu"))
    acc.update(logits, labels)
    expected = f1_score(labels, logits.argmax(1), average="macro", labels=torch.unique(labels))
    assert math.isclose(acc.compute()["macro_f1"], expected, rel_tol=1e-12)


def test_worst_group_leaves_out_samples_in_no_group_and_absent_groups():
    # groups: a a a b b -1 -1 ; group c never occurs
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    predictions = [0, 1, 0, 0, 2, 1, 1]  # a: 2/3 right, b: 1/2, the ungrouped: 0/2
    groups = torch.tensor([0, 0, 0, 1, 1, -1, -1])
    acc = EvalAccumulator(num_classes=3, device=torch.device("cpu"), groups=("a", "b", "c"))
    acc.update(logits_for(predictions[:4], 3), labels[:4], groups[:4])
    acc.update(logits_for(predictions[4:], 3), labels[4:], groups[4:])
    m = acc.compute()
    assert m["per_group"] == {
        "a": {"samples": 3, "top1": 2 / 3},
        "b": {"samples": 2, "top1": 1 / 2},
        "c": {"samples": 0, "top1": None},
    }
    assert m["worst_region"] == 1 / 2
    assert math.isclose(m["top1"], 3 / 7)  # every sample counts for the overall metrics
