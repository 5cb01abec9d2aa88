"""A store that stops answering mid-run: a real SeaweedFS stopped and started again on the same
ports and data while a real training job (torchrun) writes its records to it."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from support.s3server import seaweedfs
from support.training import PAIR, finish, outcome, start, wait_for_checkpoint

from kbench.runs import Run, create_run
from kbench.spec import parse_grid
from kbench.storage import open_store

GRID = (
    "datasets: [synthetic]\nmodels: {clip-tiny: {epochs: 4, batch_size: 32}}\n"
    "defaults: {train_limit: 256, eval_limit: 64}"
)


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A SeaweedFS of this test's own (it is stopped), in the environment the job inherits."""
    data = tmp_path / "seaweedfs"
    data.mkdir()
    with seaweedfs(data) as s3:
        for name, value in s3.env.items():
            monkeypatch.setenv(name, value)
        yield s3


def new_run(server, run_id: str):
    store = open_store(server.uri("outage"))
    grid = parse_grid(GRID, "g.yaml", "g")
    create_run(store, Run.new(run_id, grid, "local"), grid.pairs)
    return store


def test_a_job_waits_out_a_20_s_outage_and_records_every_epoch_once(server, monkeypatch):
    monkeypatch.setenv("KBENCH_STORE_RETRY_S", "120")
    store = new_run(server, "blip")
    process = start(store, "blip", nproc=1)
    wait_for_checkpoint(store, "blip", 1, process)
    server.stop()
    time.sleep(20)
    assert process.poll() is None, "the job gave up during the outage"
    server.start()
    output = finish(process)
    assert "retrying for up to 120 s" in output and "answers again after" in output
    epochs, result = outcome(store, "blip")
    assert [e["epoch"] for e in epochs] == [0, 1, 2, 3, 4]  # each exactly once
    assert result["pair"] == PAIR


def test_an_outage_longer_than_the_window_fails_once_and_resumes(server, monkeypatch):
    monkeypatch.setenv("KBENCH_STORE_RETRY_S", "5")
    store = new_run(server, "long")
    process = start(store, "long", nproc=1)
    wait_for_checkpoint(store, "long", 1, process)
    server.stop()
    output = process.communicate(timeout=120)[0].decode()
    assert process.returncode != 0
    assert "gave up after" in output and "cannot reach the S3 endpoint" in output
    server.start()
    output = finish(start(store, "long", nproc=1))
    assert "resumed after epoch" in output
    epochs, _ = outcome(store, "long")
    assert [e["epoch"] for e in epochs] == [0, 1, 2, 3, 4]


def test_a_local_submit_waits_out_an_outage_with_its_pairs(server, monkeypatch, tmp_path):
    """The local backend watches its pairs through the store: a blip must not end the submit
    while the jobs it watches ride it out."""
    monkeypatch.setenv("KBENCH_STORE_RETRY_S", "120")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "g.yaml").write_text(GRID)
    uri = server.uri("outage-submit")
    submit = subprocess.Popen(
        [sys.executable, "-m", "kbench.cli.main", "submit", "--grid", "g.yaml", "--store", uri]
        + ["--run-id", "watched"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    store = open_store(uri)
    wait_for_checkpoint(store, "watched", 1, submit)
    server.stop()
    time.sleep(15)
    assert submit.poll() is None, "the submit gave up during the outage"
    server.start()
    output = submit.communicate(timeout=600)[0].decode()
    assert submit.returncode == 0, output[-3000:]
    assert "1 of 1 pairs succeeded" in output and "answers again after" in output
    epochs, _ = outcome(store, "watched")
    assert [e["epoch"] for e in epochs] == [0, 1, 2, 3, 4]
