"""Published numbers a run is compared with, shipped as package data with their sources:

- `data/study_published.json`: the reference study's table, top-1 of its 18 pairs after epochs
  1, 5, 10, 15 and 20;
- `data/zero_shot_published.json`: OpenAI CLIP ViT-B/32's zero-shot numbers on the nine
  datasets, from the CLIP paper and from open_clip's own evaluation, with their caveats.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from kbench.registry import DATASETS
from kbench.spec import TrainConfig, pair_name

ZERO_SHOT_TOLERANCE = 2.0  # points outside the published range before the report flags it


@cache
def _load(name: str) -> dict[str, Any]:
    return json.loads(resources.files("kbench").joinpath(f"data/{name}").read_text("utf-8"))


def study_table() -> dict[str, Any]:
    """The study's published table as shipped: source, notes, metric, epochs, pairs."""
    return _load("study_published.json")


def unreliable(config: TrainConfig, pair: str) -> str | None:
    """Why the study's own text calls this pair unreliable, when a run replays it (its
    settings are the study's); None otherwise."""
    table = study_table()
    name = pair_name(config.dataset, config.model)
    if name in table["unreliable"] and name == pair and not differences(config):
        return table["unreliable_note"]
    return None


def caveat(dataset: str) -> str | None:
    """What keeps a dataset's numbers from comparing with the study's, in words."""
    found: str | None = study_table()["caveats"].get(dataset)
    return found


# Settings that change speed only, and that a replay may set as it likes.
SPEED_ONLY = ("seed", "workers", "precision", "channels_last", "compile")


def differences(config: TrainConfig) -> list[str]:
    """The settings of a pair that differ from the study's for the same pair (grid `study`),
    e.g. "warmup_steps None (study: 500)"; [] for a replay, or a pair the study did not train."""
    study = _study_configs().get(pair_name(config.dataset, config.model))
    if study is None:
        return []
    ours, theirs = config.to_dict(), study.to_dict()
    return [
        f"{key} {ours[key]} (study: {theirs[key]})"
        for key in theirs
        if key not in SPEED_ONLY and ours.get(key) != theirs[key]
    ]


@cache
def _study_configs() -> dict[str, TrainConfig]:
    from kbench.spec import load_grid

    return {p.name: p.config for p in load_grid("study").pairs}


def study_points(config: TrainConfig, pair: str) -> dict[int, float]:
    """The study's published top-1 of this pair by epoch; {} where the study did not train
    this pair the way it did: its dataset x model with pretrained weights, scored on the split
    the study reports."""
    # One of a grid's seeds is the same pair as the study's.
    points = study_table()["pairs"].get(pair_name(config.dataset, config.model))
    if not points or not _as_published(config):
        return {}
    return {int(epoch): value for epoch, value in points.items()}


def _as_published(config: TrainConfig) -> bool:
    """Pretrained weights, scored on the split the published numbers are on (the first of
    the dataset's eval splits)."""
    info = DATASETS.get(config.dataset)
    split = config.eval_split
    return bool(info and config.pretrained and split in (None, info.eval_splits[0]))


@dataclass(frozen=True)
class ZeroShot:
    dataset: str
    metric: str  # the metric the numbers are in: the dataset's headline
    values: dict[str, float]  # source ("clip_paper", "open_clip") -> percent
    caveat: str | None  # why a run may differ without a bug (another evaluator, prompts)

    @property
    def low(self) -> float:
        return min(self.values.values())

    @property
    def high(self) -> float:
        return max(self.values.values())

    def text(self) -> str:
        return " or ".join(f"{v:g} ({source})" for source, v in self.values.items())


def zero_shot(dataset: str) -> ZeroShot | None:
    data = _load("zero_shot_published.json")
    values = data["values_percent"].get(dataset)
    if values is None:
        return None
    metric = data["metric_per_dataset"][dataset]
    return ZeroShot(dataset, metric, values, data["caveats"].get(dataset))


def zero_shot_flag(config: TrainConfig, value: float | None) -> str | None:
    """A flag when a real OpenAI ViT-B/32's zero-shot number is far from both published ones;
    only where it is comparable: pretrained weights, the dataset's own prompts, the split the
    numbers were published for."""
    if value is None or config.model != "clip-vit-b32" or not _as_published(config):
        return None
    published = zero_shot(config.dataset)
    if published is None or config.templates is not None:
        return None
    points = 100 * value
    if published.low - ZERO_SHOT_TOLERANCE <= points <= published.high + ZERO_SHOT_TOLERANCE:
        return None
    flag = (
        f"zero-shot {points:.1f} is more than {ZERO_SHOT_TOLERANCE:g} points from the "
        f"published {published.text()}: check the weights, class names and templates"
    )
    return f"{flag} (but: {published.caveat})" if published.caveat else flag
