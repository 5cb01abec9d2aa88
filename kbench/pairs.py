"""A pair's records and the facts derived from them, decided here and nowhere else: the pair's
state, its best epoch, its zero-shot number, its throughput. The trainer's `result.json`,
`kbench status` and the report all ask this module, so they cannot disagree.

Torch-free: the client and the training job share it.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from statistics import mean
from typing import Literal, TypeGuard

from kbench.records import (
    Environment,
    EpochRecord,
    ProgressRecord,
    ResultRecord,
    Selection,
    WiseFtPoint,
)
from kbench.spec import TrainConfig


class PairState(str, Enum):
    """Where a pair stands. Backends report it; a pair's records can settle it (a result)."""

    QUEUED = "queued"  # waiting for admission (a suspended Job: Kueue)
    PENDING = "pending"  # submitted, not training yet
    RUNNING = "running"
    RESTARTING = "restarting"  # running again after a failed attempt
    SUCCEEDED = "succeeded"  # its result is written
    FAILED = "failed"
    CANCELLED = "cancelled"
    GONE = "gone"  # its Job was removed (TTL, kubectl delete) before it wrote a result
    PRUNED = "pruned"  # a sweep's trial that successive halving stopped (kbench.halving)

    @property
    def finished(self) -> bool:
        return self in (PairState.SUCCEEDED, PairState.PRUNED, *UNSUCCESSFUL)

    @property
    def unsuccessful(self) -> bool:
        return self in UNSUCCESSFUL


UNSUCCESSFUL = (PairState.FAILED, PairState.CANCELLED, PairState.GONE)


@dataclass(frozen=True)
class Outcome:
    """What a backend says of one pair: its state, and why or how, in a few words."""

    state: PairState
    detail: str = ""

    def text(self) -> str:
        """In a few words: the detail says what happened ("created"), unless it went wrong."""
        if self.state.unsuccessful or not self.detail:
            return f"{self.state.value}: {self.detail}" if self.detail else self.state.value
        return self.detail


@dataclass
class PairRecords:
    """What a pair's job wrote to the store (kbench.records has the keys and types)."""

    pair: str
    config: TrainConfig  # config.json
    epochs: list[EpochRecord] = field(default_factory=list)  # metrics.json, in order
    result: ResultRecord | None = None  # result.json, once the pair finished
    progress: ProgressRecord | None = None  # summary.json's progress record, when asked for
    predictions: tuple[str, ...] = ()  # the evaluations predictions.npz holds (summary.json)

    @property
    def trained(self) -> list[EpochRecord]:
        """The epochs after training (epoch 0 is the model before any)."""
        return [e for e in self.epochs if e["epoch"] >= 1]

    @property
    def last(self) -> EpochRecord | None:
        return self.epochs[-1] if self.epochs else None

    @property
    def zero_shot(self) -> float | None:
        return zero_shot(self.epochs)

    @property
    def best(self) -> EpochRecord | None:
        """The epoch the pair's config chooses (select_on), by the dataset's own metric."""
        return chosen_epoch(self.epochs, self.config.select_on)

    @property
    def images_per_s(self) -> float | None:
        """Mean training throughput over the trained epochs, all processes together."""
        trained = self.trained
        return mean(e["images_per_s"] for e in trained) if trained else None

    @property
    def train_seconds(self) -> float:
        return sum(e["epoch_seconds"] for e in self.epochs)


def chosen_epoch(
    epochs: list[EpochRecord], select_on: str, metric: str = "headline"
) -> EpochRecord | None:
    """The fine-tuned epoch a run reports, chosen by `metric` (the headline, or e.g. "top1")
    on the split `select_on` names: the trained epoch (>= 1) with the highest value on the
    validation split (`val`), or on the test split (`test`: the study's way, optimistic), the
    first of equals; or the last trained epoch (`last`: no choice). Epoch 0 (CLIP's zero-shot
    head) is reported on its own, never as fine-tuning's; a diverged epoch (NaN) is never
    chosen. None before any epoch trained, or when every trained epoch diverged."""
    trained = [e for e in epochs if e["epoch"] >= 1 and finite(value(e, metric))]
    if select_on == "last":
        return trained[-1] if trained else None
    scored = [(e, v) for e in trained if finite(v := selected_value(e, select_on, metric))]
    return max(scored, key=lambda found: found[1])[0] if scored else None


def chosen_alpha(
    curve: list[WiseFtPoint], select_on: str, metric: str = "headline"
) -> WiseFtPoint | None:
    """WiSE-FT's point a run reports, chosen as its epoch is (`chosen_epoch`); `last`: alpha 1,
    the fine-tuned end."""
    points = [p for p in curve if finite(value(p, metric))]
    if select_on == "last":
        return next((p for p in points if p["alpha"] == 1.0), None)
    scored = [(p, v) for p in points if finite(v := selected_value(p, select_on, metric))]
    return max(scored, key=lambda found: found[1])[0] if scored else None


def selected_value(record: EpochRecord | WiseFtPoint, select_on: str, metric: str) -> float | None:
    """What a record scores on the split that chooses: its validation split's `metric` (None
    where it has none: an older kbench's record), or its test split's."""
    if select_on == "val":
        chosen_on = record.get("val")
        return value(chosen_on, metric) if chosen_on is not None else None
    return value(record, metric)


def zero_shot(epochs: list[EpochRecord], metric: str = "headline") -> float | None:
    """`metric` at epoch 0, the model before training; None where there is none."""
    return next((value(e, metric) for e in epochs if e["epoch"] == 0), None)


def value(record: Mapping[str, object], metric: str) -> float | None:
    """A record's value of a metric named at run time (a dataset's headline metric, "top1",
    ...); None where the record has none (worst_region outside FMoW)."""
    found = record.get(metric)
    return found if isinstance(found, (int, float)) else None


def pair_state(records: PairRecords, backend: Outcome | None) -> Outcome:
    """A written result settles it; else the backend's word; else the records: epochs written
    mean it trained, none that it has not started."""
    if records.result is not None:
        return Outcome(PairState.SUCCEEDED)
    if backend is not None:
        return backend
    return Outcome(PairState.RUNNING if records.epochs else PairState.PENDING)


def per_gpu(images_per_s: float, gpus: int) -> float | None:
    """Throughput per GPU; None on a CPU, where there is no GPU to divide by."""
    return images_per_s / gpus if gpus else None


def result_record(
    records: PairRecords,
    *,
    headline_metric: str,
    parameters: int,
    world_size: int,
    gpus: int,
    wise_ft: list[WiseFtPoint] | None,
    environment: Environment,
    start: str | None = None,
) -> ResultRecord:
    """The pair's result.json, from its epoch records; `start`: the weights it started from."""
    best, last = records.best, records.last
    if last is None:
        raise ValueError(f"{records.pair}: a result needs an evaluated epoch")
    config = records.config
    alpha = chosen_alpha(wise_ft, config.select_on) if wise_ft else None
    chosen_on = best.get("val") if best and config.select_on == "val" else None
    selection: Selection = {
        "select_on": typing.cast(Literal["val", "test", "last"], config.select_on),
        "split": {"val": chosen_on["split"] if chosen_on else None, "test": last["split"]}.get(
            config.select_on
        ),
        "metric": headline_metric,
        "epoch": best["epoch"] if best else None,
        "alpha": alpha["alpha"] if alpha else None,
    }
    return {
        "pair": records.pair,
        "dataset": config.dataset,
        "model": config.model,
        "headline_metric": headline_metric,
        "best_epoch": best["epoch"] if best else None,
        "best": best["headline"] if best else None,
        "final": last["headline"],
        "zero_shot": records.zero_shot,
        "wise_ft": wise_ft,
        "epochs": config.epochs,
        "train_seconds": records.train_seconds,
        "parameters": parameters,
        "world_size": world_size,
        "gpus": gpus,
        "environment": environment,
        "start": start,
        "selection": selection,
    }


def finite(value: object) -> TypeGuard[float]:
    """A number that is neither NaN nor infinite (NaN marks a diverged epoch)."""
    return isinstance(value, (int, float)) and math.isfinite(value)
