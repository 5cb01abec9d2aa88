"""The report's methods table, where a grid asks for more than fine-tuning: per dataset and
model, zero-shot (CLIP), the linear probe, LP-FT and fine-tuning, each at the choice its run
made, with its interval and the GPU-hours it took; and each model's best method, chosen by
its validation top-1 (never the test split's), which the comparison of the families then uses."""

from __future__ import annotations

from statistics import mean
from typing import Any

from kbench.methods import FINE_TUNE, METHODS
from kbench.pairs import PairState
from kbench.registry import TOP1


def method_table(pairs: list[dict]) -> tuple[list[dict], dict[tuple[str, str], str]]:
    """The table's rows, and (dataset, model) -> its best method on validation."""
    rows, best = [], {}
    for dataset in dict.fromkeys(p["dataset"] for p in pairs):
        for model in dict.fromkeys(p["model"] for p in pairs if p["dataset"] == dataset):
            own = [p for p in pairs if p["dataset"] == dataset and p["model"] == model]
            found = [_row(dataset, model, m, [p for p in own if p["method"] == m]) for m in METHODS]
            found = [r for r in found if r["pairs"]]
            ranked = [r for r in found if r["val_top1"] is not None]
            if ranked:
                choice = max(ranked, key=lambda r: r["val_top1"])
                choice["best"] = True
                best[(dataset, model)] = choice["method"]
            zero_shot = _zero_shot_row(dataset, model, own)
            rows += ([zero_shot] if zero_shot else []) + found
    return rows, best


def _row(dataset: str, model: str, method: str, pairs: list[dict]) -> dict[str, Any]:
    done = pairs and all(p["state"] == PairState.SUCCEEDED.value for p in pairs)
    top1 = [p["chosen_top1"] for p in pairs]
    val = [v for v in map(_val_top1, pairs) if v is not None]
    return {
        "dataset": dataset,
        "model": model,
        "method": method,
        "pairs": [p["pair"] for p in pairs],
        "seeds": len(pairs),
        "top1": mean(top1) if done and None not in top1 else None,
        # One run: its own interval over the test samples; several seeds: the comparison's.
        "interval": pairs[0]["chosen_top1_interval"] if done and len(pairs) == 1 else None,
        "val_top1": mean(val) if done and len(val) == len(pairs) else None,  # what chooses
        "gpu_hours": sum(p["gpu_hours"] for p in pairs) if all(p["gpus"] for p in pairs) else None,
        "seconds": sum(3600 * p["hours"] for p in pairs),  # wall time, on whatever trained it
        "best": False,
    }


def _zero_shot_row(dataset: str, model: str, pairs: list[dict]) -> dict[str, Any] | None:
    """CLIP's zero-shot head: the fine-tuned pairs' epoch 0 (not a candidate for best: the
    comparison of the families is of trained models)."""
    tuned = [p for p in pairs if p["method"] == FINE_TUNE and p["family"] == "clip"]
    values = [p["zero_shot_top1"] for p in tuned]
    if not tuned or None in values:
        return None
    return {
        "dataset": dataset,
        "model": model,
        "method": "zero-shot",
        "pairs": [p["pair"] for p in tuned],
        "seeds": len(tuned),
        "top1": mean(values),
        "interval": None,
        "val_top1": None,
        "gpu_hours": None,
        "seconds": None,
        "best": False,
    }


def _val_top1(pair: dict) -> float | None:
    """The validation top-1 at the epoch the pair chose by top-1."""
    epoch = pair["chosen_top1_epoch"]
    record = next((e for e in pair["epochs"] if e["epoch"] == epoch), None)
    val = record.get("val") if record else None
    return val.get(TOP1) if val else None
