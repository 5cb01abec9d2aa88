"""Records as a job writes them, typed by kbench.records, for tests that fill a store by hand;
and `assert_written`, which holds what a job wrote to the contract exactly (no key it does not
declare, where a reader only checks what it needs)."""

from __future__ import annotations

import types
import typing
from typing import Any, get_type_hints

import numpy as np
from typing_extensions import is_typeddict

from kbench import records
from kbench.jobs.metrics import Evaluation
from kbench.jobs.recorder import Recorder
from kbench.records import (
    EpochRecord,
    EvalMetrics,
    LocalProcess,
    ResultRecord,
    WiseFtPoint,
)
from kbench.runs import Run, create_run
from kbench.spec import TrainConfig, load_recipe, parse_grid
from kbench.stats import Predictions
from kbench.storage import write_json

ENVIRONMENT: records.Environment = {
    "device": "NVIDIA H100",
    "torch": "2.14.1",
    "torchvision": "0.29.1",
    "open_clip": "3.3.0",
    "python": "3.11",
}
TIME = "2026-11-27T00:00:00+00:00"


def metrics(top1: float, samples: int = 100, **more: Any) -> EvalMetrics:
    """What an evaluation returns (kbench.jobs.metrics)."""
    found: EvalMetrics = {
        "samples": samples,
        "top1": top1,
        "top5": 1.0,
        "mean_per_class": top1,
        "macro_f1": top1,
        "loss": 1.0,
    }
    return typing.cast(EvalMetrics, {**found, **more})


def epoch_record(
    n: int,
    headline: float,
    metric: str = "top1",
    seconds: float = 360.0,
    samples: int = 1000,
    gpus: int = 4,
    val: float | None = -1.0,
    **more: Any,
) -> EpochRecord:
    """Epoch `n` with `headline` as every accuracy (top-1, mean per class, macro-F1) on the
    test split, and `val` on a validation split held out of training (default: the same as
    the test split's; None: no validation split)."""
    record: EpochRecord = {
        **metrics(headline, samples),
        "top5": 0.99,
        "loss": 0.5,
        "epoch": n,
        "split": "test",
        "headline_metric": metric,
        "headline": headline,
        "train_loss": None if n == 0 else 0.4,
        "lr": None if n == 0 else 1e-3,
        "epoch_seconds": 0.0 if n == 0 else seconds,
        "images_per_s": 0.0 if n == 0 else 1000.0,
        "images_per_s_per_gpu": None,
        "world_size": gpus or 1,
        "gpus": gpus,
        "time": TIME,
        "eval_seconds": 0.0,
    }
    if val is not None:
        chosen_on = headline if val == -1.0 else val
        record["val"] = {**metrics(chosen_on, 100), "split": "holdout", "headline": chosen_on}
    return typing.cast(EpochRecord, {**record, **more})


def wise_ft_point(alpha: float, headline: float, top1: float, samples: int) -> WiseFtPoint:
    return {**metrics(top1, samples), "alpha": alpha, "headline": headline}


def result_record(
    pair: str,
    epochs: list[EpochRecord],
    *,
    dataset: str | None = None,
    model: str | None = None,
    wise_ft: list[WiseFtPoint] | None = None,
    parameters: int = 1000,
) -> ResultRecord:
    """result.json of a pair that trained `epochs` (its best by headline, the first of
    equals); dataset and model read from `pair` (<dataset>_<model>) unless given."""
    trained = [e for e in epochs if e["epoch"] > 0]
    best = max(trained, key=lambda e: e["headline"]) if trained else None
    zero = next((e["headline"] for e in epochs if e["epoch"] == 0), None)
    name_dataset, _, name_model = pair.partition("_")
    return {
        "pair": pair,
        "dataset": dataset or name_dataset,
        "model": model or name_model,
        "headline_metric": epochs[-1]["headline_metric"],
        "best_epoch": best["epoch"] if best else None,
        "best": best["headline"] if best else None,
        "final": epochs[-1]["headline"],
        "zero_shot": zero,
        "wise_ft": wise_ft,
        "epochs": max(e["epoch"] for e in epochs),
        "train_seconds": sum(e["epoch_seconds"] for e in epochs),
        "parameters": parameters,
        "world_size": epochs[-1]["world_size"],
        "gpus": epochs[-1]["gpus"],
        "environment": ENVIRONMENT,
        "start": "random init",
        "selection": {
            "select_on": "val",
            "split": "holdout",
            "metric": epochs[-1]["headline_metric"],
            "epoch": best["epoch"] if best else None,
            "alpha": None,
        },
    }


def local_process(state: str, **more: Any) -> LocalProcess:
    """A local.json of a process that is not this machine's (so not checked, not signalled)."""
    found: dict[str, Any] = {
        "state": state,
        "pid": 1,
        "host": "elsewhere.example",
        "since_boot": 0.0,
        "command": ["torchrun"],
        "started": TIME,
        **more,
    }
    return typing.cast(LocalProcess, found)


def assert_written(kind: Any, data: Any, where: str = "record") -> None:
    """`data` is a `kind` (kbench.records.parse accepts it) with no key that `kind` does not
    declare, at any depth."""
    records.parse(kind, data, where)
    extra = _undeclared(kind, data, "")
    assert not extra, f"{where}: keys outside the contract: {', '.join(extra)}"


def _undeclared(hint: Any, data: Any, path: str) -> list[str]:
    """The keys of `data` that its type `hint` does not declare."""
    if is_typeddict(hint) and isinstance(data, dict):
        fields = get_type_hints(hint)
        found = [f"{path}{key}" for key in data if key not in fields]
        for key, value in data.items():
            if key in fields:
                found += _undeclared(fields[key], value, f"{path}{key}.")
        return found
    arguments = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return [k for a in arguments if a is not type(None) for k in _undeclared(a, data, path)]
    if origin is list and isinstance(data, list):
        return [k for item in data for k in _undeclared(arguments[0], item, path)]
    if origin is dict and isinstance(data, dict):
        return [k for item in data.values() for k in _undeclared(arguments[1], item, path)]
    if origin is typing.Annotated:
        return _undeclared(arguments[0], data, path)
    return []


def write_pair(
    store: Any,
    run_id: str,
    pair: str,
    epochs: list[EpochRecord],
    done: bool = True,
    local_state: LocalProcess | None = None,
    wise_ft: list[WiseFtPoint] | None = None,
) -> None:
    """A pair's records as its job leaves them: metrics.json, and result.json once `done`
    (the separate records, as an older kbench wrote them before summary.json); the local
    backend's local.json when given."""
    write_json(store, records.pair_key(run_id, pair, records.METRICS), {"epochs": epochs})
    if done:
        result = result_record(pair, epochs, wise_ft=wise_ft)
        write_json(store, records.pair_key(run_id, pair, records.RESULT), result)
    if local_state:
        write_json(store, records.pair_key(run_id, pair, records.LOCAL_STATE), local_state)


# A run of two tiny pairs, as `kbench submit` creates it; and one of a model of each size.
TWO_PAIRS = "datasets: [synthetic]\nmodels: {clip-tiny: {epochs: 3}, resnet-tiny: {epochs: 3}}\n"
FOUR_MODELS = "datasets: [synthetic]\nmodels: [clip-tiny, resnet-tiny, clip-vit-b32, resnet50]\n"


def job_recorder(store, run_id: str, pair) -> Recorder:
    """The Recorder a pair's training loop writes through: rank 0 of one CPU process, with a
    validation split held out of training where the pair chooses on one."""
    val_split = "holdout" if pair.config.select_on == "val" else None
    return Recorder(
        store, run_id, pair.name, pair.config, eval_split="test", val_split=val_split, steps=4,
        images=400, rank=0, world=1, gpus=0,
    )  # fmt: skip


def new_run(store, run_id: str, text: str = TWO_PAIRS) -> list:
    """The pairs of a run of this grid, created in the store as `submit` creates it."""
    grid = parse_grid(text, "g.yaml", "g")
    create_run(store, Run.new(run_id, grid, "local"), grid.pairs)
    return grid.pairs


def train_pair(store, run_id: str, pair, headlines: dict[int, float]) -> Recorder:
    """The pair's records as the training loop leaves them: one evaluation per epoch through
    the Recorder, then the result."""
    recorder = job_recorder(store, run_id, pair)
    for epoch, top1 in headlines.items():
        seconds = 0.0 if epoch == 0 else 2.0
        recorder.epoch(
            epoch,
            Evaluation(metrics(top1), val=metrics(top1)),
            train_loss=None if epoch == 0 else 1.0,
            seconds=seconds,
        )
    recorder.finish(parameters=10, wise_ft=None, environment=ENVIRONMENT)
    return recorder


def scored(labels, right: int, first: int = 0, val: float | None = None) -> Evaluation:
    """An evaluation of the test split `labels` (metrics and predictions): samples `first` to
    `first + right` right, the rest one class off (of 10); the validation split's top-1 `val`
    (default: the test split's)."""
    index = np.arange(len(labels))
    predicted = np.where((first <= index) & (index < first + right), labels, (labels + 1) % 10)
    top1 = right / len(labels)
    return Evaluation(
        metrics(top1, len(labels)),
        Predictions(labels, predicted),
        val=metrics(top1 if val is None else val, 50),
    )


def marked(model: Any, value: float) -> dict:
    """The model's state dict with every floating tensor filled with `value`: weights no
    random init could give, to recognise once loaded."""
    state = model.state_dict()
    return {k: v.fill_(value) if v.is_floating_point() else v for k, v in state.items()}


def synthetic_config(model: str, pretrained: bool = True) -> TrainConfig:
    """The model's recipe on the synthetic dataset."""
    recipe = {**load_recipe(model), "dataset": "synthetic", "model": model}
    return TrainConfig.from_dict({**recipe, "pretrained": pretrained})
