"""Successive halving of a run's sweeps, decided from the records alone, and the next step of
the driver that carries it out. Torch-free: `kbench submit` (local), `kbench sweep` and
`kbench status` ask it.

A cell's trials train to the first rung's epoch (their schedules are the full run's: they are
stopped, not shortened) and stop there with their checkpoints kept. Once each has its records
at the rung (or has failed), the decision is made and written once: trials ranked by their
best validation headline up to the rung, ties to the earlier trial; the best ceil(n / eta) go
on from their checkpoints to the next rung, the rest end `pruned`. After the ladder's last rung
the ones left train to their end and the best of them is chosen; a single one left is chosen
at once. The chosen setting is then trained with each of the cell's seeds as ordinary pairs
(`<dataset>_<model>_seed<s>`), which score the test split; trials only ever score validation.

Every step reads what is there and adds what is missing: deterministic decisions created once
(`store.create`), Jobs named by trial and rung, so running it twice, or again after a crash,
duplicates nothing.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from kbench import records
from kbench.errors import StoreError
from kbench.pairs import Outcome, PairRecords, PairState, finite
from kbench.records import RankedTrial, RungDecision, utc_now
from kbench.registry import dataset_info
from kbench.runs import Run, add_pairs, read_pair
from kbench.spec import Pair, pair_name
from kbench.storage import Store, create_json, read_json
from kbench.sweep_grid import SweepCell

METRIC = "validation headline"


@dataclass
class Step:
    """What a driver does next: train these trials to their rung (Pair.until), train these
    seeds of chosen settings; `waiting`: trials still on their way to a rung."""

    run: Run  # as it stands after the step (seed pairs added)
    trials: list[Pair] = field(default_factory=list)
    seeds: list[Pair] = field(default_factory=list)
    decided: list[RungDecision] = field(default_factory=list)  # by this step

    @property
    def work(self) -> list[Pair]:
        return self.trials + self.seeds


def advance(store: Store, run: Run, states: dict[str, Outcome], write: bool = True) -> Step:
    """The run's sweeps one step on: decisions whose rung every trial has reached are made
    (and, with `write`, recorded, with the chosen seeds added to the run); returns what to
    train next. `states`: the backend's word on each pair's latest job."""
    step = Step(run)
    for cell in run.sweeps or []:
        _advance_cell(store, step, cell, states, write)
    return step


def _advance_cell(
    store: Store, step: Step, cell: SweepCell, states: dict[str, Outcome], write: bool
) -> None:
    run_id = step.run.run_id
    found = {t["pair"]: read_pair(store, run_id, t["pair"]) for t in cell["trials"]}
    alive = list(found)
    rungs = [*cell["rungs"], None]  # None: the end of each trial's training
    for k, epoch in enumerate(rungs, start=1):
        if len(alive) <= 1:
            break
        decision = read_decision(store, run_id, cell["cell"], k)
        if decision is None:
            target = {t: epoch or found[t].config.epochs for t in alive}
            behind = [t for t in alive if not _reached(found[t], target[t])]
            on_the_way = [t for t in behind if not _failed(states.get(t))]
            if on_the_way:
                step.trials += [
                    dataclasses.replace(_pair(found[t]), until=target[t], rung=k)
                    for t in on_the_way
                ]
                return
            keep = 1 if epoch is None else math.ceil(len(alive) / cell["eta"])
            decision = decide(cell["cell"], k, epoch, found, alive, target, keep, states)
            if write and not create_json(store, _key(run_id, cell["cell"], k), decision):
                decision = read_decision(store, run_id, cell["cell"], k) or decision  # theirs
            step.decided.append(decision)
        alive = decision["continued"]
    if len(alive) != 1:
        return  # every trial failed: nothing to choose
    chosen = found[alive[0]].config
    seeds = [
        Pair(pair_name(chosen.dataset, chosen.model, s), dataclasses.replace(chosen, seed=s))
        for s in cell["seeds"]
    ]
    if write:
        step.run = add_pairs(store, step.run, seeds)
    for pair in seeds:
        done = read_json(store, records.pair_key(run_id, pair.name, records.RESULT), None)
        if done is None and not _failed(states.get(pair.name)):
            step.seeds.append(pair)


def decide(
    cell: str,
    rung: int,
    epoch: int | None,
    found: dict[str, PairRecords],
    alive: list[str],
    target: dict[str, int],
    keep: int,
    states: dict[str, Outcome],
) -> RungDecision:
    """Rank the trials still in by their best validation headline up to the rung (ties: the
    earlier trial first; a trial that failed, or never had a finite value, last) and keep the
    best `keep` of those with a value."""
    ranked: list[RankedTrial] = []
    for t in alive:
        value, at = best_up_to(found[t], target[t])
        ranked.append({"pair": t, "value": value, "epoch": at})
    order = {t: i for i, t in enumerate(found)}
    ranked.sort(key=lambda r: (r["value"] is None, -(r["value"] or 0.0), order[r["pair"]]))
    valued = [r for r in ranked if r["value"] is not None]
    continued = [r["pair"] for r in valued[:keep]]
    lowest = valued[: len(continued)][-1]["value"] if continued else None
    pruned = {}
    for r in ranked:
        if r["pair"] in continued:
            continue
        if r["value"] is None:
            state = states.get(r["pair"])
            why = state.text() if state else "no record at the rung"
            pruned[r["pair"]] = f"never reached epoch {target[r['pair']]}: {why}"
        else:
            pruned[r["pair"]] = (
                f"{r['value']:.4f} at epoch {r['epoch']}, below the {len(continued)} kept "
                f"(the lowest of them {lowest:.4f})"
            )
    metric = dataset_info(found[alive[0]].config.dataset).headline
    return {
        "cell": cell,
        "rung": rung,
        "epoch": epoch,
        "metric": f"val {metric}",
        "keep": keep,
        "ranked": ranked,
        "continued": continued,
        "pruned": pruned,
        "winner": continued[0] if len(continued) == 1 else None,
        "decided": utc_now(),
    }


def decision_line(decision: RungDecision) -> str:
    """A decision in one line, as a driver prints it."""
    at = f"epoch {decision['epoch']}" if decision["epoch"] else "the end of training"
    kept = ", ".join(decision["continued"]) or "none"
    line = f"sweep {decision['cell']}: rung {decision['rung']} ({at}): kept {kept}"
    if decision["winner"]:
        line += " (chosen)"
    return line + f"; pruned {len(decision['pruned'])}"


def best_up_to(found: PairRecords, epoch: int) -> tuple[float | None, int | None]:
    """A trial's best validation headline over its trained epochs up to `epoch`, and that
    epoch (the first of equals); a trial's records are of its validation split alone."""
    scored = [e for e in found.trained if e["epoch"] <= epoch and finite(e["headline"])]
    if not scored:
        return None, None
    best = max(scored, key=lambda e: e["headline"])
    return best["headline"], best["epoch"]


def decisions(store: Store, run: Run) -> dict[str, list[RungDecision]]:
    """Every cell's decisions so far, in rung order."""
    found: dict[str, list[RungDecision]] = {}
    for cell in run.sweeps or []:
        made = found.setdefault(cell["cell"], [])
        for k in range(1, len(cell["rungs"]) + 2):
            decision = read_decision(store, run.run_id, cell["cell"], k)
            if decision is None:
                break
            made.append(decision)
    return found


def with_trials(store: Store, run: Run, states: dict[str, Outcome]) -> dict[str, Outcome]:
    """The backend's states with each sweep trial's as the sweep sees it (trial_outcomes)."""
    return {**states, **trial_outcomes(store, run, states)} if run.sweeps else states


def trial_outcomes(store: Store, run: Run, states: dict[str, Outcome]) -> dict[str, Outcome]:
    """What `status` says of each trial: pruned (and why), chosen, or where it is on the
    ladder; a trial's job that ended after its rung did not succeed as a pair does."""
    made = decisions(store, run)
    outcomes = {}
    for cell in run.sweeps or []:
        ladder = made.get(cell["cell"], [])
        for trial in cell["trials"]:
            t = trial["pair"]
            pruned = next((d for d in ladder if t in d["pruned"]), None)
            if pruned is not None:
                why = pruned["pruned"][t]
                outcomes[t] = Outcome(PairState.PRUNED, f"rung {pruned['rung']}: {why}")
            elif ladder and ladder[-1]["winner"] == t:
                outcomes[t] = Outcome(PairState.SUCCEEDED, "chosen: its setting trains the seeds")
            else:
                state, rung = states.get(t), len(ladder) + 1
                if state is None:
                    state = Outcome(PairState.PENDING, f"to train to rung {rung}")
                elif state.state is PairState.SUCCEEDED:  # its job ended at the rung
                    state = Outcome(PairState.PENDING, f"at rung {rung}: waiting for the decision")
                outcomes[t] = state
    return outcomes


def read_decision(store: Store, run_id: str, cell: str, rung: int) -> RungDecision | None:
    key = _key(run_id, cell, rung)
    data = read_json(store, key, default=None)
    if data is None:
        return None
    decision = records.parse(RungDecision, data, key)
    if decision["cell"] != cell or decision["rung"] != rung:
        raise StoreError(f"{key} is the decision of another rung")
    return decision


def _key(run_id: str, cell: str, rung: int) -> str:
    return records.rung_key(run_id, cell, rung)


def _reached(found: PairRecords, epoch: int) -> bool:
    return any(e["epoch"] >= epoch for e in found.epochs)


def _failed(state: Outcome | None) -> bool:
    """A job that ended without its records: a Job that is gone (TTL) is sent again instead."""
    return state is not None and state.state.unsuccessful and state.state is not PairState.GONE


def _pair(found: PairRecords) -> Pair:
    return Pair(found.pair, found.config)
