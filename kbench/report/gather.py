"""A run's records, read and turned into the one results dict that every renderer uses: a row
per pair (its state, flags, the epochs its run chose, intervals), the datasets' comparisons and
the overall tally (kbench.report.compare), the per-epoch table and the published study beside
the run."""

from __future__ import annotations

import math
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kbench import records, stats
from kbench.budget import pair_hours
from kbench.methods import FINE_TUNE, LP_FT
from kbench.pairs import Outcome, PairRecords, PairState, chosen_epoch, finite, pair_state
from kbench.pairs import zero_shot as zero_shot_of
from kbench.records import EpochRecord, StagedCopy
from kbench.registry import DATASETS, TOP1, model_family
from kbench.report import published
from kbench.report.compare import compare_dataset, epoch_hours, tally, top1_at, verdict
from kbench.report.methods import method_table
from kbench.report.sweeps import sweep_tables, trial_names
from kbench.runs import Run, read_pairs
from kbench.spec import TrainConfig
from kbench.stats import Predictions
from kbench.storage import Store


def gather(store: Store, run: Run, states: dict[str, Outcome], workers: int = 32) -> dict:
    """Read every pair's config, epoch records and result, then the predictions of the pairs
    that kept them (`workers` pairs at a time: S3 GETs are latency-bound), and build the
    results."""
    # A sweep's trials scored validation alone: the sweep table shows them, the comparison
    # is of the chosen settings' seeds.
    trials = trial_names(run)
    found = [p for p in read_pairs(store, run, workers=workers) if p.pair not in trials]
    results = build_results(run, found, states, read_predictions(store, run, found, workers))
    results["sweeps"] = sweep_tables(store, run)
    return results


# A pair's evaluations by name ("epoch_3", "alpha_0.5"), or why they could not be read.
PairPredictions = dict[str, Predictions] | str


def read_predictions(
    store: Store, run: Run, found: list[PairRecords], workers: int = 32
) -> dict[str, PairPredictions]:
    """predictions.npz of every pair whose summary lists some (one GET each, concurrently)."""

    def one(pair: PairRecords) -> PairPredictions:
        try:
            data = store.read(records.pair_key(run.run_id, pair.pair, records.PREDICTIONS))
            return records.decode_predictions(data)
        except KeyError:
            return "its summary lists predictions, but predictions.npz is missing"
        except ValueError as e:
            return f"predictions.npz is not kbench's: {e}"

    listed = [p for p in found if p.predictions]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(zip((p.pair for p in listed), pool.map(one, listed), strict=True))


def build_results(
    run: Run,
    found: list[PairRecords],
    states: dict[str, Outcome],
    predictions: dict[str, PairPredictions] | None = None,
) -> dict:
    predictions = predictions or {}
    kept = {k: v for k, v in predictions.items() if isinstance(v, dict)}
    pairs = [_pair(p, states.get(p.pair), predictions.get(p.pair)) for p in found]
    gpu_type = (run.cluster or {}).get("gpu_type")  # as submitted: the budget's estimate
    for row, records_of in zip(pairs, found, strict=True):
        estimate = pair_hours(records_of.config, gpu_type if isinstance(gpu_type, str) else None)
        row["estimated_gpu_hours"] = estimate
    # With several methods, each model is compared at its best on validation (kbench.report.
    # methods); the others are in the methods table.
    methods, best = method_table(pairs) if {p["method"] for p in pairs} != {FINE_TUNE} else ([], {})
    compared = [p for p in pairs if best.get((p["dataset"], p["model"]), FINE_TUNE) == p["method"]]
    datasets = []
    for name in dict.fromkeys(p["dataset"] for p in pairs):  # grid order
        one = compare_dataset(name, [p for p in compared if p["dataset"] == name], kept)
        if best:
            one["methods"] = {
                side: best.get((name, one[f"{side}_model"])) for side in ("clip", "resnet")
            }
        datasets.append(one)
    top1 = tally(datasets, TOP1)
    overall = {
        "datasets": len(datasets),
        "metric": TOP1,  # what the count is in: the study's metric
        "top1": top1,
        "headline": tally(datasets, "headline"),  # each dataset's own metric
        # Who "CLIP" and "ResNet" are: each family's first model in the grid
        "sides": {
            side: list(dict.fromkeys(d[f"{side}_model"] for d in datasets if d[f"{side}_model"]))
            for side in ("clip", "resnet")
        },
        # What chose the epochs and alphas: one of SELECT_ON, or "mixed"
        "select_on": _one_or_mixed(p["select_on"] for p in pairs),
        "seeds": max((d["seeds"] for d in datasets), default=0),
    }
    for d in datasets:  # after the tally, which says which differences hold once adjusted
        d["verdict"] = verdict(d, top1["tests"])
    header, rows = _epoch_table(pairs)
    meta = {k: v for k, v in run.to_dict().items() if k != "document"}
    return _no_nan(
        {
            "run": meta,
            "overall": overall,
            "datasets": datasets,
            "pairs": pairs,
            "methods": methods,
            "table": {"metric": TOP1, "header": header, "rows": rows},
            "published": _published_table(pairs),
        }
    )


def _one_or_mixed(values: Iterable[str]) -> str | None:
    found = set(values)
    return found.pop() if len(found) == 1 else ("mixed" if found else None)


def _pair(found: PairRecords, backend: Outcome | None, predictions: PairPredictions | None) -> dict:
    config, epochs, result = found.config, found.epochs, found.result
    model = config.model
    family = model_family(model)
    metric = epochs[0]["headline_metric"] if epochs else _headline_metric(config.dataset)
    chosen = found.best  # by the dataset's metric, on the split the config chooses on
    chosen_top1 = chosen_epoch(epochs, config.select_on, TOP1)
    gpus = epochs[-1]["gpus"] if epochs else 0
    outcome = pair_state(found, backend)
    state = outcome.state.value
    zero_shot_top1 = zero_shot_of(epochs, TOP1)
    finished = outcome.state is PairState.SUCCEEDED  # a run cut short is judged by no number
    judged = chosen_top1 if finished else None
    unreliable = _did_not_learn(config, found.pair, judged, zero_shot_top1)

    flags = []
    if not finished:
        flags.append(f"{state}: {outcome.detail}" if outcome.detail else state)
    if unreliable:
        flags.append(f"left out of averages and the tally: {unreliable}")
    nan_epochs = [e["epoch"] for e in epochs if not finite(e["headline"])]
    if nan_epochs:
        flags.append(f"diverged: {metric} is NaN at epoch {', '.join(map(str, nan_epochs))}")
    seen = {e["epoch"] for e in epochs}
    missing = [e for e in range(1, max(seen, default=0)) if e not in seen]
    if missing:
        flags.append(f"no record for epoch {', '.join(map(str, missing))}")
    zero_shot_flag = published.zero_shot_flag(config, found.zero_shot)
    if zero_shot_flag:
        flags.append(zero_shot_flag)
    flags += _staging_flags(epochs[0].get("data") if epochs else None)
    if isinstance(predictions, str):
        flags.append(f"no intervals: {predictions}")
    top1_interval = None
    if isinstance(predictions, dict) and chosen_top1:
        kept = predictions.get(f"epoch_{chosen_top1['epoch']}")
        top1_interval = stats.accuracy_interval(kept) if kept else None
    hours = sum(epoch_hours(e) for e in epochs)
    val = next((e["val"] for e in epochs if "val" in e), None)

    return {
        "pair": found.pair,
        "dataset": config.dataset,
        "model": model,
        "family": family,
        "method": config.method,
        "state": state,
        "headline_metric": metric,
        "select_on": config.select_on,
        "val_split": val["split"] if val else None,  # what it chose on (select_on: val)
        "epochs_done": len(found.trained),
        "epochs_total": config.epochs,
        "zero_shot": found.zero_shot,  # headline metric
        "zero_shot_top1": zero_shot_top1,
        # On the test split, at the epoch the run chose (by its metric; by top-1)
        "chosen": chosen["headline"] if chosen else None,
        "chosen_epoch": chosen["epoch"] if chosen else None,
        "chosen_top1": chosen_top1[TOP1] if chosen_top1 else None,
        "chosen_top1_epoch": chosen_top1["epoch"] if chosen_top1 else None,
        # 95% (Wilson) interval of the chosen top-1, from the pair's predictions
        "chosen_top1_interval": top1_interval,
        "unreliable": unreliable,  # why it is left out of averages and the tally, if it is
        "last": epochs[-1]["headline"] if epochs else None,
        "gpu_hours": hours * gpus,  # training and evaluating
        "hours": hours,
        "gpus": gpus,
        "images_per_s": found.images_per_s,
        "parameters": result["parameters"] if result else None,
        "start": result.get("start") if result else None,  # the weights it started from
        "wise_ft": result.get("wise_ft") if result else None,
        "per_group": chosen.get("per_group") if chosen else None,  # FMoW: regions
        "environment": result.get("environment") if result else None,
        "published": published.study_points(config, found.pair),  # epoch -> study's top-1
        "differs_from_study": published.differences(config),
        "flags": flags,
        "config": config.to_dict(),
        "epochs": epochs,
    }


def _did_not_learn(
    config: TrainConfig, pair: str, chosen: EpochRecord | None, zero_shot_top1: float | None
) -> str | None:
    """Why a pair cannot speak for its model, if it cannot: fine-tuning left it below its own
    zero-shot head, or near chance (under twice it), or the study's own text calls the pair
    it replays unreliable."""
    if chosen is not None and zero_shot_top1 is not None and chosen[TOP1] < zero_shot_top1:
        start = "linear probe's head" if config.method == LP_FT else "zero-shot"  # its epoch 0
        return (
            f"did not learn: fine-tuned top-1 {100 * chosen[TOP1]:.2f}% is below its "
            f"{start} {100 * zero_shot_top1:.2f}%"
        )
    classes = DATASETS[config.dataset].num_classes if config.dataset in DATASETS else 0
    if chosen is not None and classes and chosen[TOP1] < 2 / classes:
        return f"near chance: top-1 {100 * chosen[TOP1]:.2f}% over {classes} classes"
    return published.unreliable(config, pair)


def _staging_flags(data: StagedCopy | None) -> list[str]:
    """What a staged copy changed from the dataset's own images (kbench data stage), so a
    number is not read as one on the originals."""
    if not data:
        return []
    flags = []
    if data["frac"] < 1:
        flags.append(f"trained and evaluated on {data['frac']:g} of each split (data stage --frac)")
    if data["max_short_side"]:
        flags.append(
            f"images stored at a short side of at most {data['max_short_side']} px "
            "(data stage --max-short-side), not the originals"
        )
    return flags


def _epoch_table(pairs: list[dict]) -> tuple[list[str], list[list[Any]]]:
    """Rows = epochs, columns = pairs, cells = top-1 (None where missing)."""
    by_pair = [{e["epoch"]: e[TOP1] for e in p["epochs"]} for p in pairs]
    epochs = sorted({e for cells in by_pair for e in cells})
    header = ["epoch"] + [p["pair"] for p in pairs]
    return header, [[e] + [cells.get(e) for cells in by_pair] for e in epochs]


def _published_table(pairs: list[dict]) -> dict | None:
    """The run's top-1 beside the study's published one, at the epochs it published; None
    when no pair of the run is one the study published."""
    shown = [p for p in pairs if p["published"]]
    if not shown:
        return None
    table = published.study_table()
    rows = []
    for p in shown:
        cells = []
        for epoch in table["epochs"]:
            theirs, ours = p["published"].get(epoch), top1_at(p, epoch)
            difference = 100 * (ours - theirs) if finite(ours) and finite(theirs) else None
            cells.append(
                {"epoch": epoch, "run": ours, "published": theirs, "difference": difference}
            )
        rows.append(
            {
                "pair": p["pair"],
                "cells": cells,
                "note": table["notes"].get(p["pair"]),
                "differs": p["differs_from_study"],  # settings other than the study's
            }
        )
    caveats = {d: published.caveat(d) for d in dict.fromkeys(p["dataset"] for p in shown)}
    return {
        "source": table["source"],
        "epochs": table["epochs"],
        "pairs": rows,
        "caveats": {d: text for d, text in caveats.items() if text},
    }


def _headline_metric(dataset: str) -> str:
    return DATASETS[dataset].headline if dataset in DATASETS else TOP1


def _no_nan(value: Any) -> Any:
    """NaN becomes null: results.json stays strict JSON (the flags say what diverged)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return value
