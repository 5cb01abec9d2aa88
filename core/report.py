"""The comparison report of a run: `report.html` (self-contained, inline SVG plots),
`report.md`, `results.csv` and `results.json`.

`gather` reads every pair's records (concurrently); `build_results` turns them into one plain
dict that every renderer uses, so the files never disagree. Pairs still running, failed or
without records keep their place and are marked.
"""

from __future__ import annotations

import csv
import io
import json
import math
from importlib import resources
from pathlib import Path
from statistics import mean
from typing import Any

import jinja2

from kbench.charts import Series, line_chart
from kbench.pairs import Outcome, PairRecords, PairState, finite, pair_state
from kbench.registry import DATASETS, MODELS
from kbench.runs import Run, read_pairs
from kbench.storage import Store

TIE_POINTS = 0.1  # best accuracies closer than this (in points) are a tie
PUBLISHED_TOLERANCE = 2.0  # points off the published zero-shot number before a flag


# ------------------------------------------------------------------------------------- reading


def gather(store: Store, run: Run, states: dict[str, Outcome], workers: int = 32) -> dict:
    """Read every pair's config, epoch records and result (`workers` pairs at a time: S3 GETs
    are latency-bound), then build the results."""
    return build_results(run, read_pairs(store, run, workers=workers), states)


# ------------------------------------------------------------------------------------ building


def build_results(run: Run, found: list[PairRecords], states: dict[str, Outcome]) -> dict:
    pairs = [_pair(p, states.get(p.pair)) for p in found]
    datasets = []
    for name in dict.fromkeys(p["dataset"] for p in pairs):  # grid order
        datasets.append(_dataset(name, [p for p in pairs if p["dataset"] == name]))
    decided = [d for d in datasets if d["winner"] not in (None, "tie")]
    differences = [d["difference"] for d in datasets if d["difference"] is not None]
    overall = {
        "datasets": len(datasets),
        "clip_wins": sum(1 for d in decided if d["winner_family"] == "clip"),
        "resnet_wins": sum(1 for d in decided if d["winner_family"] == "resnet"),
        "ties": sum(1 for d in datasets if d["winner"] == "tie"),
        "undecided": sum(1 for d in datasets if d["winner"] is None),
        "mean_difference": mean(differences) if differences else None,
    }
    header, rows = _epoch_table(pairs)
    meta = {k: v for k, v in run.to_dict().items() if k != "document"}
    return _no_nan(
        {
            "run": meta,
            "overall": overall,
            "datasets": datasets,
            "pairs": pairs,
            "table": {"header": header, "rows": rows},
        }
    )


def _pair(found: PairRecords, backend: Outcome | None) -> dict:
    config, epochs, result = found.config, found.epochs, found.result
    model = config["model"]
    family = MODELS[model].family if model in MODELS else "unknown"
    metric = epochs[0]["headline_metric"] if epochs else _headline_metric(config["dataset"])
    best = found.best
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
    published = _published_check(config, found.zero_shot)
    if published:
        flags.append(published)

    return {
        "pair": found.pair,
        "dataset": config["dataset"],
        "model": model,
        "family": family,
        "state": state,
        "headline_metric": metric,
        "epochs_done": len(found.trained),
        "epochs_total": config["epochs"],
        "zero_shot": found.zero_shot,
        "best": best["headline"] if best else None,
        "best_epoch": best["epoch"] if best else None,
        "last": epochs[-1]["headline"] if epochs else None,
        "gpu_hours": found.train_seconds * gpus / 3600,
        "train_hours": found.train_seconds / 3600,
        "gpus": gpus,
        "images_per_s": found.images_per_s,
        "parameters": result["parameters"] if result else None,
        "wise_ft": result.get("wise_ft") if result else None,
        "per_group": best.get("per_group") if best else None,  # FMoW: regions, best epoch
        "environment": result.get("environment") if result else None,
        "flags": flags,
        "config": config,
        "epochs": epochs,
    }


def _dataset(name: str, pairs: list[dict]) -> dict:
    clip = next((p for p in pairs if p["family"] == "clip"), None)
    resnet = next((p for p in pairs if p["family"] == "resnet"), None)
    done = clip and resnet and clip["state"] == resnet["state"] == PairState.SUCCEEDED.value
    difference = winner = family = None
    if done and clip["best"] is not None and resnet["best"] is not None:
        difference = 100 * (clip["best"] - resnet["best"])
        if abs(difference) < TIE_POINTS:
            winner = "tie"
        else:
            winning = clip if difference > 0 else resnet
            winner, family = winning["model"], winning["family"]
    return {
        "dataset": name,
        "headline_metric": pairs[0]["headline_metric"],
        "clip": clip["pair"] if clip else None,
        "resnet": resnet["pair"] if resnet else None,
        "zero_shot": clip["zero_shot"] if clip else None,
        "best_clip": clip["best"] if clip else None,
        "best_resnet": resnet["best"] if resnet else None,
        "difference": difference,  # points, CLIP minus ResNet
        "winner": winner,  # a model name, "tie", or None while a pair is not complete
        "winner_family": family,
        "groups": _group_rows(clip, resnet),
        "pairs": [p["pair"] for p in pairs],
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
    """Rows = epochs, columns = pairs, cells = the headline metric (None where missing)."""
    by_pair = [{e["epoch"]: e["headline"] for e in p["epochs"]} for p in pairs]
    epochs = sorted({e for cells in by_pair for e in cells})
    header = ["epoch"] + [p["pair"] for p in pairs]
    return header, [[e] + [cells.get(e) for cells in by_pair] for e in epochs]


def _headline_metric(dataset: str) -> str:
    return DATASETS[dataset].headline if dataset in DATASETS else "top1"


def _published_check(config: dict, zero_shot: float | None) -> str | None:
    """Flag real OpenAI ViT-B/32 zero-shot numbers far from those published."""
    info = DATASETS.get(config["dataset"])
    if not (config["model"] == "clip-vit-b32" and config.get("pretrained") and info):
        return None
    if config.get("eval_split") not in (None, info.eval_splits[0]):  # published: that split
        return None
    if zero_shot is None or info.published_zero_shot is None:
        return None
    low, high = info.published_zero_shot
    value = 100 * zero_shot
    if low - PUBLISHED_TOLERANCE <= value <= high + PUBLISHED_TOLERANCE:
        return None
    published = f"{low:g}" if low == high else f"{low:g}–{high:g}"
    return (
        f"zero-shot {value:.1f} is more than {PUBLISHED_TOLERANCE:g} points from the "
        f"published {published}: check the weights, class names and templates"
    )


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
    return env


def _context(results: dict[str, Any]) -> dict[str, Any]:
    pairs = {p["pair"]: p for p in results["pairs"]}
    environments = [p["environment"] for p in results["pairs"] if p["environment"]]
    return {**results, "by_pair": pairs, "environment": environments[0] if environments else None}


def _charts(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per dataset: headline metric against epochs for every pair; WiSE-FT where present."""
    by_pair = {p["pair"]: p for p in results["pairs"]}
    charts = {}
    for i, d in enumerate(results["datasets"]):
        pairs = [by_pair[name] for name in d["pairs"]]
        epochs = [
            Series(
                p["model"],
                [(e["epoch"], _pct_value(e["headline"])) for e in p["epochs"]],
                marked={0: "zero-shot"} if p["family"] == "clip" else {},
            )
            for p in pairs
        ]
        metric = d["headline_metric"].replace("_", " ")
        chart = {"epochs": line_chart(epochs, "epoch", f"{metric} (%)", f"epochs-{i}")}
        wise = [
            Series(p["model"], [(w["alpha"], _pct_value(w["headline"])) for w in p["wise_ft"]])
            for p in pairs
            if p["wise_ft"]
        ]
        if wise:
            x_label = "alpha (0 = zero-shot, 1 = fine-tuned)"
            chart["wise_ft"] = line_chart(
                wise, x_label, f"{metric} (%)", f"wiseft-{i}", integer_x=False
            )
        charts[d["dataset"]] = chart
    return charts


def _pct_value(value: float | None) -> float | None:
    return None if value is None else 100 * value


def _pct(value: float | None) -> str:
    if value is None:
        return ""
    return f"{100 * value:.2f}"


def _md(text: Any) -> str:
    """Text from data in a Markdown table: no HTML gets through, no cell breaks."""
    s = str(text)
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return s.replace("|", "\\|").replace("\n", " ")
