"""A user's own dataset: an ImageFolder tree, from a local folder and from an S3 prefix, with
class names that hold spaces and non-ASCII letters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from kbench.cli.main import cli
from kbench.errors import ConfigError
from kbench.jobs.datasets import build_splits
from kbench.jobs.synthetic import SyntheticShapes
from kbench.registry import model_info
from kbench.spec import TrainConfig, load_grid, parse_grid
from kbench.storage import open_store

# Folder names as a user writes them; labels follow their sorted order.
FOLDERS = {"crème_brûlée": 0, "golden retriever": 2, "tabby_cat": 4}  # -> synthetic class ids


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "my-images"
    for split, count in [("train", 24), ("val", 8)]:
        shapes = SyntheticShapes("train" if split == "train" else "test", image_size=32)
        for folder, label in FOLDERS.items():
            (root / split / folder).mkdir(parents=True)
            for i in range(count):
                shapes.draw(i, label).save(root / split / folder / f"{i:03d}.png")
    return root


def config(data: str, **extra) -> TrainConfig:
    base = load_grid("smoke").pair("synthetic_clip-tiny").config.to_dict()
    return TrainConfig.from_dict(
        {
            **base,
            "dataset": "imagefolder",
            "data": data,
            "train_limit": None,
            "eval_limit": None,
            **extra,
        }
    )


def test_local_tree(tree):
    splits = build_splits(config(str(tree)), model_info("clip-tiny"))
    assert splits.classes == ["crème brûlée", "golden retriever", "tabby cat"]
    assert (len(splits.train), len(splits.eval), splits.eval_split) == (72, 24, "val")
    assert sorted(set(splits.train.dataset.targets)) == [0, 1, 2]
    path, label = splits.eval.dataset.samples[0]
    assert Path(path).parent.name == "crème_brûlée" and label == 0
    assert "{}" in splits.templates[0]
    custom = build_splits(
        config(str(tree), templates=["a photo of my {}."]), model_info("clip-tiny")
    )
    assert custom.templates == ["a photo of my {}."]


def test_same_tree_under_an_s3_prefix(tree, s3_env, scratch):
    uri = s3_env.uri("datasets/my-images")
    store = open_store(uri)
    for file in sorted(p for p in tree.rglob("*") if p.is_file()):
        store.put_file(file.relative_to(tree).as_posix(), str(file))

    remote = build_splits(config(uri), model_info("clip-tiny"))
    local = build_splits(config(str(tree)), model_info("clip-tiny"))
    assert remote.classes == local.classes
    assert remote.train.dataset.targets == local.train.dataset.targets
    cached = Path(remote.train.dataset.samples[0][0])
    assert cached.is_relative_to(scratch)  # the node's scratch disk
    assert cached.read_bytes() == Path(local.train.dataset.samples[0][0]).read_bytes()
    before = cached.stat().st_mtime_ns
    build_splits(config(uri), model_info("clip-tiny"))  # a restart keeps the node's copy
    assert cached.stat().st_mtime_ns == before


def test_a_staged_tree_serves_runs_whose_data_is_that_folder(tree, s3_env, scratch, tmp_path):
    uri = s3_env.uri(f"store-{tmp_path.name}")
    args = ["data", "stage", "imagefolder", "--store", uri, "--shard-samples", "10"]
    result = CliRunner().invoke(cli, [*args, "--root", str(tree)])
    assert result.exit_code == 0, result.output
    assert result.output.rstrip().endswith(f"runs with data: {tree} read it")
    local = build_splits(config(str(tree)), model_info("clip-tiny"))

    tree.rename(tmp_path / "elsewhere")  # a pod has no copy of the folder, only the store
    staged = build_splits(config(str(tree)), model_info("clip-tiny"), open_store(uri))
    assert (staged.classes, staged.eval_split) == (local.classes, "val")
    assert staged.train.dataset.targets == local.train.dataset.targets
    assert len(staged.eval) == len(local.eval) == 24
    with pytest.raises(ConfigError, match="no train/ folder in"):  # another folder is not it
        build_splits(config(str(tmp_path / "other")), model_info("clip-tiny"), open_store(uri))


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("nothing", "no train/ folder in"),
        ("no-val", "no val/ or test/ folder in"),
        ("other-classes", "train/ and val/ must hold the same class folders"),
    ],
)
def test_bad_trees_say_what_to_fix(tree, layout, message):
    import shutil

    if layout == "nothing":
        shutil.rmtree(tree / "train")
    elif layout == "no-val":
        shutil.rmtree(tree / "val")
    else:
        shutil.rmtree(tree / "val" / "tabby_cat")
    with pytest.raises(ConfigError, match=message):
        build_splits(config(str(tree)), model_info("clip-tiny"))


def test_grid_checks_data(tmp_path):
    with pytest.raises(ConfigError, match="needs `data`: a folder or s3://bucket/prefix"):
        parse_grid("datasets: [imagefolder]\nmodels: [clip-tiny]", "g.yaml", "g")
    with pytest.raises(ConfigError, match="only the imagefolder dataset reads `data`"):
        parse_grid("datasets: [synthetic]\nmodels: [clip-tiny]\ndefaults: {data: x}", "g.yaml", "g")
    with pytest.raises(ConfigError, match="every template needs {} for the class name"):
        parse_grid(
            "datasets: [imagefolder]\nmodels: [clip-tiny]\n"
            "defaults: {data: x, templates: [a photo]}",
            "g.yaml",
            "g",
        )


def test_grid_paths_start_from_the_grid_file_and_a_template_file_is_read(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    (project / "prompts.txt").write_text(
        "# my prompts\na photo of my {}.\n\n  a blurry photo of a {}.\n"
    )
    (project / "mine.yaml").write_text(
        "datasets: [imagefolder]\nmodels: [clip-tiny]\n"
        "defaults: {data: ./my-images, templates: prompts.txt}\n"
    )
    monkeypatch.chdir(tmp_path)  # elsewhere: paths still start from the grid's folder
    config = load_grid(str(project / "mine.yaml")).pairs[0].config
    assert config.data == str(project / "my-images")
    assert config.templates == ["a photo of my {}.", "a blurry photo of a {}."]

    (project / "mine.yaml").write_text(
        "datasets: [imagefolder]\nmodels: [clip-tiny]\ndefaults: {data: x, templates: nope.txt}\n"
    )
    with pytest.raises(ConfigError, match=r"defaults: templates .*nope.txt: no such file"):
        load_grid(str(project / "mine.yaml"))


@pytest.mark.slow
def test_train_on_it_end_to_end(tree, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    grid = tmp_path / "mine.yaml"
    grid.write_text(
        f"datasets: [imagefolder]\nmodels: {{clip-tiny: {{epochs: 2, batch_size: 24}}}}\n"
        f"defaults: {{data: {json.dumps(str(tree))}}}\n"
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
