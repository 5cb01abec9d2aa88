"""The nine study datasets through their real loaders (torchvision's, WILDS'), on tiny fake
copies in each loader's exact on-disk layout (tests/fake_datasets.py). Only the md5 checks of
the real archives are bypassed, nothing else.

Class order: DTD and Food101 sort their class folders, so writing every real class in shuffled
order checks that the prompt file lists them in the loader's label order; FMoW's order is the
WILDS loader's own category list. CIFAR, STL10 and FGVCAircraft take their names from a metadata
file, which the fake copy writes with the real names in the real order, hard-coded in the
fixtures; Flowers102's names are torchvision's own. iWildCam's loader has no names: for it the
test checks the loading, not the order.
"""

from __future__ import annotations

import csv
from collections import Counter

import numpy as np
import pytest
from support.fake_datasets import FAKES, FMOW_COUNTRIES, study_config

from kbench.errors import ConfigError, StoreError
from kbench.jobs.datasets import Source, build_splits, raw_splits
from kbench.registry import dataset_info, model_info, prompts, readable
from kbench.spec import parse_grid
from kbench.splits import holdout, recorded_holdout

# OpenAI's prompt names rename three of torchvision's Flowers102 labels in place ('globe-flower',
# 'pink-yellow dahlia?', 'ball moss' -> 'globe flower', 'pink and yellow dahlia', 'air plant');
# the order is the same.
RENAMED = {"flowers102": {15, 59, 92}}


@pytest.fixture
def fake(tmp_path, monkeypatch, no_md5_checks):
    monkeypatch.setenv("KBENCH_DATA_ROOT", str(tmp_path))
    return lambda dataset: FAKES[dataset](tmp_path, dataset)


@pytest.mark.parametrize("dataset", sorted(FAKES))
def test_loader_reads_its_layout(dataset, fake):
    train_n, test_n = fake(dataset)
    config = study_config(dataset, select_on="last")  # the layout alone: no validation split
    splits = build_splits(config, model_info("resnet50"))
    assert (len(splits.train), len(splits.eval), splits.eval_split) == (train_n, test_n, "test")
    image, label, *group = splits.eval[0]
    assert tuple(image.shape) == (3, 224, 224)
    assert 0 <= label < len(splits.classes) == dataset_info(dataset).num_classes
    assert splits.classes == prompts(dataset)[0] and splits.templates == prompts(dataset)[1]
    assert len(group) == (1 if dataset == "fmow" else 0)  # FMoW's samples carry their region
    loaded = getattr(
        raw_splits(Source.of(config))[dataset_info(dataset).train_splits[0]], "classes", None
    )
    if loaded is not None:  # the loader's own label order against the prompt file's
        differ = {
            i
            for i, (a, b) in enumerate(zip(loaded, splits.classes, strict=True))
            if readable(a) != readable(b)
        }
        assert differ == RENAMED.get(dataset, set()), [(i, loaded[i]) for i in differ]


@pytest.mark.parametrize(
    "dataset, published",
    [("dtd", "val"), ("flowers102", "val"), ("fgvc-aircraft", "val"), ("fmow", "val")]
    + [("iwildcam", "val")],
)
def test_a_published_validation_split_is_used_where_one_exists(dataset, published, fake):
    """DTD, Flowers102 and FGVC-Aircraft validate on their val split (FGVC then trains on
    train, not trainval), FMoW and iWildCam on WILDS' OOD val; the training split keeps all of
    its images."""
    train_n, _ = fake(dataset)
    raw = raw_splits(Source.of(study_config(dataset)))
    splits = build_splits(study_config(dataset), model_info("resnet50"))
    assert (splits.val_split, len(splits.val), len(splits.train)) == (
        published,
        len(raw[published]),
        train_n,
    )
    assert splits.val[0][1] == raw[published][0][1]  # the split itself, in its order
    if dataset == "iwildcam":  # WILDS' in-distribution val, by name
        chosen = build_splits(study_config(dataset, val_split="id_val"), model_info("resnet50"))
        assert (chosen.val_split, len(chosen.val)) == ("id_val", len(raw["id_val"]))


def test_a_dataset_without_one_validates_on_a_holdout_of_its_training_split(fake):
    fake("cifar10")  # 30 training images: classes 0-5, 5 of each
    raw = raw_splits(Source.of(study_config("cifar10")))["train"]
    splits = build_splits(study_config("cifar10"), model_info("resnet50"))
    assert (splits.val_split, len(splits.val), len(splits.train)) == ("holdout", 6, 24)
    held = splits.val.dataset.indices  # Transformed(Subset(train, held))
    kept = splits.train.dataset.indices
    assert set(held).isdisjoint(kept) and set(held) | set(kept) == set(range(len(raw)))
    assert sorted(raw.targets[i] for i in held) == list(range(6))  # one of every class


def test_the_holdout_takes_a_tenth_of_every_class_capped_and_always_the_same():
    labels = [0] * 100 + [1] * 10 + [2] * 2 + [0] * 50
    held = holdout(labels)
    assert held == sorted(held) == holdout(list(labels))  # one draw, whatever calls it
    assert Counter(labels[i] for i in held) == {0: 15, 1: 1, 2: 1}  # every class, one kept
    many = [i % 10 for i in range(80_000)]  # 10% would be 8,000
    assert Counter(many[i] for i in holdout(many)) == {c: 500 for c in range(10)}
    with pytest.raises(ConfigError, match="^mine train: class cat has one image, and a valid"):
        holdout([0, 0, 1], "mine train", classes=["dog", "cat"])


@pytest.mark.parametrize(
    "recorded",
    [
        {"split": "train", "indices": [0, 5, 30]},  # beyond the 30 images
        {"split": "train", "indices": [5, 2]},  # not ascending
        {"split": "train", "indices": [2, 2]},  # repeated
        {"split": "train", "indices": ["2"]},
        {"split": "train", "indices": []},
        {"split": "train"},
        ["not", "a", "record"],
    ],
)
def test_a_tampered_holdout_in_a_manifest_is_refused(recorded):
    with pytest.raises(StoreError, match="^cifar10 train: the manifest's hold-out is not a list"):
        recorded_holdout(recorded, "train", 30, "cifar10 train")


def test_a_recorded_holdout_of_the_split_trained_on_is_used():
    assert recorded_holdout({"split": "train", "indices": [0, 29]}, "train", 30, "x") == [0, 29]
    assert recorded_holdout({"split": "train", "indices": [0]}, "trainval", 30, "x") is None
    assert recorded_holdout(None, "train", 30, "x") is None  # staged by an older kbench


def test_fmow_classes_are_in_the_wilds_label_order():
    from wilds.datasets import fmow_dataset

    assert fmow_dataset.categories == prompts("fmow")[0]


@pytest.mark.parametrize("dataset", ["fmow", "iwildcam"])
def test_wilds_samples_are_the_files_wilds_opens(dataset, fake, tmp_path):
    """Every split, sample for sample: the same label and pixels as the WILDS dataset's own
    subset gives (its get_input), so the file mapping is right, sequestered rows included."""
    import os

    from wilds.datasets.fmow_dataset import FMoWDataset
    from wilds.datasets.iwildcam_dataset import IWildCamDataset

    fake(dataset)
    cls = {"fmow": FMoWDataset, "iwildcam": IWildCamDataset}[dataset]
    reference = cls(root_dir=os.environ["KBENCH_DATA_ROOT"])
    ours = raw_splits(Source.of(study_config(dataset)))
    assert set(ours) == set(reference.split_dict)
    for split, samples in ours.items():
        theirs = reference.get_subset(split)
        assert len(samples) == len(theirs) > 0
        for i in range(len(samples)):
            image, label, *_ = samples[i]
            their_image, their_label, _ = theirs[i]
            assert label == int(their_label)
            assert np.array_equal(np.asarray(image), np.asarray(their_image.convert("RGB")))


def test_fmow_regions_come_from_the_country_mapping(fake, tmp_path):
    fake("fmow")
    with open(tmp_path / "fmow_v1.1" / "rgb_metadata.csv") as f:
        rows = list(csv.DictReader(f))
    regions = dataset_info("fmow").groups
    test = raw_splits(Source.of(study_config("fmow")))["test"]
    expected = []
    for path in test.files:
        code = rows[int(path.stem.removeprefix("rgb_img_"))]["country_code"]
        region = FMOW_COUNTRIES.get(code, "Other")
        expected.append(regions.index(region) if region in regions else -1)
    assert test.groups == expected
    assert set(expected) == {-1, 0, 1, 2, 3, 4}  # every region and "Other" occur in the fake


def test_eval_split_is_configurable(fake):
    fake("fmow")
    splits = build_splits(study_config("fmow", eval_split="id_test"), model_info("resnet50"))
    assert (splits.eval_split, len(splits.eval)) == ("id_test", 3)


@pytest.mark.parametrize("dataset", ["cifar10", "dtd"])  # DTD's val chooses, never scores
def test_unknown_eval_split_is_a_config_error(dataset):
    grid = f"datasets: [{dataset}]\nmodels: [resnet50]\ndefaults: {{eval_split: val}}"
    with pytest.raises(ConfigError, match=f"eval_split: {dataset} has test, got 'val'"):
        parse_grid(grid, "g.yaml", "g")


def test_an_fmow_region_kbench_does_not_know_is_an_error(fake, tmp_path):
    fake("fmow")
    mapping = tmp_path / "fmow_v1.1" / "country_code_mapping.csv"
    mapping.write_text(mapping.read_text().replace("Oceania", "Atlantis"))
    with pytest.raises(ConfigError, match="regions kbench does not know: Atlantis"):
        raw_splits(Source.of(study_config("fmow")))
