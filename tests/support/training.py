"""A tiny pair (CLIP-tiny on synthetic shapes, 6 epochs) trained by real processes, as the
local backend starts them: for the tests that stop, kill and restart a job."""

from __future__ import annotations

import math
import subprocess
import time

from kbench import records
from kbench.backends.local import LocalBackend
from kbench.jobs.checkpoint import POINTER
from kbench.runs import Run, create_run
from kbench.spec import parse_grid
from kbench.storage import read_json

PAIR = "synthetic_clip-tiny"
EPOCHS = 6
GRID = (
    f"datasets: [synthetic]\nmodels: {{clip-tiny: {{epochs: {EPOCHS}, batch_size: 32}}}}\n"
    "defaults: {train_limit: 384, eval_limit: 64, workers: 0}"
)


def start(store, run_id: str, nproc: int = 2) -> subprocess.Popen:
    """The pair's job as the local backend starts it (kbench's torchrun launcher)."""
    command = LocalBackend(nproc_per_node=nproc).command(store, run_id, PAIR)
    return subprocess.Popen(
        command, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def finish(process: subprocess.Popen) -> str:
    output = process.communicate(timeout=600)[0].decode()
    assert process.returncode == 0, output[-3000:]
    return output


def new_run(store, run_id: str, workers: int = 0) -> None:
    grid = parse_grid(GRID.replace("workers: 0", f"workers: {workers}"), "g.yaml", "g")
    create_run(store, Run.new(run_id, grid, "local"), grid.pairs)


def checkpointed_epoch(store, run_id: str) -> int:
    pointer = read_json(store, records.pair_key(run_id, PAIR, POINTER), default=None)
    return pointer["epoch"] if pointer else 0


def wait_for_checkpoint(store, run_id: str, epoch: int, process: subprocess.Popen) -> int:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        done = checkpointed_epoch(store, run_id)
        if done >= epoch:
            return done
        assert process.poll() is None, process.communicate()[0].decode()[-3000:]
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint of epoch {epoch} within 300 s")


def outcome(store, run_id: str) -> tuple[list[dict], dict]:
    epochs = read_json(store, records.pair_key(run_id, PAIR, records.METRICS))["epochs"]
    return epochs, read_json(store, records.pair_key(run_id, PAIR, records.RESULT))


def warmup_then_cosine(lr: float, warmup: float, epochs: int, steps: int) -> list[float]:
    """The recipe's learning rate at the end of each epoch, as written down: linear warmup over
    the first `warmup` of ALL the run's steps, then a cosine to zero at its very last step."""
    total = epochs * steps
    warm = round(warmup * total)
    return [
        lr * 0.5 * (1 + math.cos(math.pi * (e * steps - warm) / (total - warm)))
        for e in range(1, epochs + 1)
    ]
