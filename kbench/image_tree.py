"""A user's ImageFolder tree, checked without reading an image: a local folder or the keys under
an S3 prefix, laid out as `train/<class>/<image>` beside `val/` or `test/`. The same checks run
where a tree is staged (`kbench data stage imagefolder`), where a run is submitted, and in the
pod that reads it, so a tree is refused in the same words, before anything is created."""

from __future__ import annotations

import os
from pathlib import Path

from kbench.errors import ConfigError
from kbench.registry import dataset_info
from kbench.spec import HOLDOUT, Pair
from kbench.splits import choose_splits, lonely_class
from kbench.storage import open_store

# What torchvision's ImageFolder reads (torchvision.datasets.folder.IMG_EXTENSIONS).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
EVAL_SPLITS = dataset_info("imagefolder").eval_splits  # val/ first, else test/

# split -> class folder -> image files in it (at any depth, as ImageFolder finds them)
Layout = dict[str, dict[str, int]]


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def local_layout(root: Path) -> Layout:
    """The layout of a local tree: its split folders, their class folders, image counts."""
    layout: Layout = {}
    for split in ("train", *EVAL_SPLITS):
        if not (root / split).is_dir():
            continue
        layout[split] = {}
        for folder in sorted(p for p in (root / split).iterdir() if p.is_dir()):
            files = (f for _, _, names in os.walk(folder, followlinks=True) for f in names)
            layout[split][folder.name] = sum(1 for f in files if is_image(f))
    return layout


def key_layout(keys: list[str]) -> Layout:
    """The layout of the keys under an S3 prefix (relative to it): a folder exists there only
    as a part of a key, so a class folder shows only with a file in it."""
    layout: Layout = {}
    for key in keys:
        split, _, rest = key.partition("/")
        folder, _, name = rest.partition("/")
        if split in ("train", *EVAL_SPLITS) and folder and name:
            classes = layout.setdefault(split, {})
            classes[folder] = classes.get(folder, 0) + is_image(name)
    return layout


def check_layout(layout: Layout, where: str) -> list[str]:
    """Refuse a tree that ImageFolder could not read, or would read as something else, in one
    line that names the folder to fix; return its evaluation splits."""
    if "train" not in layout:
        raise ConfigError(
            f"no train/ folder in {where}: lay it out as train/<class>/<image> (or stage it "
            "with `kbench data stage imagefolder --root DIR` and keep `data` as DIR)"
        )
    if not layout["train"]:
        raise ConfigError(f"{where}/train/ holds no class folder: lay it out as train/<class>/")
    found = [split for split in EVAL_SPLITS if split in layout]
    if not found:
        raise ConfigError(f"no val/ or test/ folder in {where}: keep evaluation images there")
    for split in ("train", *found):
        for folder, images in layout[split].items():
            if not images:
                raise ConfigError(
                    f"{where}/{split}/{folder}/ holds no image ({', '.join(IMAGE_EXTENSIONS)}): "
                    "add images to it or remove it"
                )
    for split in found:
        if sorted(layout[split]) != sorted(layout["train"]):
            raise ConfigError(f"{where}: train/ and {split}/ must hold the same class folders")
    return found


def check_data(data: str) -> Layout:
    """An imagefolder's `data` as a run names it, a local folder or an S3 prefix, checked as a
    pod will read it (an S3 prefix by one listing of its keys); its layout."""
    if data.startswith("s3://"):
        keys = open_store(data).list("")
        if not keys:
            raise ConfigError(f"nothing under {data}: upload train/<class>/<image> and val/ there")
        layout = key_layout(keys)
    elif not Path(data).is_dir():
        raise ConfigError(f"{data} does not exist: lay it out as train/<class>/<image>")
    else:
        layout = local_layout(Path(data))
    check_layout(layout, data)
    return layout


def check_imagefolders(pairs: list[Pair]) -> None:
    """The folders the pairs read (each listed once), refused in one line that names a pair;
    and, for a pair that validates on a hold-out of train/, two images in every class."""
    layouts: dict[str, Layout] = {}
    for pair in pairs:
        data = pair.config.data
        if not data:
            continue
        try:
            if data not in layouts:
                layouts[data] = check_data(data)
            if choose_splits(pair.config, list(layouts[data])).val == HOLDOUT:
                lonely = [c for c, images in layouts[data]["train"].items() if images < 2]
                if lonely:
                    raise ConfigError(lonely_class(f"{data}/train/{lonely[0]}/"))
        except ConfigError as e:
            raise ConfigError(f"pair {pair.name}: data: {e}") from None
