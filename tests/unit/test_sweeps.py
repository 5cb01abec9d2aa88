"""Sweeps: how a grid's `sweep` becomes trials, the default ladder of rungs, and successive
halving's decisions, made from the records alone (kbench.halving)."""

from __future__ import annotations

import math

import pytest
from support.builders import epoch_record

from kbench import records
from kbench.halving import advance
from kbench.k8s.render import job_name
from kbench.pairs import Outcome, PairState
from kbench.runs import Run, create_run, load_run, new_run_id
from kbench.spec import is_pair_name, parse_grid
from kbench.storage import open_store, write_json
from kbench.sweep_grid import ladder

from .test_k8s_render import webhook_refusals

GRID = """
datasets: [synthetic]
models:
  clip-tiny: {epochs: 9, sweep: {lr: [1.0e-3, 2.0e-3], weight_decay: [0.0, 0.1]}}
  resnet-tiny: {}
halving: {eta: 3}
"""


def test_a_sweep_is_one_trial_per_combination_the_rest_of_the_grid_as_it_was():
    grid = parse_grid(GRID, "g.yaml", "g")
    names = [p.name for p in grid.pairs]
    assert names == [f"synthetic_clip-tiny_trial{k}" for k in (1, 2, 3, 4)] + [
        "synthetic_resnet-tiny"
    ]
    values = [(p.config.lr, p.config.weight_decay) for p in grid.pairs[:4]]
    assert values == [(1e-3, 0.0), (1e-3, 0.1), (2e-3, 0.0), (2e-3, 0.1)]
    (cell,) = grid.sweeps
    # 4 trials, eta 3: two halvings (4 -> 2 -> 1), at 9 // 9 and 9 // 3
    assert cell["rungs"] == [1, 3] and cell["seeds"] == [0, 1, 2]
    assert [(p.until, p.rung) for p in grid.pairs[:4]] == [(1, 1)] * 4
    assert grid.pairs[4].until is None  # not swept: trained to the end, as before


@pytest.mark.parametrize(
    ("epochs", "trials", "eta", "rungs"),
    [(10, 4, 3, [1, 3]), (20, 4, 3, [2, 6]), (6, 3, 3, [2]), (20, 9, 3, [2, 6]),
     (100, 27, 3, [3, 11, 33]), (1, 4, 3, []), (10, 2, 2, [5])],
)  # fmt: skip
def test_the_default_ladder_halves_down_to_one(epochs, trials, eta, rungs):
    assert ladder(epochs, trials, eta) == rungs
    assert len(rungs) <= math.ceil(math.log(trials, eta) - 1e-9)


def test_trial_and_rung_names_pass_the_controllers_rules():
    """12 trials of library models under the longest run id, at every rung and node count."""
    text = (
        "datasets: [fgvc-aircraft]\nmodels: ['open_clip:ViT-B-16/laion2b_s34b_b88k']\n"
        "defaults: {sweep: {lr: [1, 2, 3, 4, 5, 6], weight_decay: [0.0, 0.1]}}\n"
    )
    grid = parse_grid(text, "g.yaml", "g")
    assert len(grid.pairs) == 12 and all(is_pair_name(p.name) for p in grid.pairs)
    for run_id in (new_run_id("x" * 60), "r" * 40):
        for pair in grid.pairs:
            for rung in (1, 2, 10):
                for nodes in (1, 2, 999):
                    assert webhook_refusals(job_name(run_id, pair.name, nodes, rung), nodes) == []
        names = {job_name(run_id, p.name, 1, rung) for p in grid.pairs for rung in (1, 2)}
        assert len(names) == 24  # one a trial a rung


def trial_records(store, run_id: str, pair: str, values: dict[int, float]) -> None:
    epochs = [epoch_record(e, v, val=None, split="holdout") for e, v in sorted(values.items())]
    write_json(store, records.pair_key(run_id, pair, records.METRICS), {"epochs": epochs})


@pytest.fixture
def sweep_run(tmp_path):
    text = (
        "datasets: [synthetic]\nmodels: {clip-tiny: {epochs: 4}}\n"
        "defaults: {sweep: {lr: [1.0e-3, 2.0e-3, 4.0e-3, 8.0e-3]}}\n"
        "halving: {eta: 2, rungs: [1, 2]}\nseeds: 2\n"
    )
    grid = parse_grid(text, "g.yaml", "g")
    store = open_store(str(tmp_path / "store"))
    create_run(store, Run.new("s", grid, "local"), grid.pairs)
    return store, [p.name for p in grid.pairs]


def test_ties_go_to_the_earlier_trial_and_a_failed_or_diverged_trial_ranks_last(sweep_run):
    store, (t1, t2, t3, t4) = sweep_run
    trial_records(store, "s", t1, {1: 0.5})
    trial_records(store, "s", t2, {1: 0.7})
    trial_records(store, "s", t3, {1: 0.7})  # as good as t2: t2 is the earlier
    trial_records(store, "s", t4, {1: float("nan")})  # diverged
    step = advance(store, load_run(store, "s"), {}, write=False)
    (decision,) = step.decided
    assert [r["pair"] for r in decision["ranked"]] == [t2, t3, t1, t4]
    assert decision["continued"] == [t2, t3] and set(decision["pruned"]) == {t1, t4}
    assert "never reached epoch 1" in decision["pruned"][t4]
    assert [(p.name, p.until, p.rung) for p in step.trials] == [(t2, 2, 2), (t3, 2, 2)]

    # A failed trial is pruned without waiting for it; one still training is waited for.
    trial_records(store, "s", t4, {})
    failed = {t4: Outcome(PairState.FAILED, "exit code 1")}
    (decision,) = advance(store, load_run(store, "s"), failed, write=False).decided
    assert decision["pruned"][t4] == "never reached epoch 1: failed: exit code 1"
    waiting = advance(store, load_run(store, "s"), {}, write=False)
    assert waiting.decided == [] and [p.name for p in waiting.trials] == [t4]


def test_decisions_are_reproducible_from_the_records_and_made_once(sweep_run):
    store, (t1, t2, t3, t4) = sweep_run
    for trial, value in zip((t1, t2, t3, t4), (0.4, 0.6, 0.5, 0.3), strict=True):
        trial_records(store, "s", trial, {1: value})
    trial_records(store, "s", t2, {1: 0.6, 2: 0.8})
    trial_records(store, "s", t3, {1: 0.5, 2: 0.85})
    dry = advance(store, load_run(store, "s"), {}, write=False).decided
    made = advance(store, load_run(store, "s"), {}).decided
    strip = lambda ds: [{k: v for k, v in d.items() if k != "decided"} for d in ds]  # noqa: E731
    assert strip(dry) == strip(made) and [d["rung"] for d in made] == [1, 2]
    assert made[-1]["winner"] == t3
    again = advance(store, load_run(store, "s"), {})
    assert again.decided == [] and again.trials == []
    run = load_run(store, "s")
    assert run.pairs[-2:] == ["synthetic_clip-tiny_seed0", "synthetic_clip-tiny_seed1"]
    assert [p.config.lr for p in again.seeds] == [4.0e-3, 4.0e-3]
    assert [p.config.seed for p in again.seeds] == [0, 1]
