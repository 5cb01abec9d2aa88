"""A sweep on Kubernetes, against the API emulator with the real client: the next rung's Jobs
are created only once the previous rung's records are in the store, each exactly once, also
when the driver runs twice or dies between deciding and sending; the unattended driver (a
CronJob) is created with the first rung, calls only what its Role grants, and deletes itself
when the seeds have ended."""

from __future__ import annotations

import json
import os

from support.builders import epoch_record, write_pair
from support.k8s_emulator import NAMESPACE as NS
from support.k8s_emulator import RUN, VERBS

from kbench import records
from kbench.halving import advance, read_decision
from kbench.k8s.driver import RULES as DRIVER_RULES
from kbench.k8s.setup import calls
from kbench.runs import load_run
from kbench.storage import open_store, write_json

GRID = """
datasets: [dtd]
models:
  clip-vit-b32: {sweep: {lr: [1.0e-5, 3.0e-5, 1.0e-4]}}
halving: {eta: 2, rungs: [1, 3]}
seeds: 2
"""
CELL = "dtd_clip-vit-b32"
TRIALS = [f"{CELL}_trial{k}" for k in (1, 2, 3)]


def created(cluster) -> list[dict]:
    """The Jobs created for real (not the dry runs), in order."""
    return [r.data for r in cluster.requests("POST", "/jobs") if r.data["kind"] == "Job"]


def trained(store, pair: str, values: dict[int, float]) -> None:
    """A trial's records as its pod leaves them at a rung: validation scores only."""
    epochs = [epoch_record(0, 0.3, val=None, split="val")]
    epochs += [epoch_record(e, v, val=None, split="val") for e, v in sorted(values.items())]
    write_json(store, records.pair_key(RUN, pair, records.METRICS), {"epochs": epochs})


def test_each_rung_is_sent_once_its_records_exist(cluster, kbench, tmp_path):
    (tmp_path / "sweep.yaml").write_text(GRID)
    submitted = kbench(
        "submit", "--grid", str(tmp_path / "sweep.yaml"), "--backend", "kubernetes",
        "--run-id", RUN, "--image", "registry.example/kbench:1", "-n", NS,
    )  # fmt: skip
    assert submitted.exit_code == 0, submitted.output
    first = created(cluster)
    assert [j["metadata"]["labels"]["kbench.dev/pair"] for j in first] == TRIALS
    (driver,) = [r.data for r in cluster.requests("POST", "/cronjobs")]
    assert driver["metadata"]["name"] == f"kb-{RUN}-sweep"
    assert driver["spec"]["concurrencyPolicy"] == "Forbid"
    pod = driver["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "kbench-driver" and pod["automountServiceAccountToken"]
    assert pod["containers"][0]["command"] == ["kbench", "sweep", "--run", RUN, "--namespace", NS]
    for job in first:
        assert job["metadata"]["labels"]["kbench.dev/rung"] == "1"
        pod = job["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False  # training pods: still no token
        assert job["metadata"]["name"].endswith("-r1")
        command = job["spec"]["template"]["spec"]["containers"][0]["command"]
        assert command[-2:] == ["--until", "1"]

    driver_calls = []

    def sweep():  # as the CronJob's pod runs it
        before = len(cluster.requests())
        result = kbench("sweep", "--run", RUN, "-n", NS)
        assert result.exit_code == 0, result.output
        driver_calls.extend(cluster.requests()[before:])
        return result.output

    # No records yet: the driver sends nothing and decides nothing.
    sweep()
    assert len(created(cluster)) == 3
    store = open_store(os.environ["KBENCH_STORE"])  # the cluster fixture's S3 prefix
    assert read_decision(store, RUN, CELL, 1) is None

    # Rung 1's records: trial 3 is pruned, 2 and 1 go on, each sent once however often asked.
    for trial, value in zip(TRIALS, (0.5, 0.6, 0.4), strict=True):
        trained(store, trial, {1: value})
    output = sweep()
    assert "kept dtd_clip-vit-b32_trial2, dtd_clip-vit-b32_trial1" in output
    sweep()
    second = created(cluster)[3:]
    assert [j["metadata"]["labels"]["kbench.dev/pair"] for j in second] == TRIALS[1::-1]
    assert all(j["metadata"]["name"].endswith("-r2") for j in second)
    assert all(j["spec"]["template"]["spec"]["containers"][0]["command"][-1] == "3" for j in second)

    # Rung 2's records; a driver that decides and dies before sending (run in this process,
    # sending nothing); the next one sends the chosen setting's seeds, once.
    trained(store, TRIALS[0], {1: 0.5, 2: 0.6, 3: 0.7})
    trained(store, TRIALS[1], {1: 0.6, 2: 0.62, 3: 0.65})
    step = advance(store, load_run(store, RUN), {})
    (decision,) = step.decided
    assert decision["winner"] == TRIALS[0]
    sweep()
    sweep()
    seeds = created(cluster)[5:]
    assert [j["metadata"]["labels"]["kbench.dev/pair"] for j in seeds] == [
        f"{CELL}_seed0",
        f"{CELL}_seed1",
    ]
    for job in seeds:  # the seeds train to the end, the test split scored
        assert "--until" not in job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert read_decision(store, RUN, CELL, 2) == decision  # made once, never again
    config = json.loads(store.read(records.pair_key(RUN, f"{CELL}_seed1", records.CONFIG)))
    assert config["lr"] == 1.0e-5 and config["seed"] == 1

    # The seeds end: the driver's last step deletes it.
    for seed in (0, 1):
        write_pair(store, RUN, f"{CELL}_seed{seed}", [epoch_record(e, 0.7) for e in (0, 1)])
    assert "driver (a CronJob) deleted" in sweep()
    assert cluster.requests("DELETE", "/cronjobs")
    # What the driver called, against its Role: nothing more; what it was not asked here
    # (JobSets for multi-node pairs, Kueue's Workloads for queued ones) is the code the
    # users' Role test exercises.
    used = {
        (r.resource.group, r.resource.plural, VERBS[r.action.name])
        for r in driver_calls
        if r.resource and r.resource.plural
    }
    granted = set(calls(DRIVER_RULES))
    assert used <= granted
    assert granted - used == {
        ("jobset.x-k8s.io", "jobsets", "create"),
        ("jobset.x-k8s.io", "jobsets", "list"),
        ("kueue.x-k8s.io", "workloads", "list"),
    }

    status = json.loads(kbench("status", "--run", RUN, "-n", NS, "-o", "json").stdout)
    states = {p["pair"]: (p["state"], p["detail"]) for p in status["pairs"]}
    assert states[TRIALS[2]][0] == "pruned" and "rung 1" in states[TRIALS[2]][1]
    assert states[TRIALS[1]][0] == "pruned" and "rung 2" in states[TRIALS[1]][1]
    assert states[TRIALS[0]] == ("succeeded", "chosen: its setting trains the seeds")
