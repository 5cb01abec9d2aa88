"""`kbench resume`: a local run whose `kbench submit` died with every process it started (a
SIGKILL of the whole tree, as a crash or a reboot leaves it) goes on with one command. The
finished pair is left alone, the interrupted one continues from its checkpoint and appends to
its log; while the run's processes live, resume refuses."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from support.processes import kill_tree

from kbench import records
from kbench.jobs.checkpoint import POINTER
from kbench.storage import open_store, read_json

EPOCHS = 5

FIRST, SECOND = "synthetic_resnet-tiny", "synthetic_clip-tiny"  # trained in this order

GRID = f"""datasets: [synthetic]
models: [resnet-tiny, clip-tiny]
defaults: {{epochs: {EPOCHS}, batch_size: 32, train_limit: 384, eval_limit: 64, workers: 0}}
"""


def checkpointed_epoch(store, pair: str) -> int:
    pointer = read_json(store, records.pair_key("r", pair, POINTER), default=None)
    return pointer["epoch"] if pointer else 0


def test_resume_after_the_whole_run_was_killed(tmp_path, monkeypatch, kbench):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "g.yaml").write_text(GRID)
    uri = str(tmp_path / "store")
    store = open_store(uri)
    submit = subprocess.Popen(
        [sys.executable, "-m", "kbench.cli.main", "submit", "--grid", "g.yaml"]
        + ["--store", uri, "--run-id", "r", "--nproc-per-node", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 600
    while checkpointed_epoch(store, SECOND) < 2:  # the first done, the second mid-run
        assert submit.poll() is None, submit.communicate()[0].decode()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)

    refused = kbench("resume", "--store", uri, "--run", "r")
    assert refused.exit_code == 1
    assert "run r is still being trained by process" in refused.output

    kill_tree(submit.pid, signal.SIGKILL)
    submit.communicate()
    killed_after = checkpointed_epoch(store, SECOND)
    assert killed_after < EPOCHS  # really interrupted
    first = {
        name: store.read(records.pair_key("r", FIRST, name))
        for name in ("metrics.json", "result.json", "train.log", "local.json")
    }

    status = kbench("status", "--store", uri, "--run", "r", "-o", "json")
    states = {p["pair"]: p for p in json.loads(status.stdout)["pairs"]}
    assert states[FIRST]["state"] == "succeeded"
    assert states[SECOND]["state"] == "failed" and "kbench resume" in states[SECOND]["detail"]

    resumed = kbench("resume", "--store", uri, "--run", "r")
    assert resumed.exit_code == 0, resumed.output
    assert "run r: 1 pair(s) finished, resuming 1" in resumed.output
    assert "1 of 1 pairs succeeded" in resumed.output

    # The finished pair: not one byte changed.
    for name, data in first.items():
        assert store.read(records.pair_key("r", FIRST, name)) == data, name
    # The resumed pair: from its checkpoint, every epoch recorded once, one log for both tries.
    epochs = read_json(store, records.pair_key("r", SECOND, records.METRICS))["epochs"]
    assert [e["epoch"] for e in epochs] == list(range(EPOCHS + 1))
    log = store.read(records.pair_key("r", SECOND, "train.log")).decode()
    assert "==== kbench: resumed at" in log
    before, after = log.split("==== kbench: resumed at")
    assert "epoch 1" in before  # the killed attempt's lines are still there
    assert f"resumed after epoch {killed_after}" in after
    again = kbench("resume", "--store", uri, "--run", "r")
    assert again.exit_code == 0 and "resuming 0" in again.output
