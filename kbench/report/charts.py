"""Small inline SVG line charts for the HTML report: no plotting library, no external assets,
readable offline and printable. Every text that reaches the SVG is escaped."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeGuard

from markupsafe import Markup, escape

WIDTH, HEIGHT = 520, 300
LEFT, RIGHT, TOP, BOTTOM = 52, 150, 16, 40  # margins: the legend sits on the right
COLOURS = ["#1f6fb4", "#d9711c", "#2a9d4b", "#b8336a", "#6a51a3", "#666666"]
# A reference's colour beside its series': a lighter tint of the same hue.
TINTS = dict(
    zip(COLOURS, ["#8fb7da", "#ecb88e", "#95cea5", "#dc99b5", "#b4a8d1", "#b3b3b3"], strict=True)
)


@dataclass
class Series:
    name: str
    points: Sequence[tuple[float, float | None]]  # (x, y); y None or NaN: a point skipped
    marked: dict[float, str] = field(default_factory=dict)  # x -> label of a special point
    # A reference beside the data (the study's published points): dashed, hollow diamonds, a
    # lighter tint of the series before it, in the legend too
    reference: bool = False


def line_chart(
    series: list[Series], x_label: str, y_label: str, chart_id: str, integer_x: bool = True
) -> Markup:
    finite = [(x, y) for s in series for x, y in s.points if _finite(y)]
    if not finite:
        return Markup('<p class="empty">no data yet</p>')
    xs, ys = [x for x, _ in finite], [y for _, y in finite]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = _y_range(min(ys), max(ys))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * plot_w

    def py(y: float) -> float:
        return TOP + (1 - (y - y0) / (y1 - y0)) * plot_h

    parts = [
        f'<svg class="chart" id="{escape(chart_id)}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" xmlns="http://www.w3.org/2000/svg">',
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" class="frame"/>',
    ]
    for tick in _ticks(y0, y1):
        parts.append(
            f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{py(tick):.1f}" '
            f'y2="{py(tick):.1f}" class="grid"/>'
        )
        parts.append(
            f'<text x="{LEFT - 6}" y="{py(tick) + 4:.1f}" class="tick" '
            f'text-anchor="end">{tick:g}</text>'
        )
    for tick in _ticks(x0, x1, integers=integer_x):
        parts.append(
            f'<text x="{px(tick):.1f}" y="{TOP + plot_h + 16}" class="tick" '
            f'text-anchor="middle">{tick:g}</text>'
        )
    parts.append(
        f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 6}" class="label" '
        f'text-anchor="middle">{escape(x_label)}</text>'
    )
    parts.append(
        f'<text x="12" y="{TOP + plot_h / 2}" class="label" text-anchor="middle" '
        f'transform="rotate(-90 12 {TOP + plot_h / 2})">{escape(y_label)}</text>'
    )

    colours = _colours(series)
    for i, s in enumerate(series):
        colour = colours[i]
        dash = ' stroke-dasharray="5 4"' if s.reference else ""
        points = [(px(x), py(y)) for x, y in s.points if _finite(y)]
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            parts.append(
                f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>'
            )
        for (x, y), (cx, cy) in zip([p for p in s.points if _finite(p[1])], points, strict=True):
            label = s.marked.get(x)
            if label:  # a hollow square and its label, e.g. CLIP's zero-shot epoch 0
                parts.append(
                    f'<rect x="{cx - 5:.1f}" y="{cy - 5:.1f}" width="10" height="10" '
                    f'fill="white" stroke="{colour}" stroke-width="2" data-y="{y:.6g}"/>'
                )
                parts.append(
                    f'<text x="{cx + 8:.1f}" y="{cy - 8:.1f}" class="mark">{escape(label)}</text>'
                )
            else:
                parts.append(_marker(cx, cy, colour, s.reference, f' data-y="{y:.6g}"'))
        legend_y = TOP + 14 + 18 * i
        legend_x = WIDTH - RIGHT + 12
        parts.append(
            f'<line x1="{legend_x}" x2="{legend_x + 20}" y1="{legend_y - 4}" '
            f'y2="{legend_y - 4}" stroke="{colour}" stroke-width="3"{dash}/>'
        )
        parts.append(_marker(legend_x + 10, legend_y - 4, colour, s.reference))
        parts.append(
            f'<text x="{legend_x + 26}" y="{legend_y}" class="legend">{escape(s.name)}</text>'
        )
    parts.append("</svg>")
    return Markup("\n".join(parts))


def _marker(x: float, y: float, colour: str, reference: bool, extra: str = "") -> str:
    """A point: a filled circle, or a reference's hollow diamond."""
    if reference:
        diamond = f"{x:.1f},{y - 5:.1f} {x + 5:.1f},{y:.1f} {x:.1f},{y + 5:.1f} {x - 5:.1f},{y:.1f}"
        return (
            f'<polygon points="{diamond}" fill="white" stroke="{colour}" stroke-width="2" '
            f'class="reference"{extra}/>'
        )
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}" stroke="{colour}"{extra}/>'


def _colours(series: list[Series]) -> list[str]:
    """A colour per series; a reference takes a lighter tint of the series before it."""
    colours: list[str] = []
    own: list[str] = []  # the series' own colours, references left out
    for s in series:
        if s.reference and own:
            colours.append(TINTS[own[-1]])
        else:
            own.append(COLOURS[len(own) % len(COLOURS)])
            colours.append(own[-1])
    return colours


def _finite(value: float | None) -> TypeGuard[float]:
    return value is not None and math.isfinite(value)


def _y_range(low: float, high: float) -> tuple[float, float]:
    """A little room around the data, in whole steps of 5, inside 0..100."""
    low, high = math.floor((low - 2) / 5) * 5, math.ceil((high + 2) / 5) * 5
    return max(0.0, low), min(100.0, max(high, low + 5))


def _ticks(low: float, high: float, integers: bool = True) -> list[float]:
    span = high - low
    step = (
        next(s for s in (1, 2, 5, 10, 20, 25, 50, 100) if span / s <= 6) if integers else span / 5
    )
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]
