"""A store is often a bucket a whole team writes to: kbench reads run ids, pair names, keys and
process ids back out of it, so every one is checked before it becomes a path, a key or a signal.
Each crafted record here is refused with one line; nothing outside the store and the report
folder is read, written or signalled."""

from __future__ import annotations

import subprocess
import sys

import pytest
from support.builders import local_process

from kbench import records
from kbench.storage import write_json

PAIR = "synthetic_clip-tiny"


@pytest.fixture
def stranger():
    """A process kbench did not start (the same user's, so a signal would reach it)."""
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True
    )
    yield process
    process.kill()
    process.wait()


def test_a_local_state_naming_another_process_and_file(run_store, tmp_path, stranger, kbench):
    (tmp_path / "secret.txt").write_text("do not print me")
    import socket

    # A record of the right shape, naming a process kbench did not start (and a log path that
    # no reader takes from a record).
    stolen = local_process(
        "running",
        pid=stranger.pid,
        host=socket.gethostname(),
        command=["python", "-m", "torch.distributed.run"],
        log=str(tmp_path / "secret.txt"),
    )
    write_json(run_store, records.pair_key("good", PAIR, records.LOCAL_STATE), stolen)
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

    from kbench.backends import processes

    state = {"state": "running", **processes.identify(stranger.pid)}
    assert processes.ours(state)
    before = psutil.Process(stranger.pid).create_time()
    booted = psutil.boot_time()
    # A clock step as psutil sees it: the boot time it reads from the kernel moves.
    monkeypatch.setattr(psutil._psplatform, "boot_time", lambda: booted + 1.0)
    assert psutil.Process(stranger.pid).create_time() == pytest.approx(before + 1.0)
    assert processes.ours(state)
    assert not processes.ours({**state, "since_boot": state["since_boot"] + 1.0})
