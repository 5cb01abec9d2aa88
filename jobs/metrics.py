"""Evaluation metrics from a confusion matrix, summed across processes.

Each process evaluates its own disjoint shard of the split (no padding), so after one all-reduce
every sample has been counted exactly once, whatever the split size and the world size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from kbench.records import EvalMetrics
from kbench.stats import Predictions, from_confusion, worst_group


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of a model: the test split's metrics, every test sample's predicted class
    (None for an evaluation reused from an earlier one, whose predictions are kept already),
    the validation split's metrics (where the run has one) and the seconds it took."""

    metrics: EvalMetrics
    predictions: Predictions | None = None
    val: EvalMetrics | None = None
    seconds: float = 0.0


class EvalAccumulator:
    """`groups`: names of the groups samples may belong to (FMoW's regions) for the worst-group
    accuracy; a sample in none of them has group -1."""

    def __init__(self, num_classes: int, device: torch.device, groups: tuple[str, ...] = ()):
        self.num_classes, self.groups = num_classes, groups
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        # [samples, top-5 hits, summed loss]; float64 so large splits sum exactly enough.
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)
        # Per group: [samples, correct].
        self.group_counts = torch.zeros(len(groups), 2, dtype=torch.int64, device=device)
        # Every sample's class and prediction, kept on the device until the pass ends.
        self._labels: list[torch.Tensor] = []
        self._predicted: list[torch.Tensor] = []
        self._groups: list[torch.Tensor] = []

    @torch.no_grad()
    def update(
        self, logits: torch.Tensor, targets: torch.Tensor, groups: torch.Tensor | None = None
    ) -> None:
        """Counts added on the device, without waiting for it: no host sync until `compute`
        (index_add_, where bincount and boolean indexing would read sizes back every batch)."""
        predictions = logits.argmax(dim=1)
        self._labels.append(targets.to(torch.int32))
        self._predicted.append(predictions.to(torch.int32))
        if self.groups:
            if groups is None:
                raise ValueError("this split's samples belong to groups: give each one's group")
            self._groups.append(groups.to(torch.int32))
            member = groups >= 0
            slot = torch.where(member, groups, 0)  # samples in no group add zeros below
            correct = member & (predictions == targets)
            self.group_counts[:, 0].index_add_(0, slot, member.long())
            self.group_counts[:, 1].index_add_(0, slot, correct.long())
        index = targets * self.num_classes + predictions
        self.confusion.view(-1).index_add_(0, index, torch.ones_like(index))
        k = min(5, self.num_classes)
        top5 = (logits.topk(k, dim=1).indices == targets[:, None]).any(dim=1).sum()
        loss = F.cross_entropy(logits.float(), targets, reduction="sum")
        self.sums += torch.stack([torch.tensor(len(targets), device=loss.device), top5, loss]).to(
            self.sums.dtype
        )

    def all_reduce(self) -> None:
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.confusion)
            dist.all_reduce(self.sums)
            dist.all_reduce(self.group_counts)

    def compute(self) -> EvalMetrics:
        """The split's metrics (the formulas are kbench.stats', which the report's intervals
        use too)."""
        samples, top5_hits, loss_sum = self.sums.tolist()
        n = max(samples, 1)
        confusion = from_confusion(self.confusion.cpu().numpy())
        metrics: EvalMetrics = {
            "samples": int(samples),
            "top1": confusion["top1"],
            "top5": top5_hits / n,
            "mean_per_class": confusion["mean_per_class"],
            "macro_f1": confusion["macro_f1"],
            "loss": loss_sum / n,
        }
        if self.groups:
            counts = self.group_counts.cpu().tolist()
            metrics["per_group"] = {
                name: {"samples": total, "top1": correct / total if total else None}
                for name, (total, correct) in zip(self.groups, counts, strict=True)
            }
            # Worst over the groups that occur in the split, as WILDS does for FMoW's regions.
            metrics["worst_region"] = worst_group(counts)
        return metrics

    def predictions(self, samples: int) -> Predictions:
        """Every sample's true and predicted class (and group), in the split's order: process
        r evaluated samples r, r + world, ... (the strided shards of build_loaders), so the
        processes' lists, gathered, interleave back into it."""
        columns = [torch.cat(self._labels), torch.cat(self._predicted)] if self._labels else []
        if self.groups:
            columns.append(torch.cat(self._groups))
        mine = torch.stack(columns) if columns else torch.zeros(0, 0, dtype=torch.int32)
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        rows = 3 if self.groups else 2
        if world == 1:
            parts = [mine.reshape(rows, -1)]
        else:  # all_gather wants equal sizes: pad each share to the largest
            size = -(-samples // world)
            padded = torch.full((rows, size), -1, dtype=torch.int32, device=self.confusion.device)
            padded[:, : mine.shape[-1]] = mine.reshape(rows, -1)
            parts = [torch.empty_like(padded) for _ in range(world)]
            dist.all_gather(parts, padded)
        table = np.zeros((rows, samples), dtype=np.int64)
        for rank, part in enumerate(parts):
            share = len(range(rank, samples, world))
            table[:, rank::world] = part[:, :share].cpu().numpy()
        return Predictions(table[0], table[1], table[2] if self.groups else None)
