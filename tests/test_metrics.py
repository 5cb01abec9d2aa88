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
    # F1 per class = 2TP / (2TP + FP + FN): c0 6/8, c1 2/4, c2 2/3, c3 0 (predicted only)
    assert math.isclose(m["macro_f1"], (6 / 8 + 2 / 4 + 2 / 3 + 0) / 4)
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
