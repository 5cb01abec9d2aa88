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

TEMPLATES = resources.files("kbench.report").joinpath("templates")


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
            marked: dict[float, str] = {0: "zero-shot"} if p["family"] == "clip" else {}
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
