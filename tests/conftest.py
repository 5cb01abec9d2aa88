"""Shared fixtures: a real S3-compatible server (SeaweedFS) on free ports, and a Kubernetes API
emulator that the real client reaches through a real kubeconfig."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from k8s_emulator import kubernetes_emulator
from s3server import S3Server, seaweedfs

from kbench.records import dataset_key, weights_key
from kbench.spec import load_grid
from kbench.storage import open_store, write_json


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> S3Server:
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture
def s3_env(s3_server, monkeypatch) -> S3Server:
    """The S3 server's AWS variables set for this test (and the processes it starts)."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return s3_server


@pytest.fixture
def cluster(tmp_path, monkeypatch, s3_env):
    """The API emulator, KUBECONFIG pointing at it, and KBENCH_STORE at an S3 prefix that holds
    the manifests of the study's datasets and pretrained weights, as `kbench data stage` and
    `kbench models stage` leave them (submit checks them; no files: no pod reads them here)."""
    uri = s3_env.uri(f"k8s/{tmp_path.name}")
    store = open_store(uri)
    for name in load_grid("all").document["datasets"]:
        write_json(store, dataset_key(name), {"name": name, "splits": {}})
    for model in ("clip-vit-b32", "resnet50"):  # as `kbench models stage` leaves them
        write_json(store, weights_key(model), {"model": model, "file": "w.pt"})
    with kubernetes_emulator(tmp_path) as cluster:
        monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
        monkeypatch.setenv("KBENCH_STORE", uri)
        yield cluster


@pytest.fixture
def no_md5_checks(monkeypatch):
    """What torchvision's own dataset tests bypass on fake copies: the md5 of the real files,
    nothing else."""
    from torchvision import datasets as tv

    for cls in (tv.CIFAR10, tv.CIFAR100, tv.STL10, tv.Flowers102):
        monkeypatch.setattr(cls, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tv.cifar, "check_integrity", lambda path, md5=None: True)


@pytest.fixture(autouse=True)
def scratch(tmp_path, monkeypatch) -> Path:
    """Every test's own temporary folder (TMPDIR), as a pod's scratch disk is its own: in this
    process and the ones it starts, so no cache (checkpoints, shards) of one test is found by
    another. Python caches its temporary directory, so the cached value is reset too."""
    path = tmp_path / "scratch"
    path.mkdir()
    monkeypatch.setenv("TMPDIR", str(path))
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    return path
