"""Datasets staged to the store once, read by every pod: tar shards in the WebDataset layout
(`<key>.jpg|png|npy` + `<key>.cls`, and `<key>.grp` where samples carry a group, readable by
common tools) plus a manifest. Original files are kept as they are, except small images in a
lossless format (CIFAR's and STL10's arrays, FMoW's 224x224 PNGs), which are stored as their
decoded pixels (`.npy`, uint8): the same pixels, and nothing for a worker to decode.

`max_short_side` (off by default; `kbench data stage --max-short-side 448`) stores images whose
shorter side is longer at that side instead (antialiased; a JPEG re-encoded at quality 95, any
other format losslessly): a worker decodes a fraction of the pixels (a 1280x960 JPEG at 448 is
a fifth). The trade-off: evaluation, and crops of most of an image, see what they saw (they are
resized to 224 anyway); a small random crop (ResNet's crop-flip draws down to 8% of the image)
is cut from fewer pixels and upsampled. The manifest records it, and so does every epoch record
of a run trained on it, so a report can say its numbers are not the originals'.

    datasets/<name>/manifest.json             classes, templates, splits, shards and checksums
    datasets/<name>/<split>-00000.tar         samples in order
    datasets/<name>/<split>-00000.tar.sha256  written after its shard: a re-run skips it

Every split of the dataset is staged; a run fetches its train split and its eval split. Staging
reads the dataset with its real loader where a copy exists; kbench.jobs.shards reads the shards
back in the pods. This module runs on the user's machine (`kbench data stage`); it reads the
datasets with the loaders the pods use for a local copy (kbench.jobs.datasets).
"""

from __future__ import annotations

import contextlib
import io
import os
import tarfile
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from kbench import __version__
from kbench.errors import ConfigError, unreadable
from kbench.jobs.datasets import (
    DECODE_ERRORS,
    Source,
    class_names,
    labels_of,
    raw_splits,
    size,
    source_file,
)
from kbench.records import dataset_key, staged_name, utc_now
from kbench.registry import dataset_info, prompts
from kbench.spec import local_data_path
from kbench.splits import described, holdout
from kbench.staged import file_sha256
from kbench.storage import Store, write_json

SHARD_SAMPLES = 1000
RAW_MAX_SIDE = 256  # lossless images up to this side are stored decoded (`.npy`)
JPEG_QUALITY = 95  # a reduced JPEG's re-encoding: above the originals' usual 75-90


def stage_dataset(
    store: Store,
    name: str,
    *,
    root: str | None = None,
    frac: float = 1.0,
    max_short_side: int | None = None,
    shard_samples: int = SHARD_SAMPLES,
    download: bool = False,
    progress: bool = False,
) -> dict:
    """`kbench data stage`: a dataset read by its own loader from its local copy under `root`
    (default $KBENCH_DATA_ROOT, else ./data; an imagefolder: `root` is the tree itself) and
    staged under its name. Returns `stage`'s answer, and the `data` path an imagefolder's runs
    name it by (None for the others)."""
    info = dataset_info(name)
    if name == "synthetic":
        raise ConfigError("synthetic is drawn on the fly from a seed: there is nothing to stage")
    data = None
    if name == "imagefolder":
        if not root:
            raise ConfigError("imagefolder: give the tree to stage with --root DIR")
        data = local_data_path(root)
    source = Source(name, data=data, root=None if data else root)
    splits = raw_splits(source, download=download)
    staged = stage(
        store,
        staged_name(name, data),
        splits,
        classes=class_names(name, splits),
        templates=prompts(name)[1],
        train_split=info.train_splits[0],
        groups=info.groups,
        source=f"{info.source} from {data or os.path.abspath(source.local_root)}",
        frac=frac,
        max_short_side=max_short_side,
        shard_samples=shard_samples,
        progress=progress,
    )
    return {**staged, "data": data}


def stage(
    store: Store,
    name: str,
    splits: Mapping[str, Dataset],
    *,
    classes: list[str],
    templates: list[str],
    train_split: str,
    groups: tuple[str, ...],
    source: str,
    frac: float = 1.0,
    max_short_side: int | None = None,
    seed: int = 0,
    shard_samples: int = SHARD_SAMPLES,
    progress: bool = False,
) -> dict:
    """Write every split as shards, upload them concurrently, then the manifest (last).
    Returns the manifest and, per split, how many shards were uploaded (the rest were there)."""
    manifest: dict[str, Any] = {
        "name": name,
        "source": source,
        "classes": classes,
        "templates": templates,
        "train_split": train_split,
        "groups": list(groups),
        "frac": frac,
        "max_short_side": max_short_side,
        "stored": _stored(max_short_side),
        "splits": {},
        "kbench_version": __version__,
        "created": utc_now(),
    }
    chosen = {split: _subset(size(dataset), frac, seed) for split, dataset in splits.items()}
    # The validation hold-out of the training split, for runs of a dataset without a published
    # validation split: drawn here, once, and recorded (kbench.splits). A class of one image
    # leaves none recorded: a run that would need one is refused as it starts.
    labels = labels_of(splits[train_split])
    with contextlib.suppress(ConfigError):
        held = holdout([labels[i] for i in chosen[train_split]], f"{name} {train_split}")
        manifest["holdout"] = {"split": train_split, **described(held)}
    uploaded: dict[str, int] = {}
    bar = tqdm(
        total=sum(map(len, chosen.values())),
        desc=f"staging {name}",
        unit="img",
        disable=not progress,
    )
    # Streaming: each shard is uploaded (and its local file deleted) while the next ones are
    # written, with a few in flight, so local disk holds a few shards, not the dataset.
    with bar, tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max_workers=4) as pool:
        for split, dataset in splits.items():
            indices = chosen[split]
            chunks = [indices[i : i + shard_samples] for i in range(0, len(indices), shard_samples)]
            shards, uploads = [], []
            for number, chunk in enumerate(chunks):
                key = dataset_key(name, f"{split}-{number:05d}.tar")
                path = Path(tmp) / Path(key).name
                digest = _write_shard(path, dataset, chunk, max_short_side)
                shard = {
                    "key": key,
                    "sha256": digest,
                    "samples": len(chunk),
                    "bytes": path.stat().st_size,
                }
                shards.append(shard)
                uploads.append(pool.submit(_upload, store, path, shard, bar))
                if len(uploads) - sum(u.done() for u in uploads) >= 8:
                    next(u for u in uploads if not u.done()).result()
            uploaded[split] = sum(u.result() for u in uploads)
            manifest["splits"][split] = {"samples": len(indices), "shards": shards}
    write_json(store, dataset_key(name), manifest)
    return {"manifest": manifest, "uploaded": uploaded}


def _subset(n: int, frac: float, seed: int) -> list[int]:
    if frac >= 1:
        return list(range(n))
    chosen = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[
        : max(1, int(n * frac))
    ]
    return sorted(chosen.tolist())


def _write_shard(
    path: Path, dataset: Dataset, indices: list[int], max_short_side: int | None
) -> str:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for index in indices:
            data, ext, label, group = _sample_bytes(dataset, index, max_short_side)
            fields = [(ext, data), ("cls", str(label).encode())]
            if group is not None:
                fields.append(("grp", str(group).encode()))
            for suffix, payload in fields:
                info = tarfile.TarInfo(f"{index:08d}.{suffix}")
                info.size, info.mtime = len(payload), 0  # same bytes on every run
                tar.addfile(info, io.BytesIO(payload))
    return file_sha256(path)


def _stored(max_short_side: int | None) -> str:
    """What the manifest says was done to the images."""
    done = (
        f"original files; PNG files and in-memory images up to {RAW_MAX_SIDE} px a side "
        "as decoded uint8 arrays (.npy, height x width x 3), the same pixels"
    )
    if max_short_side:
        done += (
            f"; images with a shorter side above {max_short_side} px resized to it "
            f"(bicubic, antialiased; JPEGs re-encoded at quality {JPEG_QUALITY}, others lossless)"
        )
    return done


def _sample_bytes(
    dataset: Dataset, index: int, max_short_side: int | None
) -> tuple[bytes, str, int, int | None]:
    """The original file when the loader keeps one (no re-encoding), unless it is reduced to
    `max_short_side`; a small image in a lossless format (PNG files, the arrays of CIFAR and
    STL10) as its decoded pixels."""
    original = source_file(dataset, index)
    if original is None:  # CIFAR, STL10: arrays in memory
        image, label, *group = dataset[index]
        group = int(group[0]) if group else None
        return (*_encoded(image, False, max_short_side), int(label), group)
    path, label, group = original
    _check_image(path)
    ext = path.suffix.lstrip(".").lower() or "jpg"
    if ext == "png" or max_short_side:
        try:  # decoded here: a file whose header passed may still be cut short
            with Image.open(path) as image:
                small_png = ext == "png" and max(image.size) <= RAW_MAX_SIDE
                if small_png or _needs_reducing(image, max_short_side):
                    lossy = ext in ("jpg", "jpeg")
                    return (*_encoded(image, lossy, max_short_side), int(label), group)
        except DECODE_ERRORS as e:
            raise unreadable(str(path), e) from None
    return path.read_bytes(), ext, int(label), group


def _needs_reducing(image: Image.Image, max_short_side: int | None) -> bool:
    """Whether the image's shorter side is over `max_short_side` (None: nothing is)."""
    return max_short_side is not None and min(image.size) > max_short_side


def _encoded(image: Image.Image, lossy: bool, max_short_side: int | None) -> tuple[bytes, str]:
    """An image's bytes as staged: reduced to `max_short_side` if longer; then a small
    lossless one as its pixels, a JPEG as a JPEG, anything else as PNG."""
    if max_short_side is not None and _needs_reducing(image, max_short_side):
        image = _reduced(image, max_short_side)
    if not lossy and max(image.size) <= RAW_MAX_SIDE:
        return _raw(image), "npy"
    buffer = io.BytesIO()
    if lossy:
        image.convert("RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY)
        return buffer.getvalue(), "jpg"
    image.save(buffer, format="PNG")
    return buffer.getvalue(), "png"


def _reduced(image: Image.Image, short_side: int) -> Image.Image:
    """The image with its shorter side at `short_side`, the aspect ratio kept: a JPEG decoded
    at the smallest power-of-two scale still above that size (libjpeg's DCT scaling), then
    resized with an antialiased bicubic filter."""
    width, height = image.size
    if width <= height:
        size = (short_side, round(height * short_side / width))
    else:
        size = (round(width * short_side / height), short_side)
    image.draft("RGB", size)  # a no-op for anything but a JPEG
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    return image.resize(size, Image.Resampling.BICUBIC)


def _raw(image: Image.Image) -> bytes:
    """The pixels as a .npy array (uint8, height x width x 3): what a worker would decode the
    PNG to, so it decodes nothing. Lossless; larger than PNG by about half."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(image.convert("RGB"), dtype=np.uint8), allow_pickle=False)
    return buffer.getvalue()


def _check_image(path: Path) -> None:
    """Refuse a file that is no image before it is staged (the header and, for PNG, the
    checksums; a full decode would cost more than the upload)."""
    try:
        with Image.open(path) as image:
            image.verify()
    except DECODE_ERRORS as e:
        raise unreadable(str(path), e) from None


def _upload(store: Store, path: Path, shard: dict, bar: tqdm) -> bool:
    """Upload unless the same shard is already there (its checksum object says so); then
    drop the local file."""
    checksum_key = shard["key"] + ".sha256"
    try:
        try:
            if store.read(checksum_key).decode() == shard["sha256"]:
                return False
        except KeyError:
            pass
        store.put_file(shard["key"], str(path))
        store.write(checksum_key, shard["sha256"].encode())
        return True
    finally:
        path.unlink(missing_ok=True)
        bar.update(shard["samples"])
