"""The contract between a rendered manifest and the trainer: take a 2-node Job's container
command and environment (the Secret reference resolved from a test Secret), run it the way the
pods would — two local processes, each with its completion index and its own /scratch, the
rendezvous address mapped to localhost — and find the records in the S3 server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from s3server import free_ports

from kbench import records
from kbench.k8s.render import RENDEZVOUS_PORT, render_run
from kbench.k8s.settings import ClusterSettings
from kbench.runs import Run, create_run
from kbench.spec import parse_grid
from kbench.storage import open_store, read_json

GRID = (
    "datasets: [synthetic]\nmodels: {clip-tiny: {epochs: 2, batch_size: 32}}\n"
    "defaults: {train_limit: 256, eval_limit: 50}"
)


def pod_environment(container: dict, secrets: dict[str, dict], index: int, scratch: Path) -> dict:
    """The environment Kubernetes gives the container: its env, envFrom Secrets, the index."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KBENCH_"))}
    for source in container.get("envFrom", []):
        env.update(secrets[source["secretRef"]["name"]])
    for var in container["env"]:
        env[var["name"]] = var["value"].replace("/scratch", str(scratch))
    env["JOB_COMPLETION_INDEX"] = str(index)  # set by the Job controller for Indexed Jobs
    return env


@pytest.mark.slow
def test_rendered_two_node_job_trains_and_writes_to_s3(s3_env, tmp_path):
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
    service, job = render_run("contract", grid.pairs, settings, store_uri)
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    secrets = {
        "kbench-s3": {k: s3_env.env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    }

    # The pods' names resolve through the headless Service; here both "nodes" are this machine.
    rendezvous = f"{job['metadata']['name']}-0.{pod['subdomain']}:{RENDEZVOUS_PORT}"
    assert pod["subdomain"] == service["metadata"]["name"]
    local = f"127.0.0.1:{free_ports(1)[0]}"
    command = [arg.replace(rendezvous, local) for arg in container["command"]]
    assert command != container["command"]  # the rendezvous really was in the command
    assert command[:3] == ["python", "-m", "kbench.jobs.launch"]
    command[0] = sys.executable  # the image's python

    processes = []
    for index in range(job["spec"]["completions"]):
        scratch = tmp_path / f"node-{index}"
        scratch.mkdir()
        env = pod_environment(container, secrets, index, scratch)
        processes.append(
            subprocess.Popen(
                command, env=env, cwd=scratch, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
        )
    outputs = [p.communicate(timeout=600)[0].decode() for p in processes]
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]

    store = open_store(store_uri)
    pair = grid.pairs[0].name
    epochs = read_json(store, records.pair_key("contract", pair, records.METRICS))["epochs"]
    assert [e["epoch"] for e in epochs] == [0, 1, 2]
    assert all(e["world_size"] == 2 and e["samples"] == 50 for e in epochs)
    assert read_json(store, records.pair_key("contract", pair, records.RESULT))["best_epoch"] >= 1
