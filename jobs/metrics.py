"""Evaluation metrics from a confusion matrix, summed across processes.

Each process evaluates its own disjoint shard of the split (no padding), so after one all-reduce
every sample has been counted exactly once, whatever the split size and the world size.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


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

    @torch.no_grad()
    def update(
        self, logits: torch.Tensor, targets: torch.Tensor, groups: torch.Tensor | None = None
    ) -> None:
        """Counts added on the device, without waiting for it: no host sync until `compute`
        (index_add_, where bincount and boolean indexing would read sizes back every batch)."""
        predictions = logits.argmax(dim=1)
        if self.groups:
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

    def compute(self) -> dict[str, float | int]:
        c = self.confusion.double().cpu()
        samples, top5_hits, loss_sum = self.sums.tolist()
        true_per_class = c.sum(dim=1)
        predicted_per_class = c.sum(dim=0)
        hits = c.diag()
        present = true_per_class > 0  # classes absent from the split do not count
        per_class = hits[present] / true_per_class[present]
        # Macro-F1 over the classes that occur as labels, as WILDS computes it for iWildCam
        # (scikit-learn with labels=unique(y_true)); predicting an absent class still costs
        # the true class its recall.
        f1 = 2 * hits[present] / (true_per_class[present] + predicted_per_class[present])
        n = max(samples, 1)
        metrics = {
            "samples": int(samples),
            "top1": float(hits.sum() / n),
            "top5": top5_hits / n,
            "mean_per_class": float(per_class.mean()) if len(per_class) else 0.0,
            "macro_f1": float(f1.mean()) if len(f1) else 0.0,
            "loss": loss_sum / n,
        }
        if self.groups:
            counts = self.group_counts.cpu().tolist()
            metrics["per_group"] = {
                name: {"samples": total, "top1": correct / total if total else None}
                for name, (total, correct) in zip(self.groups, counts, strict=True)
            }
            # Worst over the groups that occur in the split, as WILDS does for FMoW's regions.
            scored = [g["top1"] for g in metrics["per_group"].values() if g["samples"]]
            metrics["worst_region"] = min(scored) if scored else 0.0
        return metrics
