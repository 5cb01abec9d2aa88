"""Tiny fake copies of the nine study datasets, each written in the exact on-disk layout its
real loader reads (as torchvision's own dataset tests do): CIFAR pickles, DTD folders and label
files, FGVCAircraft text files, Flowers102 .mat files, Food101 meta files, STL10 binaries, WILDS
metadata CSVs with their images. Each `fake_*` writes under `root` and returns the number of
samples the loader should give for the study's train and eval splits."""

from __future__ import annotations

import csv
import json
import pickle
import random

import numpy as np
from PIL import Image
from scipy.io import savemat

from kbench.registry import prompts
from kbench.spec import TrainConfig, load_grid


def study_config(dataset: str, **extra) -> TrainConfig:
    """The study's ResNet50 pair of `dataset` without pretrained weights (nothing downloads)."""
    base = load_grid("all").pair(f"{dataset}_resnet50").config.to_dict()
    return TrainConfig.from_dict({**base, "pretrained": False, **extra})


TRAIN, TEST = 6, 4  # images per split in each fake copy


def image_file(path, seed: int) -> None:
    """Random pixels, saved in the format the suffix names (.jpg, .png)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def folder_names(dataset: str) -> list[str]:
    """The real class names as the dataset's own folders spell them (the loaders sort them)."""
    return [c.replace(" ", "_") for c in prompts(dataset)[0]]


# Where a loader takes its label order from a metadata file, the fake copy writes the real
# file's names in the real order, hard-coded here (facts about the datasets, not read from
# kbench's prompt file), so the label-order test compares two independent sources.
CIFAR10_LABEL_NAMES = (  # cifar-10-batches-py/batches.meta
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
)
CIFAR100_FINE_LABEL_NAMES = [  # cifar-100-python/meta
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar",
    "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile",
    "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster",
    "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster",
    "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange",
    "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy",
    "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal",
    "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar",
    "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman",
    "worm",
]  # fmt: skip
STL10_CLASS_NAMES = (  # stl10_binary/class_names.txt
    ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
)
FGVC_AIRCRAFT_VARIANTS = [  # fgvc-aircraft-2013b/data/variants.txt
    "707-320", "727-200", "737-200", "737-300", "737-400", "737-500", "737-600", "737-700",
    "737-800", "737-900", "747-100", "747-200", "747-300", "747-400", "757-200", "757-300",
    "767-200", "767-300", "767-400", "777-200", "777-300", "A300B4", "A310", "A318", "A319",
    "A320", "A321", "A330-200", "A330-300", "A340-200", "A340-300", "A340-500", "A340-600",
    "A380", "ATR-42", "ATR-72", "An-12", "BAE 146-200", "BAE 146-300", "BAE-125",
    "Beechcraft 1900", "Boeing 717", "C-130", "C-47", "CRJ-200", "CRJ-700", "CRJ-900",
    "Cessna 172", "Cessna 208", "Cessna 525", "Cessna 560", "Challenger 600", "DC-10", "DC-3",
    "DC-6", "DC-8", "DC-9-30", "DH-82", "DHC-1", "DHC-6", "DHC-8-100", "DHC-8-300", "DR-400",
    "Dornier 328", "E-170", "E-190", "E-195", "EMB-120", "ERJ 135", "ERJ 145",
    "Embraer Legacy 600", "Eurofighter Typhoon", "F-16A/B", "F/A-18", "Falcon 2000",
    "Falcon 900", "Fokker 100", "Fokker 50", "Fokker 70", "Global Express", "Gulfstream IV",
    "Gulfstream V", "Hawk T1", "Il-76", "L-1011", "MD-11", "MD-80", "MD-87", "MD-90",
    "Metroliner", "Model B200", "PA-28", "SR-20", "Saab 2000", "Saab 340", "Spitfire", "Tornado",
    "Tu-134", "Tu-154", "Yak-42",
]  # fmt: skip


def fake_cifar(root, dataset):
    folder, meta, key, label_key = {
        "cifar10": ("cifar-10-batches-py", "batches.meta", "label_names", "labels"),
        "cifar100": ("cifar-100-python", "meta", "fine_label_names", "fine_labels"),
    }[dataset]
    base = root / folder
    base.mkdir()
    names = {"cifar10": CIFAR10_LABEL_NAMES, "cifar100": CIFAR100_FINE_LABEL_NAMES}[dataset]
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
            image_file(data / "images" / cls / f"{cls}_{split}_{i}.jpg", i)
        (data / "labels").mkdir(parents=True, exist_ok=True)
        (data / "labels" / f"{split}1.txt").write_text("\n".join(lines) + "\n")
    return TRAIN * 8, TEST * 8


def fake_fgvc(root, dataset):
    base = root / "fgvc-aircraft-2013b" / "data"
    names = FGVC_AIRCRAFT_VARIANTS
    base.mkdir(parents=True)
    (base / "variants.txt").write_text("\n".join(names) + "\n")
    written = {}
    for split, count in [("train", TRAIN), ("val", 2), ("test", TEST)]:
        written[split] = []
        for i in range(count):
            image = f"{split}{i:04d}"
            image_file(base / "images" / f"{image}.jpg", i)
            written[split].append(f"{image} {names[(i * 7) % len(names)]}")
    written["trainval"] = written["train"] + written["val"]  # as the real files: their union
    for split, lines in written.items():
        (base / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")
    return TRAIN, TEST


def fake_flowers(root, dataset):
    base = root / "flowers-102"
    total = TRAIN + TEST + 2
    for image_id in range(1, total + 1):
        image_file(base / "jpg" / f"image_{image_id:05d}.jpg", image_id)
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
            image_file(base / "images" / cls / f"{split}{i}.jpg", i)
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
    (base / "class_names.txt").write_text("\n".join(STL10_CLASS_NAMES) + "\n")
    (base / "fold_indices.txt").write_text(" ".join(map(str, range(TRAIN))) + "\n")
    return TRAIN, TEST


def write_csv(path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


# FMoW's countries -> WILDS regions; a code missing from the mapping is region "Other".
FMOW_COUNTRIES = {"USA": "Americas", "FRA": "Europe", "KEN": "Africa", "IND": "Asia"}
FMOW_COUNTRIES["AUS"] = "Oceania"


def fake_fmow(root, dataset):
    """fmow_v1.1/: rgb_metadata.csv (one row per image; `split` train/val/test/seq, the
    timestamp decides in- or out-of-distribution), country_code_mapping.csv, images/."""
    base = root / "fmow_v1.1"
    (base / "images").mkdir(parents=True)
    (base / "RELEASE_v1.1.txt").write_text("v1.1\n")
    codes = [*FMOW_COUNTRIES, "ATA"]  # ATA: not in the mapping -> "Other"
    # (csv split, year, count): the official scheme holds out 2016+ as the OOD test split and
    # 2013-2015 as OOD val; late training images (2014) belong to no split; "seq" is
    # sequestered and left out of the dataset, shifting the indices of the rows after it.
    plan = [
        ("train", 2002, 2),  # the first year WILDS counts: real copies start there
        ("train", 2011, 10),
        ("train", 2014, 3),
        ("val", 2014, 4),
        ("val", 2011, 3),
        ("test", 2016, 12),
        ("test", 2012, 3),
        ("seq", 2015, 2),
    ]
    rows = [(split, year) for split, year, count in plan for _ in range(count)]
    random.Random(0).shuffle(rows)
    categories = prompts("fmow")[0]
    metadata = []
    for i, (split, year) in enumerate(rows):
        metadata.append(
            {
                "split": split,
                "img_filename": f"{categories[i % 62]}_{i}_0_rgb.jpg",
                "category": categories[(i * 11) % 62].replace(" ", "_"),
                "country_code": codes[i % len(codes)],
                "cloud_cover": 0,
                "timestamp": f"{year}-0{1 + i % 9}-1{i % 10}T10:20:30Z",
                "lat": 10.0,
                "lon": 20.0,
            }
        )
        if split != "seq":
            image_file(base / "images" / f"rgb_img_{i}.png", i)
    write_csv(base / "rgb_metadata.csv", metadata)
    countries = [{"name": c, "alpha-3": c, "region": r} for c, r in FMOW_COUNTRIES.items()]
    write_csv(base / "country_code_mapping.csv", countries)
    return 12, 12


def fake_iwildcam(root, dataset):
    """iwildcam_v2.0/: metadata.csv (split, location, sequence, datetime, label y, filename;
    WILDS needs every label 0..181, location and sequence id to occur), images in train/."""
    base = root / "iwildcam_v2.0"
    (base / "train").mkdir(parents=True)
    (base / "RELEASE_v2.0.txt").write_text("v2.0\n")
    names = prompts("iwildcam")[0]
    rng = random.Random(0)
    # Train sees cameras 0-3; val and test (OOD) other cameras; id_val and id_test train's.
    rows = [("train", y % 4, y) for y in range(len(names))]
    for split, cameras in [
        ("val", (4, 5)),
        ("test", (6, 7)),
        ("id_val", (0, 1)),
        ("id_test", (2, 3)),
    ]:
        rows += [(split, cameras[i % 2], rng.randrange(len(names))) for i in range(4)]
    metadata = []
    for i, (split, location, y) in enumerate(rows):
        filename = f"{i:08x}-iwc.jpg"
        image_file(base / "train" / filename, i)
        metadata.append(
            {
                "split": split,
                "location_remapped": location,
                "location": 100 + location,
                "sequence_remapped": i,
                "datetime": f"2013-06-0{1 + i % 9} 10:20:30.000",
                "y": y,
                "category_id": 1000 + y,
                "image_id": f"img{i}",
                "filename": filename,
            }
        )
    write_csv(base / "metadata.csv", metadata)
    # Not read by WILDS; kept because the real copy has it (label id -> name).
    write_csv(
        base / "categories.csv",
        [{"y": y, "category_id": 1000 + y, "name": n} for y, n in enumerate(names)],
    )
    return len(names), 4


FAKES = {
    "cifar10": fake_cifar,
    "cifar100": fake_cifar,
    "dtd": fake_dtd,
    "fgvc-aircraft": fake_fgvc,
    "flowers102": fake_flowers,
    "food101": fake_food,
    "stl10": fake_stl10,
    "fmow": fake_fmow,
    "iwildcam": fake_iwildcam,
}


# An ImageFolder's class folders as a user names them (labels follow their sorted order), and
# the synthetic shape each holds.
IMAGEFOLDER_CLASSES = {"crème_brûlée": 0, "golden retriever": 2, "tabby_cat": 4}


def imagefolder_config(data: str, **extra) -> TrainConfig:
    """The smoke grid's clip-tiny pair reading the ImageFolder at `data`, every image."""
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
