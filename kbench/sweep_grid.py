"""A grid's sweeps: `sweep:` lists of values for numeric training keys, one trial per
combination, and the ladder of rungs successive halving prunes them at. Pure: what the grid
says becomes each (dataset, model)'s *cell*, recorded in run.json; kbench.halving decides.

    models:
      clip-vit-b32: {sweep: {lr: [1.0e-5, 3.0e-5, 1.0e-4]}}
    halving: {eta: 3, rungs: [1, 3]}   # optional: the default ladder below; false: none
    seeds: 3                          # the chosen setting trained this many times (default 3)

A trial is named `<dataset>_<model>_trial<k>` (k from 1, in the order of the combinations);
the chosen setting's runs `<dataset>_<model>_seed<s>`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import typing
from collections.abc import Callable
from typing import Any

from typing_extensions import TypedDict

from kbench.errors import ConfigError

# The keys a sweep may vary: the numeric ones of a training config (TrainConfig's fields typed
# int or float, less the ones that are not the recipe's: limits, workers, seed).
NOT_SWEPT = {"train_limit", "eval_limit", "workers", "seed"}
DEFAULT_ETA = 3
DEFAULT_SWEEP_SEEDS = 3


class Trial(TypedDict):
    pair: str
    values: dict[str, float]  # the swept keys' values of this trial


class SweepCell(TypedDict):
    """One (dataset, model)'s sweep, as run.json records it."""

    cell: str  # <dataset>_<model>
    trials: list[Trial]
    rungs: list[int]  # the epochs trials are compared at, ascending; then the end of training
    eta: int  # after each rung the best ceil(n / eta) trials go on
    seeds: list[int]  # the chosen setting's seeds


def sweepable_keys(config_class: type) -> list[str]:
    hints = typing.get_type_hints(config_class)
    numeric = {int, float, int | None, float | None}
    return [
        f.name
        for f in dataclasses.fields(config_class)
        if hints[f.name] in numeric and f.name not in NOT_SWEPT
    ]


def take_sweep(
    layers: list[tuple[Any, str]], config_class: type
) -> tuple[list[tuple[Any, str]], dict[str, list]]:
    """The layers without their `sweep` keys, and the sweep they make together (a later
    layer's list for a key replaces an earlier one's)."""
    allowed = sweepable_keys(config_class)
    sweep: dict[str, list] = {}
    plain = []
    for layer, where in layers:
        if not isinstance(layer, dict) or "sweep" not in layer:
            plain.append((layer, where))
            continue
        given = layer["sweep"]
        if not isinstance(given, dict) or not given:
            raise ConfigError(f"{where}: sweep: expected a mapping of key to a list of values")
        for key, values in given.items():
            if key not in allowed:
                raise ConfigError(
                    f"{where}: sweep.{key}: not a key a sweep varies; allowed: {', '.join(allowed)}"
                )
            number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
            if not isinstance(values, list) or not values or not all(map(number, values)):
                raise ConfigError(f"{where}: sweep.{key}: expected a non-empty list of numbers")
            if len(set(values)) != len(values):
                raise ConfigError(f"{where}: sweep.{key}: a value appears twice")
            sweep[key] = values
        plain.append(({k: v for k, v in layer.items() if k != "sweep"}, where))
    return plain, sweep


def combinations(sweep: dict[str, list]) -> list[dict[str, float]]:
    """Every combination of the sweep's values, the first key's changing slowest."""
    keys = list(sweep)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*sweep.values())]


def halving_of(value: Any, source: str) -> tuple[int, list[int] | None] | None:
    """The grid's `halving`: (eta, rungs or None for the default ladder); None: no pruning,
    every trial trains to its end."""
    if value is None or value is True:
        return DEFAULT_ETA, None
    if value is False:
        return None
    if not isinstance(value, dict) or set(value) - {"eta", "rungs"}:
        raise ConfigError(f"{source}: halving: expected {{eta: 3, rungs: [1, 3]}}, or false")
    eta = value.get("eta", DEFAULT_ETA)
    if not isinstance(eta, int) or isinstance(eta, bool) or eta < 2:
        raise ConfigError(f"{source}: halving.eta: must be an integer of at least 2, got {eta!r}")
    rungs = value.get("rungs")
    whole = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1  # noqa: E731
    if rungs is not None and not (
        isinstance(rungs, list) and rungs and all(map(whole, rungs)) and rungs == sorted(set(rungs))
    ):
        raise ConfigError(f"{source}: halving.rungs: expected ascending epochs, e.g. [1, 3]")
    return eta, rungs


def ladder(epochs: int, trials: int, eta: int) -> list[int]:
    """The default rungs: as many as it takes to keep one trial of `trials` (ceil(n / eta)
    going on at each), the last at epochs // eta, each earlier one eta times sooner; epochs
    that round to 0 or repeat are dropped."""
    count, n = 0, trials
    while n > 1:
        n, count = math.ceil(n / eta), count + 1
    rungs = [epochs // eta ** (count - k) for k in range(count)]
    return sorted({r for r in rungs if 1 <= r < epochs})


def check_rungs(rungs: list[int], epochs: int, where: str) -> None:
    if rungs and rungs[-1] >= epochs:
        raise ConfigError(
            f"{where}: halving.rungs: {rungs[-1]} is not before the end of training "
            f"(epochs {epochs}): every rung must come before the last epoch"
        )


def trial_name(cell: str, k: int) -> str:
    return f"{cell}_trial{k}"


def plan_trials(
    cell: str,
    sweep: dict[str, list],
    build: Callable[[str, tuple[Any, str]], Any],
    halving: tuple[int, list[int] | None] | None,
    seeds: int | list[int],
    source: str,
) -> tuple[list[tuple[str, Any, int]], SweepCell]:
    """A cell's trials as (name, config, the epoch its first rung ends at) and its record;
    `build(name, layer)` resolves a trial's config with its values as the last layer (and
    checks them as the key's own values are checked)."""
    where = f"{source}: pair {cell}"
    values = combinations(sweep)
    if len(values) < 2:
        raise ConfigError(f"{where}: sweep: one combination only: set the key instead")
    configs = [
        build(trial_name(cell, k), (v, f"{source}: sweep of {cell} ({_text(v)})"))
        for k, v in enumerate(values, start=1)
    ]
    if any(c.select_on != "val" for c in configs):
        raise ConfigError(f"{where}: sweep: a sweep chooses on validation: select_on must be val")
    epochs = min(c.epochs for c in configs)
    eta, rungs = halving or (len(configs), [])
    if rungs is None:
        rungs = ladder(epochs, len(configs), eta)
    check_rungs(rungs, epochs, where)
    first = configs[0].seed
    record: SweepCell = {
        "cell": cell,
        "trials": [{"pair": trial_name(cell, k), "values": v} for k, v in enumerate(values, 1)],
        "rungs": rungs,
        "eta": eta,
        "seeds": seeds if isinstance(seeds, list) else list(range(first, first + seeds)),
    }
    trials = [
        (trial_name(cell, k), c, rungs[0] if rungs else c.epochs)
        for k, c in enumerate(configs, start=1)
    ]
    return trials, record


def _text(values: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in values.items())
