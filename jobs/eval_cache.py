"""The evaluation split, decoded once per run: a CLIP pair evaluates it 20 times (epoch 0, ten
epochs, nine WiSE-FT points), a ResNet pair 20, with the same deterministic transform every
time, so after the first pass the batches come from memory (the device's, as uint8 at the eval
resolution) instead of being read, decoded and resized again by the workers.

Kept only when the process's share fits its budget (`KBENCH_EVAL_CACHE_GB`; default a tenth of
the GPU's memory, 2 GiB on a CPU); otherwise every pass reads the loader as before. The test
and validation splits share one budget: the first split kept leaves the rest to the other.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

BUDGET_ENV = "KBENCH_EVAL_CACHE_GB"


@dataclass
class Budget:
    bytes: int  # still free to keep batches in


class EvalBatches:
    """The eval loader's batches, on `device`: read from the loader the first time, then from
    memory when they fit what is left of the budget (an int: a budget of its own)."""

    def __init__(
        self, loader: DataLoader, device: torch.device, budget: Budget | int | None = None
    ):
        self.loader, self.device = loader, device
        if budget is None:
            budget = default_budget(device)
        self.budget = Budget(budget) if isinstance(budget, int) else budget
        self.cached: list[tuple[torch.Tensor, ...]] | None = None
        self.fits = True  # until a pass finds the split larger than the budget

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        if self.cached is not None:
            yield from self.cached
            return
        kept, used = [], 0
        for batch in self.loader:
            batch = tuple(t.to(self.device, non_blocking=True) for t in batch)
            if self.fits:
                used += sum(t.numel() * t.element_size() for t in batch)
                self.fits = used <= self.budget.bytes
                if self.fits:
                    kept.append(batch)
                else:  # over budget: nothing kept, and none of the next passes tries
                    kept.clear()
            yield batch
        if self.fits:  # a whole pass (an interrupted one keeps nothing)
            self.cached = kept
            self.budget.bytes -= used


def default_budget(device: torch.device) -> int:
    given = os.environ.get(BUDGET_ENV)
    if given:
        return int(float(given) * 2**30)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory // 10
    return 2 * 2**30
