"""A run's records, read and turned into the one results dict that every renderer uses: a row
per pair (its state, flags, best epochs, intervals), the datasets' comparisons
(kbench.report.compare), the per-epoch table and the published study beside the run."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kbench import records, stats
from kbench.pairs import Outcome, PairRecords, PairState, best_epoch, finite, pair_state
from kbench.pairs import zero_shot as zero_shot_of
from kbench.records import StagedCopy
from kbench.registry import DATASETS, TOP1, model_family
from kbench.report import published
from kbench.report.compare import compare_dataset, tally, top1_at
from kbench.runs import Run, read_pairs
from kbench.stats import Predictions
from kbench.storage import Store


def gather(store: Store, run: Run, states: dict[str, Outcome], workers: int = 32) -> dict:
    """Read every pair's config, epoch records and result, then the predictions of the pairs
    that kept them (`workers` pairs at a time: S3 GETs are latency-bound), and build the
    results."""
    found = read_pairs(store, run, workers=workers)
    return build_results(run, found, states, read_predictions(store, run, found, workers))


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
    datasets = []
    for name in dict.fromkeys(p["dataset"] for p in pairs):  # grid order
        datasets.append(compare_dataset(name, [p for p in pairs if p["dataset"] == name], kept))
    overall = {
        "datasets": len(datasets),
        "metric": TOP1,  # what the count is in: the study's metric
        **tally(d["top1"] for d in datasets),
        "headline": tally(d["headline"] for d in datasets),  # each dataset's own metric
        # Who "CLIP" and "ResNet" are: each family's first model in the grid
        "sides": {
            side: list(dict.fromkeys(d[f"{side}_model"] for d in datasets if d[f"{side}_model"]))
            for side in ("clip", "resnet")
        },
    }
    header, rows = _epoch_table(pairs)
    meta = {k: v for k, v in run.to_dict().items() if k != "document"}
    return _no_nan(
        {
            "run": meta,
            "overall": overall,
            "datasets": datasets,
            "pairs": pairs,
            "table": {"metric": TOP1, "header": header, "rows": rows},
            "published": _published_table(pairs),
        }
    )


def _pair(found: PairRecords, backend: Outcome | None, predictions: PairPredictions | None) -> dict:
    config, epochs, result = found.config, found.epochs, found.result
    model = config.model
    family = model_family(model)
    metric = epochs[0]["headline_metric"] if epochs else _headline_metric(config.dataset)
    best, best_top1 = found.best, best_epoch(epochs, TOP1)
    gpus = epochs[-1]["gpus"] if epochs else 0
    outcome = pair_state(found, backend)
    state = outcome.state.value

    flags = []
    if outcome.state is not PairState.SUCCEEDED:
        flags.append(f"{state}: {outcome.detail}" if outcome.detail else state)
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
    if isinstance(predictions, dict) and best_top1:
        kept = predictions.get(f"epoch_{best_top1['epoch']}")
        top1_interval = stats.accuracy_interval(kept) if kept else None

    return {
        "pair": found.pair,
        "dataset": config.dataset,
        "model": model,
        "family": family,
        "state": state,
        "headline_metric": metric,
        "epochs_done": len(found.trained),
        "epochs_total": config.epochs,
        "zero_shot": found.zero_shot,  # headline metric
        "zero_shot_top1": zero_shot_of(epochs, TOP1),
        "best": best["headline"] if best else None,
        "best_epoch": best["epoch"] if best else None,
        "best_top1": best_top1[TOP1] if best_top1 else None,
        "best_top1_epoch": best_top1["epoch"] if best_top1 else None,
        # 95% (Wilson) interval of the best top-1, from the pair's predictions
        "best_top1_interval": top1_interval,
        "last": epochs[-1]["headline"] if epochs else None,
        "gpu_hours": found.train_seconds * gpus / 3600,
        "train_hours": found.train_seconds / 3600,
        "gpus": gpus,
        "images_per_s": found.images_per_s,
        "parameters": result["parameters"] if result else None,
        "start": result.get("start") if result else None,  # the weights it started from
        "wise_ft": result.get("wise_ft") if result else None,
        "per_group": best.get("per_group") if best else None,  # FMoW: regions, best epoch
        "environment": result.get("environment") if result else None,
        "published": published.study_points(config, found.pair),  # epoch -> study's top-1
        "flags": flags,
        "config": config.to_dict(),
        "epochs": epochs,
    }


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
        rows.append({"pair": p["pair"], "cells": cells, "note": table["notes"].get(p["pair"])})
    return {"source": table["source"], "epochs": table["epochs"], "pairs": rows}


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
