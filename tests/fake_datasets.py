"""The study's torchvision datasets through their real loaders, on tiny fake copies written in
the exact on-disk layout each loader reads (as torchvision's own dataset tests do). Only the
md5 checks of the real archives are bypassed, nothing else.

Class order: DTD and Food101 sort their class folders, so writing every real class in shuffled
order checks that the prompt file lists them in the loader's label order. CIFAR, STL10 and
FGVCAircraft take their names from a metadata file, which the fake copy writes from the prompt
file itself: for them the test checks the loading, not the order.
"""

from __future__ import annotations

import json
import pickle
import random

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat
from torchvision import datasets as tv

from kbench.jobs.datasets import build_splits
from kbench.registry import model_info, prompts
from kbench.spec import TrainConfig, load_grid

TRAIN, TEST = 6, 4  # images per split in each fake copy


def jpeg(path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def folder_names(dataset: str) -> list[str]:
    """The real class names as the dataset's own files spell them."""
    return [c.replace(" ", "_") for c in prompts(dataset)[0]]


def fake_cifar(root, dataset):
    folder, meta, key, label_key = {
        "cifar10": ("cifar-10-batches-py", "batches.meta", "label_names", "labels"),
        "cifar100": ("cifar-100-python", "meta", "fine_label_names", "fine_labels"),
    }[dataset]
    base = root / folder
    base.mkdir()
    names = folder_names(dataset)
    files = {
        "cifar10": [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"],
        "cifar100": ["train", "test"],
    }[dataset]
    rng = np.random.default_rng(0)
    for name in files:
        n = TEST if "test" in name else TRAIN
        batch = {
            "data": rng.integers(0, 255, (n, 3072), dtype=np.uint8),
            label_key: [i % len(names) for i in range(n)],
        }
        (base / name).write_bytes(pickle.dumps(batch))
    (base / meta).write_bytes(pickle.dumps({key: names}))
    trains = TRAIN * (5 if dataset == "cifar10" else 1)
    return trains, TEST


def fake_dtd(root, dataset):
    names = folder_names("dtd")
    data = root / "dtd" / "dtd"
    for split, count in [("train", TRAIN), ("test", TEST), ("val", 1)]:
        chosen = random.Random(split).sample(names, len(names))  # every class, shuffled
        lines = []
        for i in range(count * 8):
            cls = chosen[i % len(chosen)]
            lines.append(f"{cls}/{cls}_{split}_{i}.jpg")
            jpeg(data / "images" / cls / f"{cls}_{split}_{i}.jpg", i)
        (data / "labels").mkdir(parents=True, exist_ok=True)
        (data / "labels" / f"{split}1.txt").write_text("\n".join(lines) + "\n")
    return TRAIN * 8, TEST * 8


def fake_fgvc(root, dataset):
    base = root / "fgvc-aircraft-2013b" / "data"
    names = prompts("fgvc-aircraft")[0]
    base.mkdir(parents=True)
    (base / "variants.txt").write_text("\n".join(names) + "\n")
    for split, count in [("trainval", TRAIN), ("test", TEST)]:
        lines = []
        for i in range(count):
            image = f"{split}{i:04d}"
            jpeg(base / "images" / f"{image}.jpg", i)
            lines.append(f"{image} {names[(i * 7) % len(names)]}")
        (base / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")
    return TRAIN, TEST


def fake_flowers(root, dataset):
    base = root / "flowers-102"
    total = TRAIN + TEST + 2
    for image_id in range(1, total + 1):
        jpeg(base / "jpg" / f"image_{image_id:05d}.jpg", image_id)
    labels = np.array([(i % 102) + 1 for i in range(total)])  # 1-based, as in the real file
    savemat(base / "imagelabels.mat", {"labels": labels})
    ids = np.arange(1, total + 1)
    savemat(
        base / "setid.mat",
        {"trnid": ids[:TRAIN], "tstid": ids[TRAIN : TRAIN + TEST], "valid": ids[TRAIN + TEST :]},
    )
    return TRAIN, TEST


def fake_food(root, dataset):
    base = root / "food-101"
    names = folder_names("food101")
    for split, count in [("train", TRAIN), ("test", TEST)]:
        shuffled = random.Random(split).sample(names, len(names))
        metadata = {cls: [] for cls in shuffled}  # every class, in shuffled order
        for i in range(count * 2):
            cls = shuffled[i % len(shuffled)]
            metadata[cls].append(f"{cls}/{split}{i}")
            jpeg(base / "images" / cls / f"{split}{i}.jpg", i)
        (base / "meta").mkdir(parents=True, exist_ok=True)
        (base / "meta" / f"{split}.json").write_text(json.dumps(metadata))
    return TRAIN * 2, TEST * 2


def fake_stl10(root, dataset):
    base = root / "stl10_binary"
    base.mkdir()
    rng = np.random.default_rng(0)
    for split, count in [("train", TRAIN), ("test", TEST)]:
        rng.integers(0, 255, count * 3 * 96 * 96, dtype=np.uint8).tofile(base / f"{split}_X.bin")
        np.array([(i % 10) + 1 for i in range(count)], dtype=np.uint8).tofile(
            base / f"{split}_y.bin"
        )
    (base / "class_names.txt").write_text("\n".join(prompts("stl10")[0]) + "\n")
    (base / "fold_indices.txt").write_text(" ".join(map(str, range(TRAIN))) + "\n")
    return TRAIN, TEST


FAKES = {
    "cifar10": fake_cifar,
    "cifar100": fake_cifar,
    "dtd": fake_dtd,
    "fgvc-aircraft": fake_fgvc,
    "flowers102": fake_flowers,
    "food101": fake_food,
    "stl10": fake_stl10,
}


@pytest.fixture
def no_md5_checks(monkeypatch):
    """What torchvision's own tests bypass: the md5 of the real archives, nothing else."""
    for cls in (tv.CIFAR10, tv.CIFAR100, tv.STL10, tv.Flowers102):
        monkeypatch.setattr(cls, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tv.cifar, "check_integrity", lambda path, md5=None: True)


@pytest.mark.parametrize("dataset", sorted(FAKES))
def test_loader_reads_its_layout(dataset, tmp_path, monkeypatch, no_md5_checks):
    train_n, test_n = FAKES[dataset](tmp_path, dataset)
    monkeypatch.setenv("KBENCH_DATA_ROOT", str(tmp_path))
    config = TrainConfig.from_dict(
        {**load_grid("all").pair(f"{dataset}_resnet50").config.to_dict(), "pretrained": False}
    )
    splits = build_splits(config, model_info("resnet50"))
    assert (len(splits.train), len(splits.eval), splits.eval_split) == (train_n, test_n, "test")
    image, label = splits.eval[0]
    assert tuple(image.shape) == (3, 224, 224)
    assert 0 <= label < len(splits.classes) == len(prompts(dataset)[0])
    loaded = getattr(splits.train, "classes", None)
    if loaded is not None:  # the loader's own label order against the prompt file's
        differ = {
            i
            for i, (a, b) in enumerate(zip(loaded, splits.classes, strict=True))
            if a.replace("_", " ") != b
        }
        assert differ == RENAMED.get(dataset, set()), [(i, loaded[i]) for i in differ]


# OpenAI's prompt names rename three of torchvision's Flowers102 labels in place ('globe-flower',
# 'pink-yellow dahlia?', 'ball moss' -> 'globe flower', 'pink and yellow dahlia', 'air plant');
# the order is the same.
RENAMED = {"flowers102": {15, 59, 92}}
