"""`kbench data stage`: a dataset's local copy, read by its real loader, written as tar shards and
a manifest to a real S3 server; then read back the way a pod does."""

from __future__ import annotations

import hashlib
import http.server
import re
import subprocess
import tarfile
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from support.builders import assert_written
from support.fake_datasets import FAKES, fake_cifar, fake_fmow, study_config
from torchvision import datasets as tv

from kbench.backends.local import LocalBackend
from kbench.cli.main import cli
from kbench.jobs.datasets import Source, build_splits, raw_splits
from kbench.records import METRICS, EpochRecord, pair_key
from kbench.registry import dataset_info, model_info, prompts
from kbench.runs import Run, create_run
from kbench.spec import parse_grid
from kbench.staging import datasets as staging
from kbench.storage import open_store, read_json


@pytest.fixture
def staged(tmp_path, s3_env, no_md5_checks, scratch):
    made = set()

    def stage(dataset: str, *extra: str):
        root = tmp_path / "data"
        root.mkdir(exist_ok=True)
        if dataset not in made:  # the local copy, written once
            FAKES[dataset](root, dataset)
            made.add(dataset)
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


@pytest.mark.parametrize("dataset", sorted(FAKES))
def test_stage_then_read_like_a_pod(staged, dataset, monkeypatch):
    result, store, root = staged(dataset)
    assert result.exit_code == 0, result.output
    manifest = read_json(store, f"datasets/{dataset}/manifest.json")
    assert (manifest["classes"], manifest["templates"]) == prompts(dataset)
    assert manifest["groups"] == list(dataset_info(dataset).groups)
    monkeypatch.setenv("KBENCH_DATA_ROOT", str(root))
    raw = raw_splits(Source.of(study_config(dataset)))
    assert set(manifest["splits"]) == set(raw)  # every split, so any eval_split can be chosen
    for split, samples in raw.items():
        entry = manifest["splits"][split]
        assert entry["samples"] == len(samples)
        assert len(entry["shards"]) == -(-len(samples) // 4)
        for shard in entry["shards"]:
            assert store.read(shard["key"] + ".sha256").decode() == shard["sha256"]

    monkeypatch.setenv("KBENCH_DATA_ROOT", str(root / "gone"))  # pods have no local copy
    # The layout alone (some fakes have a class of one image: no hold-out can be drawn)
    splits = build_splits(study_config(dataset, select_on="last"), model_info("resnet50"), store)
    train_split = dataset_info(dataset).train_splits[0]
    assert (len(splits.train), len(splits.eval)) == (len(raw[train_split]), len(raw["test"]))
    staged_test = splits.eval.dataset  # the shards, before the model's transforms
    for i in range(len(raw["test"])):
        (image, *label_group), (staged_image, *staged_label_group) = raw["test"][i], staged_test[i]
        assert staged_label_group == label_group
        if isinstance(staged_image, torch.Tensor):  # small lossless images: staged decoded
            staged_image = staged_image.permute(1, 2, 0).numpy()
        assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(staged_image))
    # Small lossless images (CIFAR's and STL10's arrays, FMoW's PNGs) are stored decoded.
    small = max(np.asarray(raw["test"][0][0]).shape[:2]) <= staging.RAW_MAX_SIDE
    lossless = dataset in ("cifar10", "cifar100", "stl10", "fmow")
    names = {item[5].rsplit(".", 1)[1] for item in staged_test.items}
    assert names == ({"npy"} if small and lossless else names - {"npy"})
    assert "decoded uint8 arrays" in manifest["stored"]
    # The node fetched the run's two splits, not the others.
    cached = {p.name for p in Path(staged_test.items[0][0]).parent.iterdir()}
    fetched = {n.split("-")[0] for n in cached}
    assert fetched == {train_split, "test"}


def test_rerun_uploads_nothing_and_a_corrupt_or_missing_shard_is_fetched_again(staged, monkeypatch):
    first, store, root = staged("cifar10")
    assert first.exit_code == 0, first.output
    assert "train: 30 samples in 8 shard(s), 8 uploaded, 0 already there" in first.output
    holdout = read_json(store, "datasets/cifar10/manifest.json")["holdout"]
    again, _, _ = staged("cifar10")
    assert "train: 30 samples in 8 shard(s), 0 uploaded, 8 already there" in again.output
    assert again.exit_code == 0
    assert read_json(store, "datasets/cifar10/manifest.json")["holdout"] == holdout  # stable

    monkeypatch.setenv("KBENCH_DATA_ROOT", str(root / "gone"))
    config = study_config("cifar10", select_on="last")  # no hold-out: the shards as they are
    splits = build_splits(config, model_info("resnet50"), store)
    shard = Path(splits.train.dataset.items[0][0])
    good = shard.read_bytes()
    shard.write_bytes(b"corrupt" + good[7:])
    other = Path(splits.eval.dataset.items[0][0])
    other.unlink()
    again = build_splits(config, model_info("resnet50"), store)
    assert shard.read_bytes() == good and len(again.train) == len(splits.train)
    assert other.exists() and len(again.eval) == len(splits.eval)


def test_the_holdout_is_recorded_where_the_data_is_staged_and_read_from_there(staged, monkeypatch):
    """CIFAR10 has no published validation split: staging draws the hold-out of its training
    split once and records it (which images, how many, the seed); a pod validates on exactly
    those, for every model and seed, and never trains on them; a local copy draws the same."""
    result, store, root = staged("cifar10")
    assert result.exit_code == 0, result.output
    recorded = read_json(store, "datasets/cifar10/manifest.json")["holdout"]
    assert {k: recorded[k] for k in ("split", "fraction", "cap", "seed", "samples")} == {
        "split": "train",
        "fraction": 0.1,
        "cap": 5000,
        "seed": 0,
        "samples": 6,  # one of each of the fake's 6 classes (5 images each)
    }
    monkeypatch.setenv("KBENCH_DATA_ROOT", str(root))
    local = build_splits(study_config("cifar10"), model_info("resnet50"))  # from the local copy
    monkeypatch.setenv("KBENCH_DATA_ROOT", str(root / "gone"))  # pods have no local copy
    for model, seed in [("resnet50", 0), ("resnet50", 1), ("clip-vit-b32", 2)]:
        splits = build_splits(study_config("cifar10", seed=seed), model_info(model), store)
        held, kept = splits.val.dataset.indices, splits.train.dataset.indices
        assert (splits.val_split, list(held)) == ("holdout", recorded["indices"])
        assert set(held).isdisjoint(kept) and len(held) + len(kept) == 30
    assert list(local.val.dataset.indices) == recorded["indices"]


def test_an_interrupted_stage_resumes_with_the_missing_shards(staged):
    first, store, _ = staged("cifar10")
    assert first.exit_code == 0, first.output
    # As if stopped midway: the manifest (written last) and the last shards never arrived.
    for name in (
        "manifest.json",
        "train-00006.tar",
        "train-00006.tar.sha256",
        "train-00007.tar.sha256",  # its shard arrived, its checksum not: not trusted
    ):
        store.delete(f"datasets/cifar10/{name}")
    resumed, _, _ = staged("cifar10")
    assert resumed.exit_code == 0, resumed.output
    assert "train: 30 samples in 8 shard(s), 2 uploaded, 6 already there" in resumed.output
    assert "test: 4 samples in 1 shard(s), 0 uploaded, 1 already there" in resumed.output
    assert read_json(store, "datasets/cifar10/manifest.json")["splits"]["train"]["samples"] == 30


def test_frac_stages_a_subset_and_data_list_shows_it(staged):
    result, store, _ = staged("dtd", "--frac", "0.5")
    assert result.exit_code == 0, result.output
    manifest = read_json(store, "datasets/dtd/manifest.json")
    assert manifest["frac"] == 0.5 and manifest["splits"]["train"]["samples"] == 24
    listed = CliRunner().invoke(cli, ["data", "list", "--store", store.uri])
    assert listed.exit_code == 0, listed.output
    header, row = [re.split(r"\s{2,}", line) for line in listed.output.splitlines()]
    assert header == ["NAME", "SPLITS", "FRAC", "SHORT SIDE", "SOURCE", "CREATED"]
    assert row[:4] == ["dtd", "train 24, test 16, val 4", "0.5", "original"]
    assert row[4].startswith("torchvision DTD (partition 1) from ")


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


def test_a_pod_trains_on_staged_fmow_and_reports_worst_region(staged, monkeypatch):
    """Two torchrun processes read the staged shards (no local copy) and all-reduce the
    per-region counts: the records hold every OOD test sample's region once."""
    result, store, root = staged("fmow")
    assert result.exit_code == 0, result.output
    monkeypatch.setenv("KBENCH_DATA_ROOT", str(root / "gone"))
    grid = "datasets: [fmow]\nmodels: {clip-tiny: {epochs: 1, batch_size: 4, workers: 0}}"
    grid = parse_grid(grid, "g.yaml", "g")
    create_run(store, Run.new("r", grid, "local"), grid.pairs)
    command = LocalBackend(nproc_per_node=2).command(store, "r", "fmow_clip-tiny")
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    epochs = read_json(store, pair_key("r", "fmow_clip-tiny", METRICS))["epochs"]
    assert [r["epoch"] for r in epochs] == [0, 1]  # zero-shot, then the trained epoch
    test = raw_splits_of(root)["test"]
    regions = dataset_info("fmow").groups
    for record in epochs:
        assert_written(EpochRecord, record)
        assert (record["split"], record["headline_metric"]) == ("test", "worst_region")
        assert record["samples"] == len(test)
        counts = {name: g["samples"] for name, g in record["per_group"].items()}
        assert counts == {name: test.groups.count(i) for i, name in enumerate(regions)}
        scored = [g["top1"] for g in record["per_group"].values() if g["samples"]]
        assert record["headline"] == record["worst_region"] == min(scored)


def raw_splits_of(root):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KBENCH_DATA_ROOT", str(root))
        return raw_splits(Source.of(study_config("fmow")))


@pytest.fixture
def archive_host(tmp_path):
    """A local HTTP server: where a dataset's host would be (no internet in tests)."""
    served = tmp_path / "host"
    served.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_fetches_the_archive_then_stages(tmp_path, s3_env, archive_host, monkeypatch):
    """--download runs torchvision's own download and checks: CIFAR10's class points at a fake
    archive on a local host, with that archive's checksums (nothing is bypassed)."""
    served, url = archive_host
    made = tmp_path / "made"
    made.mkdir()
    fake_cifar(made, "cifar10")
    with tarfile.open(served / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(made / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    folder = made / "cifar-10-batches-py"

    def md5(path) -> str:
        return hashlib.md5(path.read_bytes()).hexdigest()

    cls = tv.CIFAR10
    monkeypatch.setattr(cls, "url", f"{url}/cifar-10-python.tar.gz")
    monkeypatch.setattr(cls, "tgz_md5", md5(served / "cifar-10-python.tar.gz"))
    monkeypatch.setattr(cls, "train_list", [[n, md5(folder / n)] for n, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[n, md5(folder / n)] for n, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5(folder / "batches.meta")})
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")

    root, uri = tmp_path / "data", s3_env.uri(f"download-{tmp_path.name}")
    args = ["data", "stage", "cifar10", "--store", uri, "--root", str(root)]
    missing = CliRunner().invoke(cli, args)
    assert missing.exit_code == 2 and "--download" in missing.output  # no copy, no download
    result = CliRunner().invoke(cli, [*args, "--download"])
    assert result.exit_code == 0, result.output
    assert (root / "cifar-10-batches-py" / "data_batch_1").read_bytes() == (
        folder / "data_batch_1"
    ).read_bytes()
    manifest = read_json(open_store(uri), "datasets/cifar10/manifest.json")
    assert {s: e["samples"] for s, e in manifest["splits"].items()} == {"train": 30, "test": 4}


def test_download_of_a_wilds_dataset_then_stages(tmp_path, s3_env, archive_host, monkeypatch):
    """--download runs WILDS' own download and extraction, from a local host holding a fake
    FMoW archive; an unreachable host is a one-line error."""
    from wilds.datasets.fmow_dataset import FMoWDataset

    served, url = archive_host
    made = tmp_path / "made"
    made.mkdir()
    train_n, test_n = fake_fmow(made, "fmow")
    with tarfile.open(served / "fmow.tar.gz", "w:gz") as tar:
        for path in sorted((made / "fmow_v1.1").iterdir()):
            tar.add(path, arcname=path.name)  # WILDS' archives hold the folder's contents
    size = (served / "fmow.tar.gz").stat().st_size
    versions = {"1.1": {"download_url": f"{url}/fmow.tar.gz", "compressed_size": size}}
    monkeypatch.setattr(FMoWDataset, "_versions_dict", versions)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")

    root, uri = tmp_path / "data", s3_env.uri(f"download-{tmp_path.name}")
    args = ["data", "stage", "fmow", "--store", uri, "--root", str(root), "--download"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    manifest = read_json(open_store(uri), "datasets/fmow/manifest.json")
    assert manifest["splits"]["train"]["samples"] == train_n
    assert manifest["splits"]["test"]["samples"] == test_n

    dead = {"1.1": {"download_url": "http://127.0.0.1:9/fmow.tar.gz", "compressed_size": size}}
    monkeypatch.setattr(FMoWDataset, "_versions_dict", dead)
    failed = CliRunner().invoke(cli, [*args[:-3], "--root", str(tmp_path / "other"), "--download"])
    assert failed.exit_code == 2
    (error,) = [line for line in failed.output.splitlines() if line.startswith("Error:")]
    assert error.startswith("Error: downloading fmow into ") and "failed" in error
