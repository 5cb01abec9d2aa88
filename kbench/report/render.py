"""The results dict (kbench.report.gather) as files: `report.html` (one self-contained file,
inline SVG plots), `report.md`, `results.csv` (the per-epoch table) and `results.json`."""

from __future__ import annotations

import csv
import io
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from kbench.registry import TOP1
from kbench.report.charts import Series, line_chart
from kbench.report.compare import p_text

TEMPLATES = resources.files("kbench.report").joinpath("templates")

# What chose each pair's epoch and WiSE-FT's alpha (overall.select_on), said first.
CHOICES = {
    "val": "Every choice (each pair's epoch, WiSE-FT's alpha) was made on a validation split: "
    "the dataset's published one, else a tenth of its training images held out. The test "
    "split chose nothing, and every number below is the test split's, at those choices.",
    "test": "Chosen on the test split, as the study did: optimistic. Each pair's epoch and "
    "WiSE-FT's alpha were picked on the split they are scored on, so every chosen number is "
    "biased upwards (select_on: val chooses on a validation split instead).",
    "last": "Nothing was chosen: every pair at its last epoch, WiSE-FT at alpha 1 "
    "(select_on: last).",
    "mixed": "The pairs chose on different splits (see their settings): compare with care.",
}
SEED_NOTE = (
    "One seed per pair: the intervals cover the noise of the test samples only, not the "
    "randomness of training (a grid's seeds: 3 adds it)."
)


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
        loader=jinja2.FunctionLoader(lambda name: TEMPLATES.joinpath(name).read_text("utf-8")),
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
    env.filters["p_value"] = lambda p: "" if p is None else p_text(p).removeprefix("= ")
    env.filters["sides"] = _sides
    env.filters["settings"] = settings
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
    overall = results["overall"]
    return {
        "sweeps": [],  # results of a run without sweeps, or built without the store
        "methods": [],
        **results,
        "by_pair": pairs,
        "environment": environments[0] if environments else None,
        "choices": CHOICES.get(overall["select_on"]),
        "seed_note": SEED_NOTE if overall["seeds"] == 1 else None,
    }


def settings(config: dict[str, Any]) -> str:
    """A pair's settings in a line, those that apply (momentum for SGD only, a warmup as it
    was given, the splits and limits where set), for a table that needs no scrolling."""
    lr = f"{config['optimizer']} lr {config['lr']:g}"
    if config["head_lr"] not in (None, config["lr"]):
        lr += f" (head {config['head_lr']:g})"
    if config["warmup_steps"] is not None:
        warmup = f"{config['warmup_steps']} warmup steps"
    else:
        warmup = f"warmup {config['warmup']:.0%}"
    parts = [
        f"{config['epochs']} epochs",
        f"batch {config['batch_size']}",
        lr,
        f"momentum {config['momentum']:g}" if config["optimizer"] == "sgd" else "",
        f"weight decay {config['weight_decay']:g}",
        f"grad clip {config['grad_clip']:g}" if config["grad_clip"] is not None else "",
        f"{config['schedule']}, {warmup}",
        f"augment {config['augment']}",
        f"{len(config['templates'])} prompt(s) of the grid's" if config["templates"] else "",
        f"chosen on {config['select_on']}",
        *(f"{key} {config[key]}" for key in OPTIONAL_KEYS if config[key] is not None),
        "pretrained" if config["pretrained"] else "random init",
        f"seed {config['seed']}",
        f"{config['precision']}" + (", compiled" if config["compile"] else ""),
    ]
    return ", ".join(part for part in parts if part)


# Shown only where a config sets them
OPTIONAL_KEYS = ("train_split", "val_split", "eval_split", "train_limit", "eval_limit", "data")


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
            marked: dict[float, str] = {0: "zero-shot"} if p["family"] == "clip" else {}
            epochs.append(Series(p["model"], points, marked=marked))
            if p["published"]:
                study = sorted((int(e), _pct_value(v)) for e, v in p["published"].items())
                epochs.append(Series(f"{p['model']} (study)", study, reference=True))
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
