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

import numpy as np
import pytest
from support.fake_datasets import FAKES, FMOW_COUNTRIES, study_config

from kbench.errors import ConfigError
from kbench.jobs.datasets import Source, build_splits, raw_splits
from kbench.registry import dataset_info, model_info, prompts, readable
from kbench.spec import parse_grid

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
    config = study_config(dataset)
    splits = build_splits(config, model_info("resnet50"))
    assert (len(splits.train), len(splits.eval), splits.eval_split) == (train_n, test_n, "test")
    image, label, *group = splits.eval[0]
    assert tuple(image.shape) == (3, 224, 224)
    assert 0 <= label < len(splits.classes) == dataset_info(dataset).num_classes
    assert splits.classes == prompts(dataset)[0] and splits.templates == prompts(dataset)[1]
    assert len(group) == (1 if dataset == "fmow" else 0)  # FMoW's samples carry their region
    loaded = getattr(
        raw_splits(Source.of(config))[dataset_info(dataset).train_split], "classes", None
    )
    if loaded is not None:  # the loader's own label order against the prompt file's
        differ = {
            i
            for i, (a, b) in enumerate(zip(loaded, splits.classes, strict=True))
            if readable(a) != readable(b)
        }
        assert differ == RENAMED.get(dataset, set()), [(i, loaded[i]) for i in differ]


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
    fake("dtd")
    splits = build_splits(study_config("dtd", eval_split="val"), model_info("resnet50"))
    assert (splits.eval_split, len(splits.eval)) == ("val", 8)


def test_unknown_eval_split_is_a_config_error():
    grid = "datasets: [cifar10]\nmodels: [resnet50]\ndefaults: {eval_split: val}"
    with pytest.raises(ConfigError, match="eval_split: cifar10 has test, got 'val'"):
        parse_grid(grid, "g.yaml", "g")


def test_an_fmow_region_kbench_does_not_know_is_an_error(fake, tmp_path):
    fake("fmow")
    mapping = tmp_path / "fmow_v1.1" / "country_code_mapping.csv"
    mapping.write_text(mapping.read_text().replace("Oceania", "Atlantis"))
    with pytest.raises(ConfigError, match="regions kbench does not know: Atlantis"):
        raw_splits(Source.of(study_config("fmow")))
