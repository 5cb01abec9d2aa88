"""`kbench compare RUN RUN...`: the same pairs across runs, side by side — the study replayed
against the fair run, this month's data against last month's. For each pair: every run's
top-1 on the test split at the epoch its own `select_on` chose, each later run's difference to
the first with a paired interval where both scored the same test samples, and the settings
that differ between them. Read from the store's records alone."""

from __future__ import annotations

import json
from typing import Any

from kbench.runs import Run, read_pairs
from kbench.storage import Store

from .compare import TOP1, paired_difference
from .gather import build_results, read_predictions


def compare_runs(store: Store, runs: list[Run]) -> dict[str, Any]:
    """Each pair of any of the runs (the first run's order first), side by side."""
    per_run = []
    for run in runs:
        found = read_pairs(store, run)
        predictions = read_predictions(store, run, found)
        results = build_results(run, found, {}, predictions)
        kept = {k: v for k, v in predictions.items() if isinstance(v, dict)}
        per_run.append(({p["pair"]: p for p in results["pairs"]}, kept))
    names = list(dict.fromkeys(name for pairs, _ in per_run for name in pairs))
    return {
        "runs": [run.run_id for run in runs],
        "pairs": [_row(name, runs, per_run) for name in names],
    }


def _row(name: str, runs: list[Run], per_run: list[tuple[dict, dict]]) -> dict[str, Any]:
    found = [pairs.get(name) for pairs, _ in per_run]
    sides = [
        {
            "run": run.run_id,
            "state": pair["state"] if pair else "absent",
            "top1": pair["chosen_top1"] if pair else None,
            "epoch": pair["chosen_top1_epoch"] if pair else None,
        }
        for run, pair in zip(runs, found, strict=True)
    ]
    first, first_predictions = found[0], per_run[0][1].get(name, {})
    differences = [
        _against(first, first_predictions, pair, predictions.get(name, {}))
        for pair, (_, predictions) in zip(found[1:], per_run[1:], strict=True)
    ]
    return {
        "pair": name,
        "sides": sides,
        "differences": differences,  # each later run minus the first
        "settings": _differing([pair["config"] if pair else None for pair in found]),
    }


def _against(first: dict | None, first_kept: dict, pair: dict | None, kept: dict) -> dict:
    """`pair` minus `first` in top-1 points, with its paired interval where both runs kept
    their chosen evaluations' predictions of the same samples."""
    if not first or not pair or first["chosen_top1"] is None or pair["chosen_top1"] is None:
        return {"difference": None, "why": "not scored in both runs"}
    point = 100 * (pair["chosen_top1"] - first["chosen_top1"])
    a = kept.get(f"epoch_{pair['chosen_top1_epoch']}")
    b = first_kept.get(f"epoch_{first['chosen_top1_epoch']}")
    found = paired_difference([a], [b], TOP1)
    if found is None:
        why = "no interval: not the same test samples, or their predictions were not kept"
        return {"difference": point, "why": why}
    return {
        "difference": found.difference,
        "low": found.low,
        "high": found.high,
        "p_mcnemar": found.p_value,
        "clear": found.clear,
    }


def _differing(configs: list[dict | None]) -> dict[str, list[Any]]:
    """key -> each run's value, for the settings that differ between the runs."""
    present = [c for c in configs if c]
    keys = dict.fromkeys(k for c in present for k in c)
    return {
        key: [c.get(key) if c else None for c in configs]
        for key in keys
        if len({json.dumps(c.get(key), sort_keys=True) for c in present}) > 1
    }


def as_markdown(compared: dict[str, Any]) -> str:
    """The comparison as a Markdown table, the report's format."""
    runs = compared["runs"]
    header = ["pair", *runs, *(f"{r} - {runs[0]}" for r in runs[1:]), "settings that differ"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in compared["pairs"]:
        lines.append("| " + " | ".join(cells(row)) + " |")
    return "\n".join(lines) + "\n"


def cells(row: dict[str, Any]) -> list[str]:
    """One pair's row: each run's top-1 at its chosen epoch, the differences, the settings."""
    scored = [
        f"{100 * s['top1']:.2f} @{s['epoch']}" if s["top1"] is not None else s["state"]
        for s in row["sides"]
    ]
    settings = "; ".join(
        f"{key}: {' | '.join(json.dumps(v) for v in values)}"
        for key, values in row["settings"].items()
    )
    return [row["pair"], *scored, *(difference_text(d) for d in row["differences"]), settings]


def difference_text(d: dict[str, Any]) -> str:
    if d["difference"] is None:
        return "-"
    if "low" not in d:
        return f"{d['difference']:+.2f} (no interval)"
    return f"{d['difference']:+.2f} (95% CI {d['low']:+.2f} to {d['high']:+.2f})"
