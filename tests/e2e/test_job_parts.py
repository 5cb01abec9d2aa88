"""The pieces the training loop is built from: data, models, optimizer and schedule."""

from __future__ import annotations

import os

import pytest

from kbench.spec import load_grid


@pytest.mark.parametrize("trainer_alive", [True, False])
def test_a_dataloader_worker_ignores_sigterm_and_never_outlives_its_trainer(trainer_alive):
    """start_worker runs first in every worker: SIGTERM is the trainer's to handle, and a
    worker whose trainer is already gone (forked just as it stopped) exits at once."""
    import os
    import signal

    from kbench.jobs.loaders import start_worker

    parent = os.getpid()
    child = os.fork()
    if child == 0:  # the worker
        try:
            start_worker(0, trainer=parent if trainer_alive else parent + 1_000_000)
            ignored = signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
            os._exit(10 if ignored else 11)  # returned: the trainer is alive
        finally:
            os._exit(12)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == (10 if trainer_alive else 0)


def test_a_pod_given_gpus_that_finds_no_cuda_fails_at_once(tmp_path):
    """No silent CPU fallback: exit 2 (the podFailurePolicy's FailJob) and one line that says
    why, before any data is read."""
    import subprocess
    import sys

    from kbench.runs import Run, create_run
    from kbench.storage import open_store

    store = open_store(str(tmp_path / "store"))
    grid = load_grid("smoke")
    create_run(store, Run.new("gpus", grid, "kubernetes"), grid.pairs)
    command = [sys.executable, "-m", "kbench.jobs.train", "--store", store.uri, "--run-id", "gpus"]
    done = subprocess.run(
        [*command, "--pair", grid.pairs[0].name],
        env={**os.environ, "KBENCH_GPUS": "2"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("kbench.jobs.train: error:")]
    assert "this pod was given 2 GPU(s) but CUDA is unusable: " in line
    assert "use an image whose CUDA the nodes' driver supports" in line
    assert store.list(f"runs/gpus/{grid.pairs[0].name}") == [
        f"runs/gpus/{grid.pairs[0].name}/config.json"
    ]  # nothing trained, nothing written


def test_a_pods_output_is_kept_in_the_store_and_a_store_away_costs_only_the_log(tmp_path, capfd):
    """What the pod and its children print reaches both the pod's own output and the store;
    a store that does not answer is said once and changes nothing else."""
    import subprocess
    import sys

    from kbench.errors import StoreError
    from kbench.jobs.pod_log import kept_in_store
    from kbench.storage import open_store

    store = open_store(str(tmp_path))
    with kept_in_store(store, "runs/r/p/logs/node-0/x.log"):
        os.write(1, b"hello\n")  # as print does, under pytest's own sys.stdout
        subprocess.run([sys.executable, "-c", "print('from a child')"], check=True)
    assert store.read("runs/r/p/logs/node-0/x.log") == b"hello\nfrom a child\n"
    assert capfd.readouterr().out == "hello\nfrom a child\n"  # the pod's own log has it too

    class Away:
        uri = "s3://away/x"

        def write(self, key: str, data: bytes) -> None:
            raise StoreError("the store did not answer")

    with kept_in_store(Away(), "log"):
        os.write(1, b"still training\n")
    out, err = capfd.readouterr()
    assert out == "still training\n"
    assert err.count("kbench.jobs.launch: log not kept: the store did not answer") == 1
