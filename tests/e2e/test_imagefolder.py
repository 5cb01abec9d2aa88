"""A user's own dataset: an ImageFolder image_tree, from a local folder and from an S3 prefix, with
class names that hold spaces and non-ASCII letters."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw
from support.fake_datasets import imagefolder_config

from kbench.cli.main import cli
from kbench.errors import ConfigError
from kbench.jobs.datasets import build_splits
from kbench.records import staged_name
from kbench.registry import model_info
from kbench.runs import list_runs
from kbench.storage import open_store, read_json


def test_same_tree_under_an_s3_prefix(image_tree, s3_env, scratch):
    uri = s3_env.uri("datasets/my-images")
    store = open_store(uri)
    for file in sorted(p for p in image_tree.rglob("*") if p.is_file()):
        store.put_file(file.relative_to(image_tree).as_posix(), str(file))

    remote = build_splits(imagefolder_config(uri), model_info("clip-tiny"))
    local = build_splits(imagefolder_config(str(image_tree)), model_info("clip-tiny"))
    assert remote.classes == local.classes
    # train/ less the hold-out validation split (val/ is this tree's test split): the same
    # images held out wherever the tree is read from
    remote_tree, local_tree = remote.train.dataset.dataset, local.train.dataset.dataset
    assert remote_tree.targets == local_tree.targets
    assert remote.val.dataset.indices == local.val.dataset.indices
    cached = Path(remote_tree.samples[0][0])
    assert cached.is_relative_to(scratch)  # the node's scratch disk
    assert cached.read_bytes() == Path(local_tree.samples[0][0]).read_bytes()
    before = cached.stat().st_mtime_ns
    build_splits(
        imagefolder_config(uri), model_info("clip-tiny")
    )  # a restart keeps the node's copy
    assert cached.stat().st_mtime_ns == before


def test_a_staged_tree_serves_runs_whose_data_is_that_folder(image_tree, s3_env, scratch, tmp_path):
    uri = s3_env.uri(f"store-{tmp_path.name}")
    args = ["data", "stage", "imagefolder", "--store", uri, "--shard-samples", "10"]
    result = CliRunner().invoke(cli, [*args, "--root", str(image_tree)])
    assert result.exit_code == 0, result.output
    assert result.output.rstrip().endswith(f"runs with data: {image_tree} read it")
    local = build_splits(imagefolder_config(str(image_tree)), model_info("clip-tiny"))

    image_tree.rename(tmp_path / "elsewhere")  # a pod has no copy of the folder, only the store
    staged = build_splits(
        imagefolder_config(str(image_tree)), model_info("clip-tiny"), open_store(uri)
    )
    assert (staged.classes, staged.eval_split) == (local.classes, "val")
    assert staged.train.dataset.dataset.targets == local.train.dataset.dataset.targets
    assert staged.val.dataset.indices == local.val.dataset.indices  # the staged hold-out's
    assert len(staged.eval) == len(local.eval) == 24
    with pytest.raises(ConfigError, match="no train/ folder in"):  # another folder is not it
        build_splits(
            imagefolder_config(str(tmp_path / "other")), model_info("clip-tiny"), open_store(uri)
        )


def test_train_on_it_end_to_end(image_tree, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    grid = tmp_path / "mine.yaml"
    grid.write_text(
        f"datasets: [imagefolder]\nmodels: {{clip-tiny: {{epochs: 2, batch_size: 24}}}}\n"
        f"defaults: {{data: {json.dumps(str(image_tree))}}}\n"
    )
    store = str(tmp_path / "store")
    result = CliRunner().invoke(cli, ["submit", "--grid", str(grid), "--store", store])
    assert result.exit_code == 0, result.output
    report = CliRunner().invoke(
        cli, ["collect", "--store", store, "--out-dir", str(tmp_path / "r")]
    )
    assert report.exit_code == 0, report.output
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    (pair,) = results["pairs"]
    assert pair["pair"] == "imagefolder_clip-tiny" and pair["state"] == "succeeded"
    assert [e["samples"] for e in pair["epochs"]] == [24, 24, 24]


@pytest.mark.parametrize("workers", [0, 1])
def test_a_truncated_jpeg_is_named_in_one_line_and_fails_its_pair(
    image_tree, tmp_path, monkeypatch, kbench, workers
):
    """Read by a DataLoader worker or by the trainer itself: the pair fails as a bad input
    (the job's exit code 2), and `submit` and `status` name the file in one line, with no
    traceback; `submit` exits 3, a pair having failed."""
    monkeypatch.chdir(tmp_path)
    good = image_tree / "train" / "tabby_cat" / "000.png"
    broken = image_tree / "train" / "tabby_cat" / "broken.jpg"
    buffer = io.BytesIO()
    Image.open(good).convert("RGB").save(buffer, format="JPEG")
    broken.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])  # cut mid-scan
    grid = tmp_path / "mine.yaml"
    grid.write_text(
        # every training image in one step: 73, less the 6 held out to validate on
        "datasets: [imagefolder]\nmodels: {clip-tiny: {epochs: 1, batch_size: 67}}\n"
        f"defaults: {{data: {json.dumps(str(image_tree))}, workers: {workers}}}\n"
    )
    store = str(tmp_path / "store")
    result = kbench("submit", "--grid", str(grid), "--store", store)
    assert result.exit_code == 3, result.output
    (failed,) = [line for line in result.output.splitlines() if "FAILED" in line]
    assert f"{broken}: not an image kbench can read (" in failed
    assert "Traceback" not in result.output
    status = kbench("status", "--store", store, "-o", "json")
    (pair,) = json.loads(status.stdout)["pairs"]
    assert pair["state"] == "failed" and str(broken) in pair["detail"]
    assert "\n" not in pair["detail"] and "Traceback" not in pair["detail"]
    local = read_json(open_store(store), f"runs/{pair_run(store)}/imagefolder_clip-tiny/local.json")
    assert local["returncode"] == 2  # a bad input: no retry mends it


def pair_run(store: str) -> str:
    (run,) = list_runs(open_store(store))
    return run.run_id


def _picture(width: int, height: int) -> Image.Image:
    """Smooth shading with hard-edged shapes: what a downscale is judged on."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // width, y * 255 // height, (x + y) * 127 // (width + height)], -1)
    image = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    draw.ellipse((width // 5, height // 4, width // 2, height // 2), fill=(250, 30, 40))
    draw.rectangle((width // 2, height // 2, 4 * width // 5, 5 * height // 6), fill=(20, 200, 90))
    return image


def test_max_short_side_stores_large_images_smaller_and_runs_say_so(tmp_path, s3_env, scratch):
    # name -> (size, size as staged at a short side of 448)
    images = {
        "landscape.jpg": ((1280, 960), (597, 448)),
        "portrait.jpg": ((600, 900), (448, 672)),
        "small.jpg": ((300, 200), (300, 200)),  # already within: the original file
        "scan.png": ((700, 500), (627, 448)),  # not a JPEG: reduced and kept lossless
        "strip.png": ((600, 300), (600, 300)),  # within, too large for .npy: the original
    }
    image_tree = tmp_path / "tree"
    for split in ("train", "val"):
        (image_tree / split / "things").mkdir(parents=True)
        for name, ((width, height), _) in images.items():
            # PNGs at another compression level than PIL's default: a re-encoding shows
            _picture(width, height).save(
                image_tree / split / "things" / name, quality=90, compress_level=1
            )
    uri = s3_env.uri(f"store-{tmp_path.name}")
    args = ["data", "stage", "imagefolder", "--store", uri, "--root", str(image_tree)]
    result = CliRunner().invoke(cli, [*args, "--max-short-side", "448"])
    assert result.exit_code == 0, result.output

    store = open_store(uri)
    splits = build_splits(imagefolder_config(str(image_tree)), model_info("clip-tiny"), store)
    assert splits.staging == {"frac": 1.0, "max_short_side": 448}  # every epoch record says so
    staged = splits.eval.dataset
    for i, (name, (_, reduced)) in enumerate(sorted(images.items())):
        image, _ = staged[i]
        pixels = np.asarray(image) if isinstance(image, Image.Image) else image.permute(1, 2, 0)
        assert pixels.shape == (reduced[1], reduced[0], 3), name
        stored_as = staged.items[i][5].rsplit(".", 1)[1]
        assert stored_as == ("png" if name.endswith(".png") else "jpg"), name
        with Image.open(image_tree / "val" / "things" / name) as file:
            expected = np.asarray(file.convert("RGB").resize(reduced, Image.Resampling.BICUBIC))
        difference = np.abs(np.asarray(pixels, dtype=np.int16) - expected).mean()
        assert difference < 2.5, (name, difference)  # the same picture, within JPEG's loss
    for kept in ("small.jpg", "strip.png"):
        path, offset, size, *_ = staged.items[sorted(images).index(kept)]
        with open(path, "rb") as shard:
            shard.seek(offset)
            assert shard.read(size) == (image_tree / "val" / "things" / kept).read_bytes(), kept

    manifest = read_json(
        store, "datasets/" + staged_name("imagefolder", str(image_tree)) + "/manifest.json"
    )
    assert manifest["max_short_side"] == 448 and "resized to it" in manifest["stored"]
    listed = CliRunner().invoke(cli, ["data", "list", "--store", uri])
    header, row = [re.split(r"\s{2,}", line) for line in listed.output.splitlines()]
    assert dict(zip(header, row, strict=True))["SHORT SIDE"] == "448"
