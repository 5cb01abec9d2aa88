"""A user's own dataset: an ImageFolder image_tree, from a local folder and from an S3 prefix, with
class names that hold spaces and non-ASCII letters."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from support.fake_datasets import imagefolder_config

from kbench.cli.main import cli
from kbench.errors import ConfigError, UnreadableImage
from kbench.jobs.datasets import build_splits, labels_of
from kbench.registry import model_info
from kbench.spec import load_grid, parse_grid


def test_local_tree(image_tree):
    splits = build_splits(imagefolder_config(str(image_tree)), model_info("clip-tiny"))
    assert splits.classes == ["crème brûlée", "golden retriever", "tabby cat"]
    # val/ is the only held-out folder: it is the test split, and validation is a hold-out of
    # train/ (2 of each class's 24 images)
    assert (len(splits.train), len(splits.eval), splits.eval_split) == (66, 24, "val")
    assert (len(splits.val), splits.val_split) == (6, "holdout")
    assert sorted(set(labels_of(splits.train.dataset))) == [0, 1, 2]
    path, label = splits.eval.dataset.samples[0]
    assert Path(path).parent.name == "crème_brûlée" and label == 0
    assert "{}" in splits.templates[0]
    custom = build_splits(
        imagefolder_config(str(image_tree), templates=["a photo of my {}."]),
        model_info("clip-tiny"),
    )
    assert custom.templates == ["a photo of my {}."]


def test_a_broken_image_is_named_whether_trained_on_or_held_out(image_tree):
    broken = image_tree / "train" / "tabby_cat" / "000.png"
    broken.write_bytes(b"not a PNG")
    splits = build_splits(imagefolder_config(str(image_tree)), model_info("clip-tiny"))
    found = 0
    for part in (splits.train, splits.val):
        subset = part.dataset  # Transformed(Subset(ImageFolder))
        paths = [subset.dataset.samples[i][0] for i in subset.indices]
        if str(broken) in paths:
            found += 1
            with pytest.raises(UnreadableImage, match=f"^{broken}: not an image kbench can read"):
                part[paths.index(str(broken))]
    assert found == 1


def test_a_tree_with_val_and_test_folders_validates_on_val(image_tree):
    import shutil

    shutil.copytree(image_tree / "val", image_tree / "test")
    splits = build_splits(imagefolder_config(str(image_tree)), model_info("clip-tiny"))
    assert (splits.eval_split, splits.val_split) == ("test", "val")
    assert (len(splits.train), len(splits.val), len(splits.eval)) == (72, 24, 24)


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("nothing", "no train/ folder in"),
        ("no-val", "no val/ or test/ folder in"),
        ("other-classes", "train/ and val/ must hold the same class folders"),
    ],
)
def test_bad_trees_say_what_to_fix(image_tree, layout, message):
    import shutil

    if layout == "nothing":
        shutil.rmtree(image_tree / "train")
    elif layout == "no-val":
        shutil.rmtree(image_tree / "val")
    else:
        shutil.rmtree(image_tree / "val" / "tabby_cat")
    with pytest.raises(ConfigError, match=message):
        build_splits(imagefolder_config(str(image_tree)), model_info("clip-tiny"))


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


def test_max_short_side_below_32_is_refused(tmp_path, image_tree):
    args = [
        "data",
        "stage",
        "imagefolder",
        "--store",
        str(tmp_path / "s"),
        "--root",
        str(image_tree),
    ]
    result = CliRunner().invoke(cli, [*args, "--max-short-side", "16"])
    assert result.exit_code == 2 and "--max-short-side" in result.output
    assert not (tmp_path / "s").exists()
