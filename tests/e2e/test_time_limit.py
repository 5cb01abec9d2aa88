"""A pair's time limit across attempts (`time_limit_seconds`, told to the pods as a deadline):
real trainer processes stop when it comes, whatever they are doing, with the exit code that
fails a Job without a retry; one started after it never trains."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import time

from support.training import GRID, PAIR

from kbench import records
from kbench.backends.local import LocalBackend
from kbench.command import DEADLINE_ENV
from kbench.errors import JOB_ERROR_EXIT_CODE
from kbench.runs import Run, create_run
from kbench.spec import parse_grid
from kbench.storage import open_store


def new_run(store, run_id: str) -> None:
    """The tiny pair, with more epochs than it can train before its limit."""
    text = GRID.replace("epochs: 6,", "epochs: 500,")
    assert "epochs: 500," in text
    grid = parse_grid(text, "g.yaml", "g")
    create_run(store, Run.new(run_id, grid, "local"), grid.pairs)


def run_until(store, run_id: str, seconds: float) -> tuple[subprocess.CompletedProcess, float]:
    deadline = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds)
    command = LocalBackend(nproc_per_node=2).command(store, run_id, PAIR)
    env = {**os.environ, DEADLINE_ENV: deadline.isoformat(timespec="seconds")}
    began = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    return done, time.monotonic() - began


def test_a_pair_stops_when_its_time_limit_runs_out(tmp_path):
    store = open_store(str(tmp_path / "store"))
    new_run(store, "limited")
    done, took = run_until(store, "limited", 25)
    output = done.stdout + done.stderr
    assert done.returncode == JOB_ERROR_EXIT_CODE, output[-3000:]
    assert "the pair's time limit ran out at" in output and "not retried" in output
    assert "Traceback" not in output
    assert 20 <= took < 120, took  # stopped at the deadline, not at once and not at the end
    # Stopped part-way: it trained (a progress record exists) but never finished.
    kept = store.list(records.pair_key("limited", PAIR, ""))
    assert any(k.endswith(records.SUMMARY) for k in kept)
    assert not any(k.endswith(records.RESULT) for k in kept)


def test_a_pair_started_after_its_time_limit_does_not_train(tmp_path):
    store = open_store(str(tmp_path / "store"))
    new_run(store, "late")
    done, _ = run_until(store, "late", -1)
    assert done.returncode == JOB_ERROR_EXIT_CODE, done.stderr[-3000:]
    assert "kbench.jobs.train: error: the pair's time limit ran out at" in done.stderr
    assert not any(
        k.endswith(records.SUMMARY) for k in store.list(records.pair_key("late", PAIR, ""))
    )
