"""`kbench data stage`: a dataset's local copy, read by its real loader, written as tar shards and
a manifest to a real S3 server; then read back the way a pod does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_torchvision_datasets import FAKES, no_md5_checks  # noqa: F401 - a fixture

from kbench.cli.main import cli
from kbench.jobs.datasets import build_splits, raw_splits
from kbench.registry import model_info, prompts
from kbench.spec import TrainConfig, load_grid
from kbench.storage import open_store, read_json


def config(dataset: str) -> TrainConfig:
    base = load_grid("all").pair(f"{dataset}_resnet50").config.to_dict()
    return TrainConfig.from_dict({**base, "pretrained": False})


@pytest.fixture
def staged(tmp_path, monkeypatch, s3_env, no_md5_checks):  # noqa: F811
    made = set()

    def stage(dataset: str, *extra: str):
        root = tmp_path / "data"
        root.mkdir(exist_ok=True)
        if dataset not in made:  # the local copy, written once
            FAKES[dataset](root, dataset)
            made.add(dataset)
        monkeypatch.setenv("TMPDIR", str(tmp_path / "scratch"))  # the pod's cache
        (tmp_path / "scratch").mkdir(exist_ok=True)
        uri = s3_env.uri(f"staging/{tmp_path.name}")
        result = CliRunner().invoke(
            cli,
            [
                "data",
                "stage",
                dataset,
                "--store",
                uri,
                "--root",
                str(root),
                "--shard-samples",
                "4",
                *extra,
            ],
        )
        return result, open_store(uri), root

    return stage


@pytest.mark.parametrize("dataset", ["cifar10", "dtd"])  # re-encoded PNG, original JPEG files
def test_stage_then_read_like_a_pod(staged, dataset, monkeypatch):
    result, store, root = staged(dataset)
    assert result.exit_code == 0, result.output
    manifest = read_json(store, f"datasets/{dataset}/manifest.json")
    assert manifest["classes"] == prompts(dataset)[0]
    assert manifest["eval_split"] == "test" and set(manifest["splits"]) == {"train", "test"}
    monkeypatch.setenv("KBENCH_DATA_ROOT", str(root))
    train_raw, test_raw, _ = raw_splits(config(dataset), None)
    assert manifest["splits"]["train"]["samples"] == len(train_raw)
    assert len(manifest["splits"]["train"]["shards"]) == -(-len(train_raw) // 4)
    for shard in manifest["splits"]["test"]["shards"]:
        assert store.read(shard["key"] + ".sha256").decode() == shard["sha256"]

    monkeypatch.setenv("KBENCH_DATA_ROOT", str(root / "gone"))  # pods have no local copy
    splits = build_splits(config(dataset), model_info("resnet50"), store)
    assert len(splits.train) == len(train_raw) and len(splits.eval) == len(test_raw)
    assert splits.eval.targets == [test_raw[i][1] for i in range(len(test_raw))]
    raw_image = np.asarray(test_raw[0][0])
    staged_image = np.asarray(_untransformed(splits.eval, 0))
    assert np.array_equal(raw_image, staged_image)  # lossless: the same pixels


def _untransformed(dataset, index):
    transform, dataset.transform = dataset.transform, None
    try:
        return dataset[index][0]
    finally:
        dataset.transform = transform


def test_rerun_uploads_nothing_and_a_corrupt_shard_is_fetched_again(staged, monkeypatch):
    first, store, root = staged("cifar10")
    assert first.exit_code == 0, first.output
    again, _, _ = staged("cifar10")
    assert "0 uploaded" in again.output and again.exit_code == 0

    monkeypatch.setenv("KBENCH_DATA_ROOT", str(root / "gone"))
    splits = build_splits(config("cifar10"), model_info("resnet50"), store)
    shard = Path(splits.train.items[0][0])
    good = shard.read_bytes()
    shard.write_bytes(b"corrupt" + good[7:])
    again = build_splits(config("cifar10"), model_info("resnet50"), store)
    assert shard.read_bytes() == good and len(again.train) == len(splits.train)


def test_frac_stages_a_subset(staged):
    result, store, _ = staged("dtd", "--frac", "0.5")
    assert result.exit_code == 0, result.output
    manifest = read_json(store, "datasets/dtd/manifest.json")
    assert manifest["frac"] == 0.5 and manifest["splits"]["train"]["samples"] == 24


def test_missing_local_copy_is_one_line(tmp_path, s3_env):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(
        cli,
        ["data", "stage", "cifar10", "--store", s3_env.uri("x"), "--root", str(tmp_path / "empty")],
    )
    assert result.exit_code == 2
    assert result.output.startswith("Error: no local copy of cifar10 under")
    assert "or stage it with --download" in result.output
    assert result.output.count("\n") == 1
    assert "Traceback" not in result.output
