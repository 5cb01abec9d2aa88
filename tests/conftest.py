"""Fixtures every tier shares: each test's own TMPDIR, the kbench CLI in-process, a real
S3-compatible server (SeaweedFS), and a Kubernetes API emulator that the real client reaches
through a real kubeconfig (tests/support holds what they are built from).

Two tiers, each a folder: tests/unit (no process started, no server: `make test-fast`) and
tests/e2e (SeaweedFS, torchrun, the API emulator, the packaging build, headless Chromium).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from support.builders import epoch_record as epoch
from support.builders import local_process, wise_ft_point, write_pair
from support.fake_datasets import IMAGEFOLDER_CLASSES
from support.k8s_emulator import NAMESPACE, RUN, Cluster, kubernetes_emulator
from support.s3server import S3Server, seaweedfs

from kbench.cli.main import cli
from kbench.jobs.synthetic import SyntheticShapes
from kbench.records import dataset_key, weights_key
from kbench.runs import Run, create_run
from kbench.spec import load_grid, parse_grid
from kbench.storage import open_store, write_json


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


@pytest.fixture
def kbench() -> Callable[..., Result]:
    """`kbench ARGS...` in this process (Click's runner): exit code, output, exception."""

    def run(*args: str, env: dict[str, str] | None = None) -> Result:
        return CliRunner().invoke(cli, list(args), env=env)

    return run


@pytest.fixture
def collect(kbench) -> Callable[[Any, Path], tuple[str, dict]]:
    """`kbench collect` of a store's newest run into a folder: what it printed, and
    results.json."""

    def run(store: Any, out: Path) -> tuple[str, dict]:
        result = kbench("collect", "--store", store.uri, "--out-dir", str(out))
        assert result.exit_code == 0, result.output
        return result.output, json.loads((out / "results.json").read_text())

    return run


@pytest.fixture
def no_md5_checks(monkeypatch):
    """What torchvision's own dataset tests bypass on fake copies: the md5 of the real files,
    nothing else."""
    from torchvision import datasets as tv

    for cls in (tv.CIFAR10, tv.CIFAR100, tv.STL10, tv.Flowers102):
        monkeypatch.setattr(cls, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tv.cifar, "check_integrity", lambda path, md5=None: True)


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


class KubernetesTest(Cluster):
    """The emulator, with the submit every Kubernetes test starts from."""

    namespace, run_id = NAMESPACE, RUN

    def submit(self, *extra: str) -> Result:
        """`kbench submit --grid all --backend kubernetes` of run `study` to namespace `ml`."""
        args = ["submit", "--grid", "all", "--backend", "kubernetes", "--run-id", RUN]
        args += ["--image", "registry.example/kbench:1", "-n", NAMESPACE, *extra]
        return CliRunner().invoke(cli, args)


@pytest.fixture
def cluster(tmp_path, monkeypatch, s3_env) -> KubernetesTest:
    """The API emulator, KUBECONFIG pointing at it, and KBENCH_STORE at an S3 prefix that holds
    the manifests of the study's datasets and pretrained weights, as `kbench data stage` and
    `kbench models stage` leave them (submit checks them; no files: no pod reads them here)."""
    uri = s3_env.uri(f"k8s/{tmp_path.name}")
    store = open_store(uri)
    for name in load_grid("all").document["datasets"]:
        write_json(store, dataset_key(name), {"name": name, "splits": {}})
    for model in ("clip-vit-b32", "resnet50"):  # as `kbench models stage` leaves them
        write_json(store, weights_key(model), {"model": model, "file": "w.pt"})
    with kubernetes_emulator(tmp_path) as emulator:
        monkeypatch.setenv("KUBECONFIG", str(emulator.kubeconfig))
        monkeypatch.setenv("KBENCH_STORE", uri)
        yield KubernetesTest(emulator.emulator, emulator.url, emulator.kubeconfig)


@pytest.fixture
def report_run(tmp_path):
    """A store with one run of three datasets x two models written by hand: complete, running
    and failed pairs, a missing epoch, a NaN, a zero-shot number far from the published one,
    a pair trained on a reduced staged copy."""
    store = open_store(str(tmp_path / "store"))
    text = "datasets: [cifar10, dtd, flowers102]\nmodels: [clip-vit-b32, resnet50]\n"
    grid = parse_grid(text, "study.yaml", "study")
    create_run(store, Run.new("study", grid, "local"), grid.pairs)
    # cifar10: both complete, CLIP's zero-shot within the published 89.8-91.3, CLIP wins by 2.
    clip = [epoch(0, 0.905), epoch(1, 0.96), epoch(2, 0.97)]
    wise_ft = [wise_ft_point(a / 10, 0.905 + a / 100, 0.9, 1000) for a in range(11)]
    write_pair(store, "study", "cifar10_clip-vit-b32", clip, wise_ft=wise_ft)
    resnet = [epoch(e, h) for e, h in [(1, 0.93), (2, 0.95)]]
    for record in resnet:  # trained on a staged copy reduced to a short side of 448
        record["data"] = {"frac": 1.0, "max_short_side": 448}
    write_pair(store, "study", "cifar10_resnet50", resnet)
    # dtd: CLIP complete but its zero-shot (30%) is far from the published 44.4; ResNet running.
    write_pair(store, "study", "dtd_clip-vit-b32", [epoch(0, 0.30), epoch(1, 0.70)])
    running = local_process("running", log="x")
    write_pair(
        store,
        "study",
        "dtd_resnet50",
        [epoch(1, 0.60), epoch(2, 0.65)],
        done=False,
        local_state=running,
    )
    # flowers102: CLIP failed after two epochs; ResNet complete, epoch 3 missing, NaN at 2.
    write_pair(
        store,
        "study",
        "flowers102_clip-vit-b32",
        [epoch(0, 0.66, "mean_per_class"), epoch(1, 0.5, "mean_per_class")],
        done=False,
        local_state=local_process("failed", returncode=1, reason="CUDA out of memory", log="x"),
    )
    flowers = [epoch(e, h, "mean_per_class") for e, h in [(1, 0.8), (2, float("nan")), (4, 0.85)]]
    write_pair(store, "study", "flowers102_resnet50", flowers)
    return store


@pytest.fixture
def image_tree(tmp_path) -> Path:
    """A user's ImageFolder tree (train/ and val/) of synthetic shapes, its class folders named
    with spaces, underscores and non-ASCII letters."""
    root = tmp_path / "my-images"
    for split, count in [("train", 24), ("val", 8)]:
        shapes = SyntheticShapes("train" if split == "train" else "test", image_size=32)
        for folder, label in IMAGEFOLDER_CLASSES.items():
            (root / split / folder).mkdir(parents=True)
            for i in range(count):
                shapes.draw(i, label).save(root / split / folder / f"{i:03d}.png")
    return root


@pytest.fixture
def run_store(tmp_path, monkeypatch):
    """A store with one real run, `good`; the working directory is the test's folder."""
    monkeypatch.chdir(tmp_path)
    store = open_store(str(tmp_path / "store"))
    grid = load_grid("smoke")
    create_run(store, Run.new("good", grid, "local"), grid.pairs)
    return store
