"""Staged datasets on the pod side: a node fetches the shards of its splits once (local rank 0;
the others wait), verifies each checksum (a corrupt or missing shard is fetched again), keeps
them on its scratch disk across restarts, and reads samples straight out of the tar files.
The layout is kbench.staging.datasets's, which writes them.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import simplejpeg
import torch
from PIL import Image
from torch.utils.data import Dataset

from kbench.errors import unreadable
from kbench.jobs import node_cache
from kbench.records import dataset_key, staged_name
from kbench.spec import TrainConfig
from kbench.storage import Store, read_json


def staged_manifest(store: Store, config: TrainConfig) -> dict | None:
    return read_json(store, dataset_key(staged_name(config.dataset, config.data)), default=None)


def fetch(store: Store, manifest: dict, cache: Path, splits: list[str]) -> None:
    """Make the node's copy of these splits complete and correct: a missing or corrupt shard
    is fetched again."""
    shards = [s for split in splits for s in manifest["splits"][split]["shards"]]

    def one(shard: dict) -> None:
        node_cache.ensure(store, shard["key"], cache / Path(shard["key"]).name, shard["sha256"])

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
                            m.name,
                        )
                    )
        self.targets = [item[3] for item in self.items]
        self.has_groups = bool(self.items) and self.items[0][4] is not None
        self._open: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        path, offset, size, label, group, name = self.items[index]
        fd = self._open.get(path)
        if fd is None:  # one descriptor per shard and process; pread needs no seek
            fd = self._open[path] = os.open(path, os.O_RDONLY)
        data = os.pread(fd, size, offset)
        try:
            image = _raw(data) if name.endswith(".npy") else _decoded(data)
        except (OSError, ValueError) as e:  # bytes in memory: say which image of which shard
            raise unreadable(f"image {name} of shard {path}", e) from None
        return (image, label, group) if self.has_groups else (image, label)


def _decoded(data: bytes) -> torch.Tensor | Image.Image:
    """A JPEG straight to a uint8 3 x height x width tensor (libjpeg-turbo through simplejpeg:
    no PIL image, no copy into a tensor; the same decoder and settings as Pillow's wheels, so
    the same pixels); anything else, or a JPEG it refuses (libjpeg's warnings are errors
    there), through PIL, which decides as it always did. The tensor's memory stays height x
    width x 3 (channels last), which torch's uint8 resize kernels read fastest."""
    if data[:2] == b"\xff\xd8":  # a JPEG's start-of-image marker
        try:
            pixels = simplejpeg.decode_jpeg(data, colorspace="RGB")
            return torch.from_numpy(pixels).permute(2, 0, 1)
        except ValueError:
            pass
    return Image.open(io.BytesIO(data)).convert("RGB")


def _raw(data: bytes) -> torch.Tensor:
    """Pixels staged decoded (.npy, uint8 height x width x 3) as a 3 x height x width tensor;
    no pickles: the store is shared."""
    pixels = np.load(io.BytesIO(data), allow_pickle=False)
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"not uint8 height x width x 3 pixels: {pixels.dtype} {pixels.shape}")
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1)


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
