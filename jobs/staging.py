"""Datasets staged to the store once, read by every pod: tar shards in the WebDataset layout
(`<key>.jpg|png` + `<key>.cls`, and `<key>.grp` where samples carry a group, readable by common
tools) plus a manifest.

    datasets/<name>/manifest.json             classes, templates, splits, shards and checksums
    datasets/<name>/<split>-00000.tar         samples in order
    datasets/<name>/<split>-00000.tar.sha256  written after its shard: a re-run skips it

Every split of the dataset is staged; a run fetches its train split and its eval split. Staging
reads the dataset with its real loader where a copy exists. Pods download the shards once per
node (local rank 0; the others wait), verify each checksum (a corrupt or missing shard is
fetched again) and keep them on the node's scratch disk across restarts.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from kbench import __version__
from kbench.jobs import node_cache
from kbench.jobs.wilds_datasets import FileList
from kbench.records import dataset_key, staged_name
from kbench.runs import utc_now
from kbench.spec import TrainConfig
from kbench.storage import Store, read_json, write_json

SHARD_SAMPLES = 1000


def stage(
    store: Store,
    name: str,
    splits: dict[str, Dataset],
    *,
    classes: list[str],
    templates: list[str],
    train_split: str,
    groups: tuple[str, ...],
    source: str,
    frac: float = 1.0,
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
        "splits": {},
        "kbench_version": __version__,
        "created": utc_now(),
    }
    chosen = {split: _subset(len(dataset), frac, seed) for split, dataset in splits.items()}
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
                digest = _write_shard(path, dataset, chunk)
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


def _write_shard(path: Path, dataset: Dataset, indices: list[int]) -> str:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for index in indices:
            data, ext, label, group = _sample_bytes(dataset, index)
            fields = [(ext, data), ("cls", str(label).encode())]
            if group is not None:
                fields.append(("grp", str(group).encode()))
            for suffix, payload in fields:
                info = tarfile.TarInfo(f"{index:08d}.{suffix}")
                info.size, info.mtime = len(payload), 0  # same bytes on every run
                tar.addfile(info, io.BytesIO(payload))
    return node_cache.file_sha256(path)


def _sample_bytes(dataset: Dataset, index: int) -> tuple[bytes, str, int, int | None]:
    """The original file when the loader keeps one (no re-encoding), else a lossless PNG."""
    original = _original_file(dataset, index)
    if original is not None:
        path, label, group = original
        return path.read_bytes(), path.suffix.lstrip(".").lower() or "jpg", int(label), group
    image, label, *group = dataset[index]
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue(), "png", int(label), (int(group[0]) if group else None)


def _original_file(dataset: Dataset, index: int) -> tuple[Path, int, int | None] | None:
    if isinstance(dataset, FileList):  # WILDS
        group = dataset.groups[index] if dataset.groups is not None else None
        return dataset.files[index], dataset.labels[index], group
    if hasattr(dataset, "_image_files"):  # torchvision DTD, FGVCAircraft, Flowers102, Food101
        return Path(dataset._image_files[index]), dataset._labels[index], None
    if hasattr(dataset, "samples"):  # torchvision ImageFolder
        path, label = dataset.samples[index]
        return Path(path), label, None
    return None  # CIFAR, STL10: arrays in memory


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


# ------------------------------------------------------------------------------- pod side


def staged_manifest(store: Store, config: TrainConfig) -> dict | None:
    return read_json(store, dataset_key(staged_name(config.dataset, config.data)), default=None)


def fetch(store: Store, manifest: dict, cache: Path, splits: list[str]) -> None:
    """Make the node's copy of these splits complete and correct: a missing or corrupt shard
    is fetched again."""
    shards = [s for split in splits for s in manifest["splits"][split]["shards"]]

    def one(shard: dict) -> None:
        path = cache / Path(shard["key"]).name
        if not (path.exists() and node_cache.file_sha256(path) == shard["sha256"]):
            node_cache.fetch(store, shard["key"], path, shard["sha256"])

    def download() -> None:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(one, shards))

    node_cache.once_per_node(download)


class ShardDataset(Dataset):
    """Random access into local tar shards: an index of (shard, offset, size, label, group).
    Samples are (image, label), or (image, label, group) where the shards hold groups."""

    def __init__(self, paths: list[Path]) -> None:
        self.items = []
        for path in paths:
            with tarfile.open(path) as tar:
                members = tar.getmembers()
            images, fields = [], {}
            for m in members:
                key, _, ext = m.name.rpartition(".")
                if ext in ("cls", "grp"):
                    fields[key, ext] = m
                else:
                    images.append((key, m))
            with open(path, "rb") as f:
                for key, m in images:
                    label, group = fields[key, "cls"], fields.get((key, "grp"))
                    self.items.append(
                        (
                            str(path),
                            m.offset_data,
                            m.size,
                            _read_int(f, label),
                            None if group is None else _read_int(f, group),
                        )
                    )
        self.targets = [item[3] for item in self.items]
        self.has_groups = bool(self.items) and self.items[0][4] is not None
        self._open: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        path, offset, size, label, group = self.items[index]
        fd = self._open.get(path)
        if fd is None:  # one descriptor per shard and process; pread needs no seek
            fd = self._open[path] = os.open(path, os.O_RDONLY)
        image = Image.open(io.BytesIO(os.pread(fd, size, offset))).convert("RGB")
        return (image, label, group) if self.has_groups else (image, label)


def _read_int(f, member: tarfile.TarInfo) -> int:
    f.seek(member.offset_data)
    return int(f.read(member.size))


def load(store: Store, manifest: dict, splits: list[str]) -> dict[str, ShardDataset]:
    """These splits, fetched to the node's scratch disk: split name -> dataset."""
    cache = Path(tempfile.gettempdir()) / "kbench-data" / manifest["name"]
    fetch(store, manifest, cache, splits)
    return {
        split: ShardDataset(
            [cache / Path(s["key"]).name for s in manifest["splits"][split]["shards"]]
        )
        for split in splits
    }
