"""Datasets staged to the store once, read by every pod: tar shards in the WebDataset layout
(`<key>.jpg|png` + `<key>.cls`, readable by common tools) plus a manifest.

    datasets/<name>/manifest.json             classes, templates, splits, shards and checksums
    datasets/<name>/<split>-00000.tar         samples in order
    datasets/<name>/<split>-00000.tar.sha256  written after its shard: a re-run skips it

Staging reads the dataset with its real loader where a copy exists. Pods download the shards
once per node (local rank 0; the others wait), verify each checksum (a corrupt or missing shard
is fetched again) and keep them on the node's scratch disk across restarts.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from kbench import __version__
from kbench.jobs import node_cache
from kbench.runs import utc_now
from kbench.storage import Store, read_json, write_json

SHARD_SAMPLES = 1000


def prefix(name: str) -> str:
    return f"datasets/{name}"


def stage(
    store: Store,
    name: str,
    splits: dict[str, Dataset],
    classes: list[str],
    templates: list[str],
    eval_split: str,
    frac: float = 1.0,
    seed: int = 0,
    shard_samples: int = SHARD_SAMPLES,
    echo: Callable[[str], None] = lambda line: None,
) -> dict:
    """Write every split as shards, upload them concurrently, then the manifest (last)."""
    manifest: dict[str, Any] = {
        "name": name,
        "classes": classes,
        "templates": templates,
        "eval_split": eval_split,
        "frac": frac,
        "splits": {},
        "kbench_version": __version__,
        "created": utc_now(),
    }
    # Streaming: each shard is uploaded (and its local file deleted) while the next ones are
    # written, with a few in flight, so local disk holds a few shards, not the dataset.
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max_workers=4) as pool:
        for split, dataset in splits.items():
            indices = _subset(len(dataset), frac, seed)
            chunks = [indices[i : i + shard_samples] for i in range(0, len(indices), shard_samples)]
            shards, uploads = [], []
            for number, chunk in enumerate(chunks):
                key = f"{prefix(name)}/{split}-{number:05d}.tar"
                path = Path(tmp) / Path(key).name
                digest = _write_shard(path, dataset, chunk)
                shard = {
                    "key": key,
                    "sha256": digest,
                    "samples": len(chunk),
                    "bytes": path.stat().st_size,
                }
                shards.append(shard)
                uploads.append(pool.submit(_upload, store, path, shard))
                if len(uploads) - sum(u.done() for u in uploads) >= 8:
                    next(u for u in uploads if not u.done()).result()
            uploaded = sum(u.result() for u in uploads)
            echo(
                f"{name} {split}: {len(indices)} samples in {len(shards)} shard(s), "
                f"{uploaded} uploaded, {len(shards) - uploaded} already there"
            )
            manifest["splits"][split] = {"samples": len(indices), "shards": shards}
    write_json(store, f"{prefix(name)}/manifest.json", manifest)
    return manifest


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
            data, ext, label = _sample_bytes(dataset, index)
            for suffix, payload in ((ext, data), ("cls", str(label).encode())):
                info = tarfile.TarInfo(f"{index:08d}.{suffix}")
                info.size, info.mtime = len(payload), 0  # same bytes on every run
                tar.addfile(info, io.BytesIO(payload))
    return node_cache.file_sha256(path)


def _sample_bytes(dataset: Dataset, index: int) -> tuple[bytes, str, int]:
    """The original file when the loader has one (no re-encoding), else a lossless PNG."""
    files = getattr(dataset, "_image_files", None)
    samples = getattr(dataset, "samples", None)
    if files is not None or samples is not None:
        path = Path(files[index]) if files is not None else Path(samples[index][0])
        label = dataset._labels[index] if files is not None else samples[index][1]
        return path.read_bytes(), path.suffix.lstrip(".").lower() or "jpg", int(label)
    image, label = dataset[index]
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue(), "png", int(label)


def _upload(store: Store, path: Path, shard: dict) -> bool:
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


# ------------------------------------------------------------------------------- pod side


def staged_manifest(store: Store, name: str) -> dict | None:
    return read_json(store, f"{prefix(name)}/manifest.json", default=None)


def fetch(store: Store, manifest: dict, cache: Path) -> None:
    """Make the node's copy complete and correct: a missing or corrupt shard is fetched again."""
    shards = [s for split in manifest["splits"].values() for s in split["shards"]]

    def one(shard: dict) -> None:
        path = cache / Path(shard["key"]).name
        if not (path.exists() and node_cache.file_sha256(path) == shard["sha256"]):
            node_cache.fetch(store, shard["key"], path, shard["sha256"])

    def download() -> None:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(one, shards))

    node_cache.once_per_node(download)


class ShardDataset(Dataset):
    """Random access into local tar shards: an index of (shard, offset, size, label)."""

    def __init__(self, paths: list[Path], transform=None) -> None:
        self.transform, self.items = transform, []
        for path in paths:
            with tarfile.open(path) as tar:
                members = tar.getmembers()
            labels = {}
            images = []
            for m in members:
                key, _, ext = m.name.rpartition(".")
                if ext == "cls":
                    labels[key] = m
                else:
                    images.append((key, m))
            with open(path, "rb") as f:
                for key, m in images:
                    f.seek(labels[key].offset_data)
                    label = int(f.read(labels[key].size))
                    self.items.append((str(path), m.offset_data, m.size, label))
        self.targets = [item[3] for item in self.items]
        self._open: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        path, offset, size, label = self.items[index]
        fd = self._open.get(path)
        if fd is None:  # one descriptor per shard and process; pread needs no seek
            fd = self._open[path] = os.open(path, os.O_RDONLY)
        image = Image.open(io.BytesIO(os.pread(fd, size, offset))).convert("RGB")
        return (self.transform(image) if self.transform else image), label


def load(store: Store, manifest: dict, train_tf, eval_tf) -> tuple[Dataset, Dataset, str]:
    cache = Path(tempfile.gettempdir()) / "kbench-data" / manifest["name"]
    fetch(store, manifest, cache)

    def split(name: str, transform) -> Dataset:
        shards = manifest["splits"][name]["shards"]
        return ShardDataset([cache / Path(s["key"]).name for s in shards], transform)

    eval_split = manifest["eval_split"]
    train_split = next(s for s in manifest["splits"] if s != eval_split)
    return split(train_split, train_tf), split(eval_split, eval_tf), eval_split
