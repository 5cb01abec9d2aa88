"""Evaluation metrics from a confusion matrix, summed across processes.

Each process evaluates its own disjoint shard of the split (no padding), so after one all-reduce
every sample has been counted exactly once, whatever the split size and the world size.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


class EvalAccumulator:
    def __init__(self, num_classes: int, device: torch.device) -> None:
        self.num_classes = num_classes
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        # [samples, top-5 hits, summed loss]; float64 so large splits sum exactly enough.
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)

    @torch.no_grad()
    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        predictions = logits.argmax(dim=1)
        index = targets * self.num_classes + predictions
        self.confusion += torch.bincount(index, minlength=self.num_classes**2).view_as(
            self.confusion
        )
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

    def compute(self) -> dict[str, float | int]:
        c = self.confusion.double().cpu()
        samples, top5_hits, loss_sum = self.sums.tolist()
        true_per_class = c.sum(dim=1)
        predicted_per_class = c.sum(dim=0)
        hits = c.diag()
        present = true_per_class > 0  # classes absent from the split do not count
        per_class = hits[present] / true_per_class[present]
        # Macro-F1 over classes that occur as label or prediction, like scikit-learn's default.
        seen = present | (predicted_per_class > 0)
        f1 = 2 * hits[seen] / (true_per_class[seen] + predicted_per_class[seen])
        n = max(samples, 1)
        return {
            "samples": int(samples),
            "top1": float(hits.sum() / n),
            "top5": top5_hits / n,
            "mean_per_class": float(per_class.mean()) if len(per_class) else 0.0,
            "macro_f1": float(f1.mean()) if len(f1) else 0.0,
            "loss": loss_sum / n,
        }
