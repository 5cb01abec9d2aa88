"""The comparison report of a run: `report.html` (self-contained, inline SVG plots),
`report.md`, `results.csv` and `results.json`.

The study's table is top-1 accuracy on every dataset, so the per-epoch table, the curves and
the overall count are top-1; each dataset's literature metric (mean per class, worst region,
macro-F1) is compared beside it. Best-against-best favours the model trained longer, so each
dataset is also compared at equal epochs and at equal GPU-hours. Pairs the study published are
shown beside its numbers.

`gather` reads every pair's records (concurrently); `build_results` turns them into one plain
dict that every renderer uses, so the files never disagree. Pairs still running, failed or
without records keep their place and are marked.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from statistics import mean
from typing import Any

import jinja2

from kbench import published, records, stats
from kbench.charts import Series, line_chart
from kbench.pairs import Outcome, PairRecords, PairState, best_epoch, finite, pair_state
from kbench.pairs import zero_shot as zero_shot_of
from kbench.registry import DATASETS, TOP1, model_family
from kbench.runs import Run, read_pairs
from kbench.stats import Predictions
from kbench.storage import Store

TIE_POINTS = 0.1  # without predictions: accuracies closer than this (in points) are a tie
NO_CLEAR_WINNER = "no clear winner"  # the difference's 95% interval holds 0


# ------------------------------------------------------------------------------------- reading


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


# ------------------------------------------------------------------------------------ building


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
        datasets.append(_dataset(name, [p for p in pairs if p["dataset"] == name], kept))
    overall = {
        "datasets": len(datasets),
        "metric": TOP1,  # what the count is in: the study's metric
        **_tally(d["top1"] for d in datasets),
        "headline": _tally(d["headline"] for d in datasets),  # each dataset's own metric
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
    model = config["model"]
    family = model_family(model)
    metric = epochs[0]["headline_metric"] if epochs else _headline_metric(config["dataset"])
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
        "dataset": config["dataset"],
        "model": model,
        "family": family,
        "state": state,
        "headline_metric": metric,
        "epochs_done": len(found.trained),
        "epochs_total": config["epochs"],
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
        "config": config,
        "epochs": epochs,
    }


def _staging_flags(data: dict | None) -> list[str]:
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


def _dataset(name: str, pairs: list[dict], predictions: dict[str, dict]) -> dict:
    """One dataset's comparison. With a grid's `seeds` each model has several pairs: the best
    values are their means, the intervals carry the spread between seeds, and the rows that
    need one run (equal footing, groups) use the first seed's."""
    clips, resnets = _first_model(pairs, "clip"), _first_model(pairs, "resnet")
    clip, resnet = (clips or [None])[0], (resnets or [None])[0]
    done = bool(clips and resnets) and all(
        p["state"] == PairState.SUCCEEDED.value for p in clips + resnets
    )
    both = (clip, resnet) if done else (None, None)  # compared only once all succeeded
    metric = pairs[0]["headline_metric"]
    sure = _certainty(clips, resnets, metric, predictions) if done else {}

    def bests(key: str) -> list[float | None]:
        return [_mean_of(p[key] for p in side) if done else None for side in (clips, resnets)]

    found = {
        "dataset": name,
        "headline_metric": metric,
        "clip": clip["pair"] if clip else None,
        "resnet": resnet["pair"] if resnet else None,
        "clip_model": clip["model"] if clip else None,  # the compared models (_first_model)
        "resnet_model": resnet["model"] if resnet else None,
        "seeds": max(len(clips), len(resnets)),
        # Why the differences have no interval where they have none and could
        "no_interval": sure.get("unpaired"),
        "zero_shot": clip["zero_shot"] if clip else None,
        "zero_shot_top1": clip["zero_shot_top1"] if clip else None,
        # Best against best: the study's metric, then the dataset's own.
        "top1": _compare(*bests("best_top1"), clip, resnet, sure.get("top1")),
        "headline": _compare(*bests("best"), clip, resnet, sure.get("headline")),
        # Within CLIP, in top-1: fine-tuned (best epoch) minus zero-shot, and WiSE-FT's best
        # alpha minus the fine-tuned end (alpha 1, the last epoch).
        "fine_tuning": _interval(sure.get("fine_tuning")),
        "wise_ft": _interval(sure.get("wise_ft"), alpha=sure.get("wise_ft_alpha")),
        # On equal footing, in top-1: both at the shorter run's last epoch; both at the
        # GPU-hours of the cheaper run (where both ran on GPUs).
        "equal_epochs": _equal_epochs(*both, predictions),
        "equal_gpu_hours": _equal_gpu_hours(*both, predictions),
        "groups": _group_rows(clip, resnet),
        "pairs": [p["pair"] for p in pairs],
    }
    found["verdict"] = verdict(found)
    return found


def _first_model(pairs: list[dict], family: str) -> list[dict]:
    """The pairs (one per seed) of the family's first model in the grid: the one compared.
    A grid with more models of a family shows the others in the tables, not in verdicts."""
    models = [p["model"] for p in pairs if p["family"] == family]
    return [p for p in pairs if models and p["model"] == models[0]]


def _mean_of(values: Iterable[float | None]) -> float | None:
    values = list(values)
    return mean(values) if values and all(finite(v) for v in values) else None


def verdict(d: dict, key: str = TOP1) -> str | None:
    """One dataset's comparison in one line, e.g. "cifar10: CLIP - ResNet top-1 +2.00 points
    (95% CI +0.41 to +3.62, McNemar p = 0.012): clip-vit-b32 wins"; None while pending."""
    c = d["top1" if key == TOP1 else "headline"]
    if c["difference"] is None:
        return None
    metric = "top-1" if key == TOP1 else d["headline_metric"]
    line = f"{d['dataset']}: CLIP - ResNet {metric} {c['difference']:+.2f} points"
    if c["interval"]:
        low, high = c["interval"]
        p = f", McNemar p = {c['p_value']:.2g}" if c["p_value"] is not None else ""
        line += f" (95% CI {low:+.2f} to {high:+.2f}{p})"
    else:
        line += f" (no interval: {d['no_interval'] or 'the pairs kept no predictions'})"
    winner = c["winner"]
    return f"{line}: {winner if winner in ('tie', NO_CLEAR_WINNER) else winner + ' wins'}"


def _certainty(
    clips: list[dict], resnets: list[dict], metric: str, predictions: dict[str, dict]
) -> dict:
    """The differences the report names a winner by, each with its interval, from the pairs'
    per-sample predictions (each seed at its own best epoch); {} where a pair kept none (a
    run of an older kbench)."""
    if not all(p["pair"] in predictions for p in clips + resnets):
        return {}
    try:  # every evaluation of every pair on the same samples (not so: an older kbench's seeds)
        stats.check_paired([e for p in clips + resnets for e in predictions[p["pair"]].values()])
    except ValueError as e:
        return {"unpaired": str(e)}
    found: dict[str, Any] = {}

    def at(pair: dict, epoch: int | None) -> Predictions | None:
        return predictions[pair["pair"]].get(f"epoch_{epoch}")

    def add(name: str, a: list, b: list, on: str) -> None:
        difference = _difference(a, b, on)
        if difference is not None:
            found[name] = difference

    best_top1 = [at(p, p["best_top1_epoch"]) for p in clips]
    add("top1", best_top1, [at(p, p["best_top1_epoch"]) for p in resnets], TOP1)
    if metric == TOP1 and "top1" in found:  # the same epochs, the same difference
        found["headline"] = found["top1"]
    else:
        add(
            "headline",
            *([at(p, p["best_epoch"]) for p in side] for side in (clips, resnets)),
            metric,
        )
    add("fine_tuning", best_top1, [at(p, 0) for p in clips], TOP1)
    # WiSE-FT: the alpha best on average over the seeds, against the fine-tuned ends.
    curves = [{q["alpha"]: q[TOP1] for q in p["wise_ft"] or []} for p in clips]
    alphas = [a for a in curves[0] if all(finite(c.get(a)) for c in curves)]
    if alphas:
        alpha = max(alphas, key=lambda a: mean(c[a] for c in curves))  # the first of equals
        ends = [at(p, p["epochs_total"]) for p in clips]  # alpha 1: the last epoch's weights
        best = [
            {0.0: at(p, 0), 1.0: end}.get(alpha) or predictions[p["pair"]].get(f"alpha_{alpha:.1f}")
            for p, end in zip(clips, ends, strict=True)
        ]
        add("wise_ft", best, ends, TOP1)
        found["wise_ft_alpha"] = alpha
    return found


def _classes(*predictions: Predictions) -> int:
    """Enough classes for the confusion matrices: absent ones count for no metric."""
    return 1 + max(
        int(max(p.labels.max(initial=0), p.predicted.max(initial=0))) for p in predictions
    )


def _interval(difference: stats.Difference | None, **extra: Any) -> dict | None:
    if difference is None:
        return None
    return {
        **extra,
        "difference": difference.difference,
        "interval": [difference.low, difference.high],
        "p_value": difference.p_value,
        "clear": difference.clear,
    }


def _compare(
    clip_value: float | None,
    resnet_value: float | None,
    clip: dict | None,
    resnet: dict | None,
    sure: stats.Difference | None = None,
) -> dict:
    """CLIP against ResNet on one number each; no winner while either is missing. With the
    pairs' predictions the winner is named only when the difference's 95% interval excludes
    0 ("no clear winner" otherwise); without (an older kbench's run), by the difference."""
    difference = winner = family = None
    if finite(clip_value) and finite(resnet_value):
        difference = 100 * (clip_value - resnet_value)
        if sure is not None and not sure.clear:
            winner = NO_CLEAR_WINNER
        elif sure is None and abs(difference) < TIE_POINTS:
            winner = "tie"
        else:
            winning = clip if difference > 0 else resnet
            winner, family = winning["model"], winning["family"]
    return {
        "clip": clip_value,
        "resnet": resnet_value,
        "difference": difference,  # points, CLIP minus ResNet
        # Its 95% interval and McNemar's p (top-1), from the per-sample predictions
        "interval": [sure.low, sure.high] if sure else None,
        "p_value": sure.p_value if sure else None,
        "winner": winner,  # a model name, "tie", "no clear winner", or None while pending
        "winner_family": family,
    }


def _top1_at(pair: dict, epoch: int) -> float | None:
    return next((e[TOP1] for e in pair["epochs"] if e["epoch"] == epoch), None)


def _equal_epochs(clip: dict | None, resnet: dict | None, predictions: dict) -> dict | None:
    if not (clip and resnet and clip["epochs_done"] and resnet["epochs_done"]):
        return None
    epoch = min(max(e["epoch"] for e in p["epochs"]) for p in (clip, resnet))
    values = _top1_at(clip, epoch), _top1_at(resnet, epoch)
    sure = _top1_difference(clip, epoch, resnet, epoch, predictions)
    return {"epoch": epoch, **_compare(*values, clip, resnet, sure)}


def _equal_gpu_hours(clip: dict | None, resnet: dict | None, predictions: dict) -> dict | None:
    """Each model at its last epoch within the cheaper run's GPU-hours."""
    if not (clip and resnet and clip["gpus"] and resnet["gpus"]):
        return None
    budget = min(clip["gpu_hours"], resnet["gpu_hours"])
    reached = [_epoch_within(p, budget) for p in (clip, resnet)]
    values = [
        _top1_at(p, e) if e is not None else None
        for p, e in zip((clip, resnet), reached, strict=True)
    ]
    sure = _top1_difference(clip, reached[0], resnet, reached[1], predictions)
    return {
        "gpu_hours": budget,
        "clip_epoch": reached[0],
        "resnet_epoch": reached[1],
        **_compare(*values, clip, resnet, sure),
    }


def _top1_difference(
    clip: dict, clip_epoch: int | None, resnet: dict, resnet_epoch: int | None, predictions: dict
) -> stats.Difference | None:
    """CLIP at one epoch against ResNet at another, in top-1 with its interval."""
    a = (predictions.get(clip["pair"]) or {}).get(f"epoch_{clip_epoch}")
    b = (predictions.get(resnet["pair"]) or {}).get(f"epoch_{resnet_epoch}")
    return _difference([a], [b], TOP1)


def _difference(a: list, b: list, metric: str) -> stats.Difference | None:
    """A's metric minus B's with its interval; None without every evaluation's predictions or
    when they did not score the same samples."""
    if any(p is None for p in a + b):
        return None
    try:
        return stats.compare(a, b, metric, _classes(*a, *b))
    except ValueError:
        return None


def _epoch_within(pair: dict, gpu_hours: float) -> int | None:
    """The last trained epoch a pair reached within `gpu_hours`."""
    spent, reached = 0.0, None
    for record in pair["epochs"]:
        spent += record["epoch_seconds"] * pair["gpus"] / 3600
        if record["epoch"] >= 1 and spent <= gpu_hours * (1 + 1e-9):
            reached = record["epoch"]
    return reached


def _tally(comparisons: Iterable[dict]) -> dict:
    comparisons = list(comparisons)
    differences = [c["difference"] for c in comparisons if c["difference"] is not None]
    return {
        "clip_wins": sum(1 for c in comparisons if c["winner_family"] == "clip"),
        "resnet_wins": sum(1 for c in comparisons if c["winner_family"] == "resnet"),
        "ties": sum(1 for c in comparisons if c["winner"] == "tie"),
        "unclear": sum(1 for c in comparisons if c["winner"] == NO_CLEAR_WINNER),
        "undecided": sum(1 for c in comparisons if c["winner"] is None),
        "mean_difference": mean(differences) if differences else None,
    }


def _group_rows(clip: dict | None, resnet: dict | None) -> list[dict]:
    """Each group's (FMoW: region's) accuracy at each model's best epoch; [] without groups."""
    tables = [(p or {}).get("per_group") or {} for p in (clip, resnet)]
    names = list(tables[0] or tables[1])
    return [
        {
            "group": name,
            "samples": (tables[0].get(name) or tables[1].get(name))["samples"],
            "clip": tables[0][name]["top1"] if name in tables[0] else None,
            "resnet": tables[1][name]["top1"] if name in tables[1] else None,
        }
        for name in names
    ]


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
            theirs, ours = p["published"].get(epoch), _top1_at(p, epoch)
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


# ----------------------------------------------------------------------------------- rendering


def write_report(results: dict[str, Any], out_dir: str | Path) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "report.html": render_html(results),
        "report.md": render_markdown(results),
        "results.csv": render_csv(results),
        "results.json": json.dumps(results, indent=1, allow_nan=False) + "\n",
    }
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")
    return [out / name for name in files]


def render_csv(results: dict[str, Any]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(results["table"]["header"])
    writer.writerows([["" if v is None else v for v in row] for row in results["table"]["rows"]])
    return buf.getvalue()


def render_markdown(results: dict[str, Any]) -> str:
    env = _environment(autoescape=False)
    env.filters["md"] = _md
    env.filters["code"] = _code
    return env.get_template("report.md.j2").render(**_context(results))


def render_html(results: dict[str, Any]) -> str:
    context = _context(results)
    context["charts"] = _charts(results)
    return _environment(autoescape=True).get_template("report.html.j2").render(**context)


def _environment(autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(
            lambda name: resources.files("kbench").joinpath(f"templates/{name}").read_text("utf-8")
        ),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["pct"] = _pct
    env.filters["signed"] = lambda v: "" if v is None else f"{v:+.2f}"
    env.filters["num"] = lambda v, digits=0: "–" if v is None else f"{v:,.{digits}f}"
    # An interval in points after a difference; a proportion's in percent after a value.
    env.filters["ci"] = lambda i: "" if not i else f" [{i[0]:+.2f}, {i[1]:+.2f}]"
    env.filters["pct_ci"] = lambda i: "" if not i else f" [{_pct(i[0])}, {_pct(i[1])}]"
    env.filters["p_value"] = lambda p: "" if p is None else f"{p:.2g}"
    env.filters["sides"] = _sides
    return env


def _sides(sides: dict[str, list[str]]) -> str:
    """Who "CLIP" and "ResNet" are in this report's comparisons."""
    named = [
        f"{label} is {' / '.join(sides[side])}"
        for side, label in (("clip", "CLIP"), ("resnet", "ResNet"))
        if sides[side]
    ]
    if not named:
        return ""
    return (
        f"Compared: {'; '.join(named)} (each family's first model in the grid; any other "
        "appears in the per-epoch table)."
    )


def _context(results: dict[str, Any]) -> dict[str, Any]:
    pairs = {p["pair"]: p for p in results["pairs"]}
    environments = [p["environment"] for p in results["pairs"] if p["environment"]]
    return {**results, "by_pair": pairs, "environment": environments[0] if environments else None}


def _charts(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per dataset: top-1 against epochs for every pair, the study's published points dashed
    beside them; WiSE-FT where present."""
    by_pair = {p["pair"]: p for p in results["pairs"]}
    charts = {}
    for i, d in enumerate(results["datasets"]):
        pairs = [by_pair[name] for name in d["pairs"]]
        epochs = []
        for p in pairs:
            points = [(e["epoch"], _pct_value(e[TOP1])) for e in p["epochs"]]
            marked = {0: "zero-shot"} if p["family"] == "clip" else {}
            epochs.append(Series(p["model"], points, marked=marked))
            if p["published"]:
                study = sorted((int(e), _pct_value(v)) for e, v in p["published"].items())
                epochs.append(Series(f"{p['model']} (study)", study, dashed=True))
        chart = {"epochs": line_chart(epochs, "epoch", "top-1 (%)", f"epochs-{i}")}
        wise = [
            Series(p["model"], [(w["alpha"], _pct_value(w[TOP1])) for w in p["wise_ft"]])
            for p in pairs
            if p["wise_ft"]
        ]
        if wise:
            x_label = "alpha (0 = zero-shot, 1 = fine-tuned)"
            chart["wise_ft"] = line_chart(
                wise, x_label, "top-1 (%)", f"wiseft-{i}", integer_x=False
            )
        charts[d["dataset"]] = chart
    return charts


def _pct_value(value: float | None) -> float | None:
    return None if value is None else 100 * value


def _pct(value: float | None) -> str:
    if value is None:
        return ""
    return f"{100 * value:.2f}"


def _code(text: Any) -> str:
    """Text from data as a Markdown code span, whatever backticks it holds: fenced by one
    more backtick than its longest run (CommonMark), on one line."""
    s = str(text).replace("\n", " ")
    fence = "`" * (max((len(run) for run in re.findall("`+", s)), default=0) + 1)
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def _md(text: Any) -> str:
    """Text from data in a Markdown table: no HTML gets through, no cell breaks."""
    s = str(text)
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return s.replace("|", "\\|").replace("\n", " ")
