"""The comparison report: read every pair's records of a run, write Markdown, CSV and JSON.

The study's table has one row per epoch and one column per `<dataset>_<model>` pair; each cell is
the dataset's headline metric. Pairs still running or failed keep their column with what they
have so far.
"""

from __future__ import annotations

import csv
import io
import json
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kbench import records
from kbench.registry import dataset_info
from kbench.storage import Store, read_json


def gather(store: Store, run: dict[str, Any]) -> dict[str, Any]:
    """Every pair's config, epoch records and result, read concurrently."""
    run_id = run["run_id"]

    def one(pair: str) -> dict[str, Any]:
        key = lambda name: records.pair_key(run_id, pair, name)  # noqa: E731
        config = read_json(store, key(records.CONFIG))
        return {
            "pair": pair,
            "dataset": config["dataset"],
            "model": config["model"],
            "headline_metric": dataset_info(config["dataset"]).headline,
            "config": config,
            "epochs": read_json(store, key(records.METRICS), default={"epochs": []})["epochs"],
            "result": read_json(store, key(records.RESULT), default=None),
        }

    with ThreadPoolExecutor(max_workers=16) as pool:
        pairs = list(pool.map(one, run["pairs"]))
    return {"run": {k: v for k, v in run.items() if k != "document"}, "pairs": pairs}


def epoch_table(results: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """(header, rows): rows = epochs, columns = pairs, cells = headline metric or None."""
    pairs = results["pairs"]
    by_pair = [{r["epoch"]: r["headline"] for r in p["epochs"]} for p in pairs]
    epochs = sorted({e for cells in by_pair for e in cells})
    header = ["epoch"] + [p["pair"] for p in pairs]
    rows = [[e] + [cells.get(e) for cells in by_pair] for e in epochs]
    return header, rows


def write_report(results: dict[str, Any], out_dir: str | Path) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "report.md": render_markdown(results),
        "results.csv": render_csv(results),
        "results.json": json.dumps(results, indent=1, sort_keys=True),
    }
    for name, text in paths.items():
        (out / name).write_text(text, encoding="utf-8")
    return [out / name for name in paths]


def render_csv(results: dict[str, Any]) -> str:
    header, rows = epoch_table(results)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[("" if v is None else v) for v in row] for row in rows])
    return buf.getvalue()


def render_markdown(results: dict[str, Any]) -> str:
    run = results["run"]
    header, rows = epoch_table(results)
    metric_of = {p["pair"]: p["headline_metric"] for p in results["pairs"]}
    lines = [
        f"# kbench report: run `{run['run_id']}`",
        "",
        f"Grid `{run['grid']}` ({run['source']}), created {run['created']}, "
        f"kbench {run['kbench_version']}, backend `{run['backend']}`.",
        "",
        "## Headline metric per epoch (%)",
        "",
        "Epoch 0 is the model before training: CLIP's zero-shot head.",
        "",
        _md_row(["epoch"] + [f"{p} ({metric_of[p]})" for p in header[1:]]),
        _md_row(["---"] * len(header)),
    ]
    lines += [_md_row([str(row[0])] + [_pct(v) for v in row[1:]]) for row in rows]
    lines += [
        "",
        "## Pairs",
        "",
        _md_row(["pair", "state", "epochs", "best", "best epoch", "zero-shot", "train s"]),
        _md_row(["---"] * 7),
    ]
    for p in results["pairs"]:
        r = p["result"]
        done = len([e for e in p["epochs"] if e["epoch"] > 0])
        state = "done" if r else ("running or failed" if p["epochs"] else "no records")
        lines.append(
            _md_row(
                [
                    p["pair"],
                    state,
                    f"{done}/{p['config']['epochs']}",
                    _pct(r["best"]) if r else "",
                    str(r["best_epoch"]) if r else "",
                    _pct(r["zero_shot"]) if r else "",
                    f"{r['train_seconds']:.0f}" if r else "",
                ]
            )
        )
    return "\n".join(lines) + "\n"


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _pct(value: float | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return f"{100 * value:.2f}"
