"""The sweep table of a report: each swept (dataset, model)'s trials, their values, what each
scored on validation at every rung, and which went on, were pruned or were chosen
(kbench.halving decides; this reads its decisions)."""

from __future__ import annotations

from typing import Any

from kbench.halving import decisions
from kbench.runs import Run
from kbench.storage import Store


def sweep_tables(store: Store, run: Run) -> list[dict[str, Any]]:
    made = decisions(store, run)
    tables = []
    for cell in run.sweeps or []:
        ladder = made.get(cell["cell"], [])
        rungs = [f"epoch {r}" for r in cell["rungs"]] + ["end"]
        winner = ladder[-1]["winner"] if ladder else None
        rows = []
        for trial in cell["trials"]:
            t = trial["pair"]
            values = []
            for decision in ladder:
                ranked = {r["pair"]: r for r in decision["ranked"]}
                values.append(ranked[t]["value"] if t in ranked else None)
            values += [None] * (len(rungs) - len(values))
            pruned = next((d for d in ladder if t in d["pruned"]), None)
            if pruned is not None:
                fate = f"pruned at rung {pruned['rung']}: {pruned['pruned'][t]}"
            elif t == winner:
                fate = "chosen"
            else:
                fate = "training" if not winner else "went on"
            rows.append({"pair": t, "values": trial["values"], "scores": values, "fate": fate})
        chosen = next((r["values"] for r in rows if r["pair"] == winner), None)
        tables.append(
            {
                "cell": cell["cell"],
                "metric": ladder[0]["metric"] if ladder else "val headline",
                "rungs": rungs,
                "eta": cell["eta"],
                "seeds": cell["seeds"],
                "swept": list(cell["trials"][0]["values"]),
                "trials": rows,
                "chosen": chosen,
            }
        )
    return tables


def trial_names(run: Run) -> set[str]:
    return {t["pair"] for cell in run.sweeps or [] for t in cell["trials"]}
