"""Each dataset's comparison of CLIP against ResNet: best against best (top-1 and the
dataset's own metric), fine-tuned against zero-shot, WiSE-FT's best alpha, and on equal footing
(equal epochs, equal GPU-hours; best against best favours the model trained longer). Every
difference carries its 95% interval from the pairs' per-sample predictions, and a winner is
named only when the interval excludes 0."""

from __future__ import annotations

from collections.abc import Iterable
from statistics import mean
from typing import Any

from kbench import stats
from kbench.pairs import PairState, finite
from kbench.registry import TOP1
from kbench.stats import Predictions

TIE_POINTS = 0.1  # without predictions: accuracies closer than this (in points) are a tie
NO_CLEAR_WINNER = "no clear winner"  # the difference's 95% interval holds 0


def compare_dataset(name: str, pairs: list[dict], predictions: dict[str, dict]) -> dict:
    """One dataset's comparison. With a grid's `seeds` each model has several pairs: the best
    values are their means, the intervals carry the spread between seeds, and the rows that
    need one run (equal footing, groups) use the first seed's."""
    clips, resnets = _first_model(pairs, "clip"), _first_model(pairs, "resnet")
    clip, resnet = clips[0] if clips else None, resnets[0] if resnets else None
    done = bool(clips and resnets) and all(
        p["state"] == PairState.SUCCEEDED.value for p in clips + resnets
    )
    both = (clip, resnet) if done else (None, None)  # compared only once all succeeded
    metric = pairs[0]["headline_metric"]
    sure = _certainty(clips, resnets, metric, predictions) if done else {}

    def bests(key: str) -> tuple[float | None, float | None]:
        if not done:
            return None, None
        return _mean_of(p[key] for p in clips), _mean_of(p[key] for p in resnets)

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
    given = list(values)
    found = [v for v in given if finite(v)]
    return mean(found) if found and len(found) == len(given) else None


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
            [at(p, p["best_epoch"]) for p in clips],
            [at(p, p["best_epoch"]) for p in resnets],
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
        elif (winning := clip if difference > 0 else resnet) is not None:
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


def top1_at(pair: dict, epoch: int) -> float | None:
    return next((e[TOP1] for e in pair["epochs"] if e["epoch"] == epoch), None)


def _equal_epochs(clip: dict | None, resnet: dict | None, predictions: dict) -> dict | None:
    if not (clip and resnet and clip["epochs_done"] and resnet["epochs_done"]):
        return None
    epoch = min(max(e["epoch"] for e in p["epochs"]) for p in (clip, resnet))
    values = top1_at(clip, epoch), top1_at(resnet, epoch)
    sure = _top1_difference(clip, epoch, resnet, epoch, predictions)
    return {"epoch": epoch, **_compare(*values, clip, resnet, sure)}


def _equal_gpu_hours(clip: dict | None, resnet: dict | None, predictions: dict) -> dict | None:
    """Each model at its last epoch within the cheaper run's GPU-hours."""
    if not (clip and resnet and clip["gpus"] and resnet["gpus"]):
        return None
    budget = min(clip["gpu_hours"], resnet["gpu_hours"])
    reached = [_epoch_within(p, budget) for p in (clip, resnet)]
    values = (
        top1_at(clip, reached[0]) if reached[0] is not None else None,
        top1_at(resnet, reached[1]) if reached[1] is not None else None,
    )
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


def tally(comparisons: Iterable[dict]) -> dict:
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
            "samples": (tables[0].get(name) or tables[1][name])["samples"],
            "clip": tables[0][name]["top1"] if name in tables[0] else None,
            "resnet": tables[1][name]["top1"] if name in tables[1] else None,
        }
        for name in names
    ]
