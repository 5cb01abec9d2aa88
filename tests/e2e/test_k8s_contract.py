"""The contract between a rendered manifest and the trainer: take a 2-node pair's container
command and environment from its JobSet's Job (the Secret reference resolved from a test
Secret), run it the way the pods would — two local processes, each with its completion index
and its own /scratch, the rendezvous address mapped to localhost — through what a real cluster
does to them (a pod that starts late, a node that dies and a gang started again), and find the
records in the S3 server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from support.processes import kill_tree
from support.s3server import free_ports

from kbench import records
from kbench.command import GPUS_ENV
from kbench.errors import PEER_LOST_EXIT_CODE
from kbench.jobs.checkpoint import POINTER
from kbench.k8s.render import RENDEZVOUS_PORT, child_job, render_run
from kbench.k8s.settings import ClusterSettings
from kbench.runs import Run, create_run
from kbench.spec import parse_grid
from kbench.storage import open_store, read_json

EPOCHS = 4

GRID = (
    f"datasets: [synthetic]\nmodels: {{clip-tiny: {{epochs: {EPOCHS}, batch_size: 32}}}}\n"
    "defaults: {train_limit: 512, eval_limit: 50}"
)

LATE_S = 150  # torch tries twice to reach the store, 60 s each (about 125 s in all)


def pod_environment(
    container: dict, secrets: dict[str, dict], index: int, scratch: Path, pod: str
) -> dict:
    """The environment Kubernetes gives the container: its env, envFrom Secrets, the pod's
    name where the downward API is asked for it, the index."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KBENCH_"))}
    for source in container.get("envFrom", []):
        env.update(secrets[source["secretRef"]["name"]])
    for var in container["env"]:
        if "valueFrom" in var:
            assert var["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
            env[var["name"]] = pod
        else:
            env[var["name"]] = var["value"].replace("/scratch", str(scratch))
    env["JOB_COMPLETION_INDEX"] = str(index)  # set by the Job controller for Indexed Jobs
    assert env[GPUS_ENV] == "1"
    env[GPUS_ENV] = "0"  # these "pods" run on this machine's CPU: no GPU was given them
    return env


def test_a_rendered_two_node_pair_survives_a_late_pod_and_a_gang_restart(s3_env, tmp_path):
    grid = parse_grid(GRID, "g.yaml", default_name="g")
    store_uri = s3_env.uri(f"contract/{tmp_path.name}")
    create_run(open_store(store_uri), Run.new("contract", grid, "kubernetes"), grid.pairs)
    settings = ClusterSettings(
        image="unused",
        nodes=2,
        gpus_per_node=1,
        s3_secret="kbench-s3",
        s3_endpoint=s3_env.endpoint,
        s3_region="us-east-1",
    )
    (jobset,) = render_run("contract", grid.pairs, settings, store_uri)
    job = child_job(jobset)
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    secrets = {
        "kbench-s3": {k: s3_env.env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    }

    # Pod 0's name as JobSet's headless Service (named after the JobSet) publishes it,
    # <job>-<index>.<service>; here both "nodes" are this machine.
    name = jobset["metadata"]["name"]
    rendezvous = f"{job['metadata']['name']}-0.{name}:{RENDEZVOUS_PORT}"
    assert jobset["spec"]["network"]["enableDNSHostnames"] is True
    local = f"127.0.0.1:{free_ports(1)[0]}"
    command = [arg.replace(rendezvous, local) for arg in container["command"]]
    assert command != container["command"]  # the rendezvous really was in the command
    assert command[:3] == ["python", "-m", "kbench.jobs.launch"]
    command[0] = sys.executable  # the image's python

    def start(index: int) -> subprocess.Popen:
        scratch = tmp_path / f"node-{index}"
        scratch.mkdir(exist_ok=True)
        pod = f"{job['metadata']['name']}-{index}-{uuid.uuid4().hex[:5]}"  # one per attempt
        env = pod_environment(container, secrets, index, scratch, pod)
        return subprocess.Popen(
            command, env=env, cwd=scratch, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )

    store = open_store(store_uri)
    pair = grid.pairs[0].name

    # 1. A late pod (an image pull on a cold node): pod 0, which hosts the rendezvous store,
    # starts LATE_S after pod 1, longer than torch gives pod 1 by default to reach the
    # store, and the pair still forms and trains.
    early = start(1)
    time.sleep(LATE_S)
    assert early.poll() is None, early.communicate()[0].decode()[-3000:]
    late = start(0)
    deadline = time.monotonic() + 300
    node_1_log = records.pair_key("contract", pair, "logs/node-1/")
    while checkpointed(store, pair) < 1 or not kept(store, node_1_log):
        for process in (early, late):
            assert process.poll() is None, process.communicate()[0].decode()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)

    # 2. A node dies mid-run: pod 1's whole tree is SIGKILLed; its peer's torchrun goes down
    # too, and the gang is started again, every pod, as JobSet's restart policy does.
    kill_tree(early.pid, signal.SIGKILL)
    early.communicate()
    survivor = late.communicate(timeout=300)[0].decode()
    # A gang: one pod down takes the other, which says it lost a peer (its pod is replaced
    # without spending a restart; the dead pod's own failure decides).
    assert late.returncode == PEER_LOST_EXIT_CODE, survivor[-3000:]
    assert "kbench.jobs.train: lost a peer: " in survivor
    mark = read_json(store, records.pair_key("contract", pair, "peer-lost-node-0.json"))
    killed_after = checkpointed(store, pair)
    assert killed_after < EPOCHS, "finished before the kill: the test proved nothing"
    assert mark == {"epoch": killed_after, "count": 1}

    processes = [start(index) for index in range(job["spec"]["completions"])]
    outputs = [p.communicate(timeout=600)[0].decode() for p in processes]
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]
    assert f"resumed after epoch {killed_after}" in outputs[0]

    epochs = read_json(store, records.pair_key("contract", pair, records.METRICS))["epochs"]
    assert [e["epoch"] for e in epochs] == list(range(EPOCHS + 1))  # each exactly once
    assert all(e["world_size"] == 2 and e["samples"] == 50 for e in epochs)
    assert read_json(store, records.pair_key("contract", pair, records.RESULT))["best_epoch"] >= 1

    # 3. Each pod's output was kept in the store as it ran, per node and attempt in order, the
    # SIGKILLed pod's too (up to its last upload): what `kbench logs` shows once pods are gone.
    logs = {}
    for node in (0, 1):
        keys = sorted(store.list(records.pair_key("contract", pair, f"logs/node-{node}/")))
        assert len(keys) == 2, keys  # the attempt before the restart, and the restart
        logs[node] = [store.read(key).decode() for key in keys]
    assert "kbench.jobs.train: lost a peer" in logs[0][0]  # the survivor, before the restart
    assert logs[1][0].strip()  # the SIGKILLed pod's, written as it ran
    assert f"resumed after epoch {killed_after}" in logs[0][1]  # rank 0, after the restart
    assert all("Traceback" not in log for log in (logs[0][1], logs[1][1]))


def kept(store, folder: str) -> str:
    """What a node's pods kept of their output in the store, so far."""
    return "".join(store.read(key).decode() for key in store.list(folder))


def checkpointed(store, pair: str) -> int:
    pointer = read_json(store, records.pair_key("contract", pair, POINTER), default=None)
    return pointer["epoch"] if pointer else 0
