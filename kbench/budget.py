"""GPU-hours before anything runs: each pair's and each sweep's, from the measured rates per
model and GPU type shipped in data/budget.yaml, the datasets' sizes and the epochs. A model,
dataset or GPU type without a measured figure says "no estimate" instead of guessing.

A pair's GPU-hours (linear scaling over its GPUs assumed: the hours of one GPU):

    train_images * epochs / train_rate  +  evaluations * (val + test images) / eval_rate

with an evaluation after every epoch, and for CLIP one before training (zero-shot) and the 9
inner points of WiSE-FT's curve after. A sweep's trial scores validation only; with halving,
every trial trains to the first rung, the ceil(n / eta) best of them to the next, ..., those
left after the last rung to the end; the worst case trains every trial to the end. The chosen
setting's seeds are full pairs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from kbench.layers import load_yaml
from kbench.registry import dataset_info, model_family
from kbench.spec import HOLDOUT, Pair, TrainConfig
from kbench.splits import choose_splits, holdout
from kbench.sweep_grid import SweepCell

WISE_FT_POINTS = 9  # alphas 0.1 ... 0.9; 0 and 1 are the zero-shot and fine-tuned evaluations
FGVC_TRAINVAL = 6_667  # FGVC-Aircraft's trainval: its train split (3,334) and val (3,333)


@cache
def table() -> dict[str, Any]:
    text = resources.files("kbench").joinpath("data/budget.yaml").read_text("utf-8")
    return load_yaml(text, "data/budget.yaml")


@dataclass(frozen=True)
class Sizes:
    train: int
    val: int
    test: int


def train_images(config: TrainConfig) -> tuple[int, int] | None:
    """(images a pair trains on, images its hold-out takes) from the registry's published
    training-split size, the hold-out drawn as for a balanced split (CIFAR, STL10 and Food101
    are), before any limit; None where the size is not known."""
    info = dataset_info(config.dataset)
    if info.train_size is None:
        return None
    roles = choose_splits(config, (*info.train_splits, *info.val_splits, *info.eval_splits))
    whole = FGVC_TRAINVAL if roles.train == "trainval" else info.train_size
    held = len(holdout([i % info.num_classes for i in range(whole)])) if roles.val == HOLDOUT else 0
    return whole - held, held


def sizes(config: TrainConfig) -> Sizes | None:
    """The images a pair trains on and evaluates, from the published sizes (None: unknown)."""
    published = table()["splits"].get(config.dataset)
    found = train_images(config)
    if published is None or found is None:
        return None
    train, held = found
    val = held or (published.get("val", 0) if config.select_on == "val" else 0)
    test = published["test"]
    if config.train_limit:
        train = min(train, config.train_limit)
    if config.eval_limit:
        val, test = min(val, config.eval_limit), min(test, config.eval_limit)
    return Sizes(train, val, test)


def rates(model: str, gpu_type: str | None) -> dict[str, float] | None:
    return table()["rates"].get(gpu_type or "", {}).get(model)


def pair_hours(config: TrainConfig, gpu_type: str | None) -> float | None:
    """A pair trained to its end, test and validation scored every epoch."""
    costs = _costs(config, gpu_type, trial=False)
    if costs is None:
        return None
    epoch, evaluation = costs
    extra = 1 + WISE_FT_POINTS if model_family(config.model) == "clip" else 0
    return (config.epochs * epoch + extra * evaluation) / 3600


def trial_hours(config: TrainConfig, gpu_type: str | None, epochs: int) -> float | None:
    """`epochs` of a sweep's trial, validation alone scored (CLIP's zero-shot head too)."""
    costs = _costs(config, gpu_type, trial=True)
    if costs is None:
        return None
    epoch, evaluation = costs
    return (epochs * epoch + _zero_shot(config) * evaluation) / 3600


def _costs(config: TrainConfig, gpu_type: str | None, trial: bool) -> tuple[float, float] | None:
    """(GPU-seconds of a trained and evaluated epoch, of one evaluation alone)."""
    found, rate = sizes(config), rates(config.model, gpu_type)
    if found is None or rate is None:
        return None
    evaluation = (found.val if trial else found.val + found.test) / rate["eval"]
    return found.train / rate["train"] + evaluation, evaluation


def grid_budget(pairs: list[Pair], sweeps: list[SweepCell], gpu_type: str | None) -> dict:
    """Every pair's GPU-hours, every sweep's worst case and halving case with its seeds, and
    the run's: `expected` with halving, `worst` without (None wherever there is no
    estimate)."""
    trials = {t["pair"]: cell["cell"] for cell in sweeps for t in cell["trials"]}
    plain = {p.name: pair_hours(p.config, gpu_type) for p in pairs if p.name not in trials}
    rows = [{"pair": name, "gpu_hours": hours} for name, hours in plain.items()]
    cells, found = [], []
    for cell in sweeps:
        own = [p for p in pairs if trials.get(p.name) == cell["cell"]]
        found.append(sweep_budget(cell, own, gpu_type))
        cells.append(
            {
                "cell": cell["cell"],
                "trials": len(own),
                "seeds": len(cell["seeds"]),
                "worst": found[-1].worst,
                "halving": found[-1].halving,
                "seed_runs": found[-1].seeds,
            }
        )
    seeds = [f.seeds for f in found]
    expected = [*plain.values(), *(f.halving for f in found), *seeds]
    worst = [*plain.values(), *(f.worst for f in found), *seeds]
    return {
        "gpu_type": gpu_type,
        "measured": sorted(table()["rates"]),
        "pairs": rows,
        "sweeps": cells,
        "expected": _total(expected),
        "worst": _total(worst),
    }


def budget_lines(budget: dict) -> list[str]:
    """The budget as `submit --dry-run` and `render` print it."""
    gpu, measured = budget["gpu_type"], ", ".join(budget["measured"])
    if gpu is None or gpu not in budget["measured"]:
        why = "no GPU type given (--gpu-type, or gpu_type in the cluster settings)"
        if gpu is not None:
            why = f"no measured rates for GPU type {gpu!r}"
        return [f"budget: no estimate: {why}; measured: {measured}"]
    lines = [f"budget, GPU-hours on {gpu} (data/budget.yaml's measured rates):"]
    for row in budget["pairs"]:
        lines.append(f"  {row['pair']}: {_hours_text(row['gpu_hours'])}")
    for cell in budget["sweeps"]:
        lines.append(
            f"  {cell['cell']}: sweep of {cell['trials']}: {_hours_text(cell['halving'])} with "
            f"halving ({_hours_text(cell['worst'])} worst case), then {cell['seeds']} seeds "
            f"{_hours_text(cell['seed_runs'])}"
        )
    total = f"run: {_hours_text(budget['expected'])}"
    if budget["sweeps"]:
        total += f" with halving, {_hours_text(budget['worst'])} worst case"
    return [*lines, f"  {total}"]


def _hours_text(hours: float | None) -> str:
    return "no estimate" if hours is None else f"{hours:.2f}"


def _total(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else sum(v or 0.0 for v in values)


def _zero_shot(config: TrainConfig) -> int:
    return 1 if model_family(config.model) == "clip" else 0


@dataclass(frozen=True)
class SweepBudget:
    worst: float | None  # every trial trained to its end
    halving: float | None  # as successive halving prunes
    seeds: float | None  # the chosen setting's seeds


def sweep_budget(cell: SweepCell, trials: list[Pair], gpu_type: str | None) -> SweepBudget:
    """A cell's trials in the worst case and under halving, and its seeds. Which trials go on
    is not known before they train: each stretch between rungs is priced at the costliest
    trial's epoch, and the seeds at the costliest trial's setting."""
    costs = [_costs(t.config, gpu_type, trial=True) for t in trials]
    seed_hours = [pair_hours(t.config, gpu_type) for t in trials]
    if any(c is None for c in costs) or any(h is None for h in seed_hours):
        return SweepBudget(None, None, None)
    epoch = max(c[0] for c in costs if c)
    evaluation = max(c[1] for c in costs if c)
    worst = sum(trial_hours(t.config, gpu_type, t.config.epochs) or 0.0 for t in trials)
    # How many trials train each stretch between rungs: n, ceil(n / eta), ...; those left
    # after the last rung train to the end.
    alive, start, epochs = len(trials), 0, 0
    for rung in cell["rungs"]:
        epochs += alive * (rung - start)
        alive, start = math.ceil(alive / cell["eta"]), rung
    if alive > 1:
        epochs += alive * (min(t.config.epochs for t in trials) - start)
    zero_shot = len(trials) * _zero_shot(trials[0].config)
    halving = (epochs * epoch + zero_shot * evaluation) / 3600
    seeds = len(cell["seeds"]) * max(h or 0.0 for h in seed_hours)
    return SweepBudget(worst, halving, seeds)
