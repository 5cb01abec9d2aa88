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
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch
import yaml
from click.testing import CliRunner
from test_k8s_backend import NS, submit

from kbench import records
from kbench.cli.main import cli
from kbench.jobs.models import build_model, tiny_clip, tiny_resnet
from kbench.runs import Run, create_run
from kbench.spec import TrainConfig, load_recipe, parse_grid
from kbench.storage import open_store, read_json

# The network as a pod without internet sees it: any download goes to a dead proxy and fails
# at once; only the store (loopback) answers.
OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost",
}
# Loaded first by every Python process started with it on PYTHONPATH: a socket may connect to
# the store's port on loopback and to nothing else, and no other host name resolves.
SOCKET_GUARD = """
import os, socket
_port, _connect, _resolve = int(os.environ["ONLY_PORT"]), socket.socket.connect, socket.getaddrinfo
def _allowed(address):
    return address[0] in ("127.0.0.1", "localhost", "::1") and int(address[1]) == _port
def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _allowed(address):
        raise ConnectionRefusedError(f"network off: {address}")
    return _connect(self, address)
def getaddrinfo(host, *args, **kwargs):
    if host not in ("127.0.0.1", "localhost", "::1", None):
        raise socket.gaierror(f"network off: {host}")
    return _resolve(host, *args, **kwargs)
socket.socket.connect, socket.getaddrinfo = connect, getaddrinfo
"""


def network_off(tmp_path: Path, store_port: int) -> dict[str, str]:
    """The environment of a process whose sockets reach the store only."""
    guard = tmp_path / "guard"
    guard.mkdir(exist_ok=True)
    (guard / "sitecustomize.py").write_text(SOCKET_GUARD)
    path = os.pathsep.join(filter(None, [str(guard), os.environ.get("PYTHONPATH")]))
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    return {**env, "HF_HUB_OFFLINE": "1", "PYTHONPATH": path, "ONLY_PORT": str(store_port)}


GRID = """
datasets: [synthetic]
models:
  clip-tiny: {pretrained: true}
  resnet-tiny: {pretrained: true}
defaults: {epochs: 1, train_limit: 64, eval_limit: 32, batch_size: 32}
"""


def kbench(*args: str):
    return CliRunner().invoke(cli, list(args))


def marked(model: torch.nn.Module, value: float) -> dict:
    """The model's state dict with every floating tensor filled with `value`: weights no
    random init could give, to recognise once loaded."""
    state = model.state_dict()
    return {k: v.fill_(value) if v.is_floating_point() else v for k, v in state.items()}


def config(model: str, pretrained: bool = True) -> TrainConfig:
    recipe = {**load_recipe(model), "dataset": "synthetic", "model": model}
    return TrainConfig.from_dict({**recipe, "pretrained": pretrained})


@pytest.mark.s3
def test_tiny_weights_staged_once_and_loaded_by_the_pod_with_the_network_off(
    s3_env, tmp_path, monkeypatch
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
    path = local_weights(store, config("clip-tiny"))
    model = build_model(config("clip-tiny"), ["a", "b"], ["{}"], torch.device("cpu"), path)
    assert all(torch.all(p == 0.01) for p in model.encoder.parameters())

    # A file changed in the store after staging is refused, not loaded.
    store.write(records.weights_key("clip-tiny", "clip-tiny.pt"), b"not the staged bytes")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "third-node"))
    with pytest.raises(Exception, match="does not match its checksum: stage it again"):
        local_weights(store, config("clip-tiny"))


@pytest.mark.parametrize("name", ["clip-vit-b32", "resnet50"])
def test_the_real_models_load_a_weights_file_as_their_libraries_do_without_a_download(
    name, tmp_path, monkeypatch
):
    """A random-init model saved in the published files' format (open_clip's state dict of the
    whole CLIP; torchvision's of ResNet50), loaded by build_model through the libraries' own
    loaders, with every download function made to fail."""
    import open_clip
    import torch.hub
    from torchvision.models import resnet50

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", no_download)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)
    saved = open_clip.create_model("ViT-B-32-quickgelu") if name == "clip-vit-b32" else resnet50()
    path = tmp_path / ("open_clip_pytorch_model.bin" if name == "clip-vit-b32" else "r50.pth")
    torch.save(marked(saved, 0.02), path)
    del saved
    model = build_model(config(name), ["a", "b"], ["{}"], torch.device("cpu"), path)
    assert all(torch.all(p == 0.02) for p in model.encoder.parameters())


def test_a_tiny_model_marked_pretrained_without_staged_weights_says_what_to_do():
    from kbench.errors import ConfigError

    with pytest.raises(ConfigError, match="kbench models stage resnet-tiny --from FILE"):
        build_model(config("resnet-tiny"), ["a", "b"], ["{}"], torch.device("cpu"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["clip-vit-b3"], "unknown model 'clip-vit-b3'"),
        (["clip-tiny"], "clip-tiny has no published weights to download"),
        (["resnet-tiny", "--from", "nowhere.pt"], "--from nowhere.pt: no such file"),
        (["clip-tiny", "resnet-tiny", "--from", "x.pt"], "--from stages one file: name one model"),
    ],
)
def test_models_stage_refuses_bad_input_in_one_line(args, message, tmp_path):
    result = kbench("models", "stage", *args, "--store", str(tmp_path / "store"))
    assert result.exit_code == 2, result.output
    (line,) = result.output.splitlines()
    assert message in line
    assert not (tmp_path / "store" / "models").exists()  # nothing half-staged


def test_submit_refuses_a_grid_whose_weights_are_not_staged(cluster, tmp_path):
    store = open_store(os.environ["KBENCH_STORE"])
    store.delete(records.weights_key("resnet50"))
    result = submit()
    assert result.exit_code == 2, result.output
    (line,) = result.output.splitlines()
    assert "pretrained weights not staged in" in line
    assert f"kbench models stage resnet50 --store {store.uri}" in line
    assert cluster.requests("POST") == [] and store.list("runs/") == []  # nothing created

    # Opting into downloads: the pods then keep the hub reachable.
    profile = tmp_path / "profile.yaml"
    profile.write_text(yaml.safe_dump({"download_weights": True}))
    allowed = submit("--profile", str(profile))
    assert allowed.exit_code == 0, allowed.output
    job = cluster.requests("POST", f"/apis/batch/v1/namespaces/{NS}/jobs")[0].data
    env = {e["name"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "HF_HUB_OFFLINE" not in env


def test_pods_run_with_the_hub_offline_by_default(cluster):
    dry = submit("--dry-run", "-o", "json")
    assert dry.exit_code == 0, dry.output
    for job in json.loads(dry.output)["items"]:
        env = job["spec"]["template"]["spec"]["containers"][0]["env"]
        assert {"name": "HF_HUB_OFFLINE", "value": "1"} in env
