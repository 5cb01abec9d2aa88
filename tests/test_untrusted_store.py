"""A store is often a bucket a whole team writes to: kbench reads run ids, pair names, keys and
process ids back out of it, so every one is checked before it becomes a path, a key or a signal.
Each crafted record here is refused with one line; nothing outside the store and the report
folder is read, written or signalled."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from kbench import records
from kbench.cli.main import cli
from kbench.errors import StoreError
from kbench.jobs.checkpoint import POINTER, load_latest
from kbench.runs import Run, create_run
from kbench.spec import load_grid
from kbench.storage import open_store, write_json

PAIR = "synthetic_clip-tiny"


def kbench(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A store with one real run, `good`; the working directory is the test's folder."""
    monkeypatch.chdir(tmp_path)
    store = open_store(str(tmp_path / "store"))
    grid = load_grid("smoke")
    create_run(store, Run.new("good", grid, "local"), grid.pairs)
    return store


def run_record(**changes) -> dict:
    grid = load_grid("smoke")
    return {**Run.new("good", grid, "local").to_dict(), **changes}


CRAFTED_RUNS = [
    ("a run id that climbs out", "x", {"run_id": "../../outside"}, "names another run"),
    ("an absolute run id", "x", {"run_id": "/tmp/outside"}, "names another run"),
    ("a run id that is not one", "bad--", {"run_id": "bad--"}, "bad run id"),
    ("another run's id", "x", {"run_id": "good"}, "names another run"),
    ("a pair that climbs out", "x", {"run_id": "x", "pairs": ["../../../etc"]}, "pairs:"),
    ("an absolute pair", "x", {"run_id": "x", "pairs": ["/etc/passwd"]}, "pairs:"),
    ("pairs that are not a list", "x", {"run_id": "x", "pairs": "cifar10_resnet50"}, "pairs:"),
]


@pytest.mark.parametrize(
    ("folder", "changes", "says"),
    [case[1:] for case in CRAFTED_RUNS],
    ids=[case[0] for case in CRAFTED_RUNS],
)
@pytest.mark.parametrize(
    "command", ["runs", "status", "collect", "logs " + PAIR, "cancel --all", "resume"]
)
def test_a_crafted_run_record_is_refused_by_every_command(
    store, tmp_path, folder, changes, says, command
):
    write_json(store, records.run_key(folder), run_record(**changes))
    selects = [] if command == "runs" else ["--run", folder]
    before = sorted(p for p in tmp_path.rglob("*"))
    result = kbench(*command.split(), "--store", str(tmp_path / "store"), *selects)
    assert result.exit_code == 1, result.output
    assert says in result.output and result.output.count("\n") == 1, result.output
    assert sorted(p for p in tmp_path.rglob("*")) == before  # no report, no log, nothing


def test_a_config_of_another_pair_is_refused(store, tmp_path):
    write_json(
        store,
        records.pair_key("good", PAIR, records.CONFIG),
        {"dataset": "cifar10", "model": "resnet50"},
    )
    result = kbench("collect", "--store", str(tmp_path / "store"), "--run", "good")
    assert result.exit_code == 1
    assert f"runs/good/{PAIR}/config.json is not the config of {PAIR}" in result.output
    assert not (tmp_path / "kbench-reports").exists()


@pytest.mark.parametrize(
    ("summary", "says"),
    [
        ({"config": {"dataset": "cifar10", "model": "resnet50"}, "epochs": []}, "not the config"),
        ({"config": {"dataset": "synthetic", "model": "clip-tiny"}}, "not a kbench pair summary"),
        ([], "not a kbench pair summary"),
        (
            {"config": {"dataset": "synthetic", "model": "clip-tiny"}, "epochs": [], "result": 1},
            "not a kbench pair summary",
        ),
    ],
)
def test_a_crafted_pair_summary_is_refused(store, tmp_path, summary, says):
    write_json(store, records.pair_key("good", PAIR, records.SUMMARY), summary)
    for command in ("status", "collect"):
        result = kbench(command, "--store", str(tmp_path / "store"), "--run", "good")
        assert result.exit_code == 1, result.output
        (line,) = result.output.splitlines()
        assert f"runs/good/{PAIR}/summary.json" in line and says in line
    assert not (tmp_path / "kbench-reports").exists()


def test_a_key_that_leads_out_of_a_local_store_is_refused(store, tmp_path):
    (tmp_path / "secret").write_text("not yours")
    for key in ("../secret", "runs/../../secret", str(tmp_path / "secret")):
        with pytest.raises(StoreError, match="leads outside the store"):
            store.read(key)
        with pytest.raises(StoreError, match="leads outside the store"):
            store.write(key, b"x")
    assert (tmp_path / "secret").read_text() == "not yours"


def test_a_checkpoint_pointer_to_elsewhere_is_refused(store, tmp_path):
    for key in (
        "runs/good/other_pair/checkpoints/epoch-0001.pt",
        f"runs/good/{PAIR}/checkpoints/../../../../secret",
        "datasets/cifar10/manifest.json",
    ):
        write_json(store, records.pair_key("good", PAIR, POINTER), {"epoch": 1, "key": key})
        with pytest.raises(StoreError, match="names no checkpoint of this pair"):
            load_latest(store, "good", PAIR, str(tmp_path / "cache"))
    assert not (tmp_path / "cache").exists()


@pytest.fixture
def stranger():
    """A process kbench did not start (the same user's, so a signal would reach it)."""
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True
    )
    yield process
    process.kill()
    process.wait()


def test_a_local_state_naming_another_process_and_file(store, tmp_path, stranger):
    (tmp_path / "secret.txt").write_text("do not print me")
    import socket

    write_json(
        store,
        records.pair_key("good", PAIR, records.LOCAL_STATE),
        {
            "state": "running",
            "pid": stranger.pid,
            "host": socket.gethostname(),
            "since_boot": 0.0,
            "command": ["python", "-m", "torch.distributed.run"],
            "log": str(tmp_path / "secret.txt"),
        },
    )
    uri = str(tmp_path / "store")
    status = kbench("status", "--store", uri, "--run", "good", "-o", "json")
    assert '"state": "failed"' in status.output  # not "running": the pid is not kbench's
    logs = kbench("logs", PAIR, "--store", uri, "--run", "good")
    assert "do not print me" not in logs.output
    assert logs.exit_code == 1 and "no log for" in logs.output
    cancel = kbench("cancel", PAIR, "--store", uri, "--run", "good")
    assert cancel.exit_code == 1
    assert f"names process {stranger.pid}, which is not the training process" in cancel.output
    assert stranger.poll() is None  # not signalled


def test_a_clock_step_does_not_make_kbench_s_process_a_stranger(stranger, monkeypatch):
    """The start time kbench records survives a step of the wall clock (psutil derives the
    boot time from it); a start one second off is still another process."""
    import psutil

    from kbench.backends import local

    state = {"state": "running", **local._process(stranger.pid)}
    assert local._ours(state)
    before = psutil.Process(stranger.pid).create_time()
    booted = psutil.boot_time()
    # A clock step as psutil sees it: the boot time it reads from the kernel moves.
    monkeypatch.setattr(psutil._psplatform, "boot_time", lambda: booted + 1.0)
    assert psutil.Process(stranger.pid).create_time() == pytest.approx(before + 1.0)
    assert local._ours(state)
    assert not local._ours({**state, "since_boot": state["since_boot"] + 1.0})
