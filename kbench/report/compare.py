"""Each dataset's comparison of CLIP against ResNet: at the epochs each pair's run chose (on the
validation split unless its grid says otherwise), in top-1 and in the dataset's own metric;
fine-tuned against zero-shot; WiSE-FT's chosen alpha; and on equal footing (equal epochs, equal
GPU-hours: a choice over runs of unequal length favours the longer one).

One decision rule: a winner only where a paired 95% interval exists and excludes 0; McNemar's
exact test beside it as support ("borderline" where the two disagree); none where a side did
not learn (`left_out`). The overall tally is adjusted for testing every dataset (Holm)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from statistics import mean
from typing import Any

from kbench import stats
from kbench.pairs import PairState, finite
from kbench.registry import TOP1
from kbench.stats import Predictions

NO_CLEAR_WINNER = "no clear winner"  # the difference's 95% interval holds 0
SIGNIFICANCE = 1 - stats.CONFIDENCE  # 0.05: McNemar's p and the tally's family-wise level


def compare_dataset(name: str, pairs: list[dict], predictions: dict[str, dict]) -> dict:
    """One dataset's comparison. With a grid's `seeds` each model has several pairs: the chosen
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

    def chosen(key: str) -> tuple[float | None, float | None]:
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
        # A side that did not learn: its comparisons are shown, and kept out of the tally
        "left_out": next((p["unreliable"] for p in clips + resnets if p["unreliable"]), None),
        # Why the differences have no interval where they have none and could
        "no_interval": sure.get("unpaired"),
        "zero_shot": clip["zero_shot"] if clip else None,
        "zero_shot_top1": clip["zero_shot_top1"] if clip else None,
        # Chosen against chosen: the study's metric, then the dataset's own.
        "top1": _compare(*chosen("chosen_top1"), clip, resnet, sure.get("top1")),
        "headline": _compare(*chosen("chosen"), clip, resnet, sure.get("headline")),
        # Within CLIP, in top-1: fine-tuned (the chosen epoch) minus zero-shot, and WiSE-FT's
        # chosen alpha minus the fine-tuned end (alpha 1, the last epoch).
        "fine_tuning": _interval(sure.get("fine_tuning")),
        "wise_ft": _interval(sure.get("wise_ft"), alpha=sure.get("wise_ft_alpha")),
        # On equal footing, in top-1: both at the shorter run's last epoch; both at the
        # GPU-hours (training and evaluating) of the cheaper run (where both ran on GPUs).
        "equal_epochs": _equal_epochs(*both, predictions),
        "equal_gpu_hours": _equal_gpu_hours(*both, predictions),
        "groups": _group_rows(clip, resnet),
        "pairs": [p["pair"] for p in pairs],
    }
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


def verdict(d: dict, tests: int, key: str = TOP1) -> str | None:
    """One dataset's comparison in one line, e.g. "cifar10: CLIP - ResNet top-1 +2.00 points
    (95% CI +0.41 to +3.62, McNemar p = 0.012): clip-vit-b32 wins"; None while pending."""
    c = d["top1" if key == TOP1 else "headline"]
    if c["difference"] is None:
        return None
    metric = "top-1" if key == TOP1 else d["headline_metric"]
    methods = d.get("methods")  # each family at its best method on validation
    sides = (
        f"CLIP ({methods['clip']}) - ResNet ({methods['resnet']})" if methods else "CLIP - ResNet"
    )
    line = f"{d['dataset']}: {sides} {metric} {c['difference']:+.2f} points"
    if c["interval"]:
        low, high = c["interval"]
        p = f", McNemar p {p_text(c['mcnemar_p'])}" if c["mcnemar_p"] is not None else ""
        line += f" (95% CI {low:+.2f} to {high:+.2f}{p})"
    else:
        line += f" (no interval: {d['no_interval'] or 'the pairs kept no predictions'})"
    winner = c["winner"]
    said = f"{winner} wins" if winner and winner != NO_CLEAR_WINNER else winner or "undecided"
    if c["borderline"]:
        said += f" (borderline: {c['borderline']})"
    if d["left_out"]:
        return f"{line}: {said}; left out of the tally: {d['left_out']}"
    if c["winner_family"] and not c["adjusted"] and tests > 1:
        said += f", but not after adjusting for {tests} datasets (Holm)"
    return f"{line}: {said}"


def p_text(p: float) -> str:
    """A p-value as the report prints it: two significant digits, or a bound where it is too
    small for a float (scipy answers 0)."""
    return "< 1e-300" if p < 1e-300 else f"= {p:.2g}"


def _certainty(
    clips: list[dict], resnets: list[dict], metric: str, predictions: dict[str, dict]
) -> dict:
    """The differences the report names a winner by, each with its interval, from the pairs'
    per-sample predictions (each seed at its own chosen epoch); {} where a pair kept none (a
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
        difference = paired_difference(a, b, on)
        if difference is not None:
            found[name] = difference

    chosen_top1 = [at(p, p["chosen_top1_epoch"]) for p in clips]
    add("top1", chosen_top1, [at(p, p["chosen_top1_epoch"]) for p in resnets], TOP1)
    if metric == TOP1 and "top1" in found:  # the same epochs, the same difference
        found["headline"] = found["top1"]
    else:
        add(
            "headline",
            [at(p, p["chosen_epoch"]) for p in clips],
            [at(p, p["chosen_epoch"]) for p in resnets],
            metric,
        )
    add("fine_tuning", chosen_top1, [at(p, 0) for p in clips], TOP1)
    # WiSE-FT: the alpha the pairs chose (on average over the seeds, on the split their grid
    # chooses on), against the fine-tuned ends.
    alpha = _chosen_alpha(clips)
    if alpha is not None:
        ends = [at(p, p["epochs_total"]) for p in clips]  # alpha 1: the last epoch's weights
        chosen = [
            {0.0: at(p, 0), 1.0: end}.get(alpha) or predictions[p["pair"]].get(f"alpha_{alpha:.1f}")
            for p, end in zip(clips, ends, strict=True)
        ]
        add("wise_ft", chosen, ends, TOP1)
        found["wise_ft_alpha"] = alpha
    return found


def _chosen_alpha(clips: list[dict]) -> float | None:
    """The alpha whose top-1, on the split the pairs choose on, is highest on average over
    their seeds (the first of equals); 1 (the fine-tuned end) where they choose nothing."""
    if not clips or not all(p["wise_ft"] for p in clips):
        return None
    select_on = clips[0]["select_on"]
    if select_on == "last":
        return 1.0

    def scored(point: dict) -> float | None:
        chosen_on = point.get("val") if select_on == "val" else point
        return chosen_on.get(TOP1) if chosen_on else None

    curves = [{q["alpha"]: scored(q) for q in p["wise_ft"]} for p in clips]
    means: dict[float, float] = {}
    for alpha in curves[0]:
        values = [c.get(alpha) for c in curves]
        if all(finite(v) for v in values):
            means[alpha] = mean(v for v in values if v is not None)
    return max(means, key=lambda alpha: means[alpha]) if means else None


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
    """CLIP against ResNet on one number each. A winner only where the difference's paired
    95% interval exists and excludes 0; no interval (a pair kept no predictions, or the sides
    scored other samples), no winner. McNemar's p on top-1 is support: where it and the
    interval disagree, the comparison is borderline."""
    difference = winner = family = borderline = None
    if finite(clip_value) and finite(resnet_value):
        difference = 100 * (clip_value - resnet_value)
        if sure is not None and not sure.clear:
            winner = NO_CLEAR_WINNER
        elif sure is not None and (winning := clip if difference > 0 else resnet) is not None:
            winner, family = winning["model"], winning["family"]
    if (
        sure is not None
        and sure.p_value is not None
        and (sure.p_value < SIGNIFICANCE) != (sure.clear)
    ):
        borderline = f"McNemar's p {p_text(sure.p_value)} " + (
            "does not agree" if sure.clear else "would call it"
        )
    return {
        "clip": clip_value,
        "resnet": resnet_value,
        "difference": difference,  # points, CLIP minus ResNet
        # Its 95% interval (a paired bootstrap over samples, and seeds), the bootstrap's p
        # (the tally's test), McNemar's p (top-1, one run a side)
        "interval": [sure.low, sure.high] if sure else None,
        "p_value": sure.p_bootstrap if sure else None,
        "mcnemar_p": sure.p_value if sure else None,
        "winner": winner,  # a model name, "no clear winner", or None (pending, no interval)
        "winner_family": family,
        "borderline": borderline,  # why the interval and McNemar's test disagree, if they do
        "adjusted": None,  # a winner still after the tally's adjustment (set by `tally`)
    }


def top1_at(pair: dict, epoch: int) -> float | None:
    return next((e[TOP1] for e in pair["epochs"] if e["epoch"] == epoch), None)


def _equal_epochs(clip: dict | None, resnet: dict | None, predictions: dict) -> dict | None:
    """Both at the shorter run's last epoch, saying which side's schedule had not finished
    there (its learning rate not annealed yet)."""
    if not (clip and resnet and clip["epochs_done"] and resnet["epochs_done"]):
        return None
    epoch = min(max(e["epoch"] for e in p["epochs"]) for p in (clip, resnet))
    values = top1_at(clip, epoch), top1_at(resnet, epoch)
    sure = _top1_difference(clip, epoch, resnet, epoch, predictions)
    unfinished = [
        f"{p['model']} at epoch {epoch} of {p['epochs_total']}: its schedule had not finished"
        for p in (clip, resnet)
        if p["epochs_total"] > epoch
    ]
    return {"epoch": epoch, "unfinished": unfinished, **_compare(*values, clip, resnet, sure)}


def _equal_gpu_hours(clip: dict | None, resnet: dict | None, predictions: dict) -> dict | None:
    """Each model at its last epoch within the cheaper run's GPU-hours, training and
    evaluating counted."""
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
    return paired_difference([a], [b], TOP1)


def paired_difference(a: list, b: list, metric: str) -> stats.Difference | None:
    """A's metric minus B's with its interval; None without every evaluation's predictions or
    when they did not score the same samples."""
    if any(p is None for p in a + b):
        return None
    try:
        return stats.compare(a, b, metric, _classes(*a, *b))
    except ValueError:
        return None


def _epoch_within(pair: dict, gpu_hours: float) -> int | None:
    """The last trained epoch a pair reached within `gpu_hours`, training and evaluating."""
    spent, reached = 0.0, None
    for record in pair["epochs"]:
        spent += epoch_hours(record) * pair["gpus"]
        if record["epoch"] >= 1 and spent <= gpu_hours * (1 + 1e-9):
            reached = record["epoch"]
    return reached


def epoch_hours(record: Mapping[str, Any]) -> float:
    """An epoch's hours: training it, and evaluating it (not known in an older kbench's)."""
    return (record["epoch_seconds"] + record.get("eval_seconds", 0.0)) / 3600


def tally(datasets: list[dict], key: str) -> dict:
    """The overall count in one metric (`key`: "top1" or "headline"). A dataset counts for a
    side only where its difference stays clear once the tests are adjusted for their number
    (Holm-Bonferroni over every dataset with an interval, family-wise 95%); the unadjusted
    count (each dataset's own interval) is beside it. A dataset with a side that did not learn
    is left out of both, and of the mean difference, with its reason."""
    counted = [d for d in datasets if not d["left_out"]]
    tested = [d[key] for d in counted if d[key]["p_value"] is not None]
    for comparison, rejected in zip(
        tested, stats.holm([c["p_value"] for c in tested], SIGNIFICANCE), strict=True
    ):
        comparison["adjusted"] = rejected and comparison["winner_family"] is not None

    def wins(family: str, adjusted: bool) -> int:
        return sum(
            1
            for d in counted
            if d[key]["winner_family"] == family and (d[key]["adjusted"] or not adjusted)
        )

    differences = [d[key]["difference"] for d in counted if d[key]["difference"] is not None]
    return {
        "clip_wins": wins("clip", adjusted=True),
        "resnet_wins": wins("resnet", adjusted=True),
        "unclear": len(tested) - wins("clip", adjusted=True) - wins("resnet", adjusted=True),
        "undecided": len(counted) - len(tested),  # pending, or no interval
        "tests": len(tested),
        "unadjusted": {"clip_wins": wins("clip", False), "resnet_wins": wins("resnet", False)},
        "left_out": [
            {"dataset": d["dataset"], "reason": d["left_out"]} for d in datasets if d["left_out"]
        ],
        "mean_difference": mean(differences) if differences else None,
        "mean_over": len(differences),
    }


def _group_rows(clip: dict | None, resnet: dict | None) -> list[dict]:
    """Each group's (FMoW: region's) accuracy at each model's chosen epoch; [] without
    groups."""
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
