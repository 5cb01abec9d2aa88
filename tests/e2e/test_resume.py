"""Preemption and restarts: a job killed (SIGKILL) or stopped (SIGTERM) mid-run and started
again ends exactly where an uninterrupted run ends, with every epoch recorded once. Real torchrun,
2 gloo processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support.processes import kill_tree
from support.training import (
    EPOCHS,
    GRID,
    PAIR,
    checkpointed_epoch,
    finish,
    new_run,
    outcome,
    start,
    wait_for_checkpoint,
)

from kbench import records
from kbench.jobs.checkpoint import POINTER
from kbench.runs import Run, create_run
from kbench.spec import parse_grid
from kbench.storage import open_store, read_json


def predictions(store, run_id: str) -> dict[str, list[int]]:
    stored = store.read(records.pair_key(run_id, PAIR, records.PREDICTIONS))
    decoded = records.decode_predictions(stored)
    return {name: p.predicted.tolist() for name, p in decoded.items()}


def comparable(record: dict) -> dict:
    """The numbers that must match; timings and timestamps differ between runs."""
    return {
        k: v for k, v in record.items() if "second" not in k and "per_s" not in k and k != "time"
    }


# workers: 2 augments in DataLoader worker processes, seeded by epoch and rank, not from the
# checkpointed RNG of the training process.
@pytest.mark.parametrize("workers", [0, 2])
def test_kill_and_sigterm_then_resume_match_an_uninterrupted_run(tmp_path, workers, scratch):
    store = open_store(str(tmp_path / "store"))
    new_run(store, "straight", workers)
    finish(start(store, "straight"))
    expected_epochs, expected_result = outcome(store, "straight")

    new_run(store, "interrupted", workers)
    # 1. SIGKILL (no chance to clean up) right after the second checkpoint.
    process = start(store, "interrupted")
    wait_for_checkpoint(store, "interrupted", 2, process)
    kill_tree(process.pid, signal.SIGKILL)  # as a node dies: torchrun and every worker at once
    process.communicate()
    killed_after = checkpointed_epoch(store, "interrupted")  # another may have landed meanwhile
    assert 2 <= killed_after < EPOCHS  # it really was interrupted mid-run

    # 2. SIGTERM, as Kubernetes preempts: the job stops by itself, quickly, with code 143.
    process = start(store, "interrupted")
    stopped_after = wait_for_checkpoint(store, "interrupted", killed_after + 1, process)
    os.killpg(process.pid, signal.SIGTERM)
    output = process.communicate(timeout=60)[0].decode()
    assert process.returncode != 0
    assert "SIGTERM: stopped; a restart resumes from the last checkpoint" in output
    assert stopped_after < EPOCHS, "finished before SIGTERM: the test proved nothing"
    metrics = read_json(store, records.pair_key("interrupted", PAIR, records.METRICS))
    assert metrics["epochs"]  # still a whole, readable record
    pointer = read_json(store, records.pair_key("interrupted", PAIR, POINTER))
    checkpoints = store.list(records.pair_key("interrupted", PAIR, "checkpoints"))
    assert pointer["key"] in checkpoints  # the pointer names a complete checkpoint

    # 3. The last start finishes the run.
    output = finish(start(store, "interrupted"))
    assert "resumed after epoch" in output
    epochs, result = outcome(store, "interrupted")
    assert [r["epoch"] for r in epochs] == list(range(EPOCHS + 1))  # each exactly once
    assert [comparable(r) for r in epochs] == [comparable(r) for r in expected_epochs]
    assert comparable(result) == comparable(expected_result)
    # Every evaluation's predictions, the ones before the kills read back on resume.
    assert predictions(store, "interrupted") == predictions(store, "straight")
    # only the newest checkpoint is kept
    assert store.list(records.pair_key("interrupted", PAIR, "checkpoints")) == [
        records.pair_key("interrupted", PAIR, f"checkpoints/epoch-{EPOCHS:04d}.pt"),
        records.pair_key("interrupted", PAIR, POINTER),
    ]
    # What the resumes left in the temporary folder cannot shadow the package for a python
    # started there.
    found = subprocess.run(
        [sys.executable, "-c", "import kbench, kbench.jobs.train; print(kbench.__file__)"],
        cwd=scratch,
        capture_output=True,
        text=True,
    )
    assert found.returncode == 0, found.stderr
    package = Path(found.stdout.strip())
    assert package.name == "__init__.py" and not package.is_relative_to(scratch), found.stdout


def test_sharded_eval_counts_every_sample_once(tmp_path):
    """37 eval samples over 2 processes (19 + 18): the same numbers as one process."""
    store = open_store(str(tmp_path / "store"))
    grid = GRID.replace("eval_limit: 64", "eval_limit: 37").replace(
        f"epochs: {EPOCHS}", "epochs: 1"
    )
    zero_shot, kept = {}, {}
    for nproc in (1, 2):
        run_id = f"nproc-{nproc}"
        parsed = parse_grid(grid, "g.yaml", default_name="g")
        create_run(store, Run.new(run_id, parsed, "local"), parsed.pairs)
        finish(start(store, run_id, nproc=nproc))
        zero_shot[nproc] = outcome(store, run_id)[0][0]
        kept[nproc] = predictions(store, run_id)
    assert zero_shot[1]["samples"] == zero_shot[2]["samples"] == 37
    # Each process's share of the predictions interleaved back into the split's order (epoch
    # 0: the same weights in both; training on 1 or 2 processes draws other augmentations).
    assert kept[1]["epoch_0"] == kept[2]["epoch_0"] and len(kept[1]["epoch_0"]) == 37
    for metric in ("top1", "top5", "mean_per_class", "macro_f1"):
        assert zero_shot[1][metric] == zero_shot[2][metric], metric
    assert zero_shot[1]["loss"] == pytest.approx(zero_shot[2]["loss"], rel=1e-6)
    assert json.dumps(zero_shot[1]["world_size"]) == "1" and zero_shot[2]["world_size"] == 2
