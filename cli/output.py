"""How commands print: tables, YAML or JSON documents, numbers."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import click
import yaml


def print_documents(documents: list[dict[str, Any]], fmt: str) -> None:
    """As kubectl prints objects: YAML documents one after another; in JSON one document as
    it is, several as a `v1 List`."""
    if fmt == "json":
        value = (
            documents[0]
            if len(documents) == 1
            else {"apiVersion": "v1", "kind": "List", "items": documents}
        )
        click.echo(json.dumps(value, indent=2))
    else:
        click.echo(yaml.safe_dump_all(documents, sort_keys=False), nl=False)


def print_value(value: Any, fmt: str) -> None:
    click.echo(json.dumps(value, indent=2) + "\n" if fmt == "json" else to_yaml(value), nl=False)


def to_yaml(value: Any) -> str:
    return yaml.safe_dump(value, sort_keys=False)


def table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _fmt(value: float | None, render: Callable[[float], str]) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return render(value)


def pct(value: float | None) -> str:
    return _fmt(value, lambda v: f"{100 * v:.1f}%")


def num(value: float | None) -> str:
    return _fmt(value, lambda v: f"{v:.0f}")


def duration(seconds: float | None) -> str:
    return _fmt(seconds, lambda s: f"{int(s) // 60}m{int(s) % 60:02d}s")
