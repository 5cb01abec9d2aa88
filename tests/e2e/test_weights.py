"""Pretrained weights from the store: staged once (`kbench models stage`), loaded by the pod's
trainer through the node cache with the network off, checked by checksum, required by
`submit` before anything is created; and the real models' loading code taking the same path
(a weights file to a model) without a download."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from urllib.parse import urlparse

import pytest
import torch
import yaml
from support.builders import marked, synthetic_config
from support.k8s_emulator import NAMESPACE as NS
from support.processes import network_off

from kbench import records
from kbench.jobs.models import build_model, tiny_clip, tiny_resnet
from kbench.runs import Run, create_run
from kbench.spec import parse_grid
from kbench.storage import open_store, read_json

GRID = """
datasets: [synthetic]
models:
  clip-tiny: {pretrained: true}
  resnet-tiny: {pretrained: true}
defaults: {epochs: 1, train_limit: 64, eval_limit: 32, batch_size: 32}
"""


def test_tiny_weights_staged_once_and_loaded_by_the_pod_with_the_network_off(
    s3_env, tmp_path, monkeypatch, kbench
):
    uri = s3_env.uri(f"weights/{tmp_path.name}")
    for name, model in (("clip-tiny", tiny_clip()), ("resnet-tiny", tiny_resnet())):
        path = tmp_path / f"{name}.pt"
        torch.save(marked(model, 0.01), path)
        staged = kbench("models", "stage", name, "--from", str(path), "--store", uri)
        assert staged.exit_code == 0, staged.output
        assert f"staged {name}: {name}.pt" in staged.output
    store = open_store(uri)
    manifest = read_json(store, records.weights_key("clip-tiny"))
    assert manifest["file"] == "clip-tiny.pt" and len(manifest["sha256"]) == 64
    listed = kbench("models", "list", "--store", uri).output
    assert "clip-tiny.pt" in listed and "resnet50" in listed

    grid = parse_grid(GRID, "g.yaml", default_name="g")
    create_run(store, Run.new("w", grid, "kubernetes"), grid.pairs)
    scratch = tmp_path / "scratch"
    env = {**network_off(tmp_path, urlparse(s3_env.endpoint).port), "TMPDIR": str(scratch)}
    internet = [sys.executable, "-c", "import urllib.request as u; u.urlopen('http://pypi.org')"]
    refused = subprocess.run(internet, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "network off: pypi.org" in refused.stderr  # the guard works
    for pair in grid.pairs:  # the pod's trainer, as the Job runs it, without internet
        command = [sys.executable, "-m", "kbench.jobs.train", "--store", uri, "--run-id", "w"]
        done = subprocess.run(
            [*command, "--pair", pair.name],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert read_json(store, records.pair_key("w", pair.name, records.RESULT))["epochs"] == 1
    cached = sorted(p.name for p in (scratch / "kbench-models").glob("*/*"))
    assert cached == [f"{manifest['sha256'][:16]}-clip-tiny.pt", cached[1]]
    assert cached[1].endswith("-resnet-tiny.pt")

    # The weights a pod builds its model from are the staged ones, bit for bit.
    from kbench.jobs.weights import local_weights

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "other-node"))
    path = local_weights(store, synthetic_config("clip-tiny"))
    model = build_model(
        synthetic_config("clip-tiny"), ["a", "b"], ["{}"], torch.device("cpu"), path
    )
    assert all(torch.all(p == 0.01) for p in model.encoder.parameters())

    # A file changed in the store after staging is refused, not loaded.
    store.write(records.weights_key("clip-tiny", "clip-tiny.pt"), b"not the staged bytes")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "third-node"))
    with pytest.raises(Exception, match="does not match its checksum: stage it again"):
        local_weights(store, synthetic_config("clip-tiny"))


def test_submit_refuses_a_grid_whose_weights_are_not_staged(cluster, tmp_path):
    store = open_store(os.environ["KBENCH_STORE"])
    store.delete(records.weights_key("resnet50"))
    result = cluster.submit()
    assert result.exit_code == 2, result.output
    (line,) = result.output.splitlines()
    assert "pretrained weights not staged in" in line
    assert f"kbench models stage resnet50 --store {store.uri}" in line
    assert cluster.requests("POST") == [] and store.list("runs/") == []  # nothing created

    # Opting into downloads: the pods then keep the hub reachable.
    profile = tmp_path / "profile.yaml"
    profile.write_text(yaml.safe_dump({"download_weights": True}))
    allowed = cluster.submit("--profile", str(profile))
    assert allowed.exit_code == 0, allowed.output
    job = cluster.requests("POST", f"/apis/batch/v1/namespaces/{NS}/jobs")[0].data
    env = {e["name"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "HF_HUB_OFFLINE" not in env


def test_pods_run_with_the_hub_offline_by_default(cluster):
    dry = cluster.submit("--dry-run", "-o", "json")
    assert dry.exit_code == 0, dry.output
    for job in json.loads(dry.stdout)["items"]:
        env = job["spec"]["template"]["spec"]["containers"][0]["env"]
        assert {"name": "HF_HUB_OFFLINE", "value": "1"} in env
