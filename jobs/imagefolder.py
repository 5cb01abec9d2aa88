"""A user's own images: `train/<class>/<image>` and `val/` (or `test/`) alike, in a local
folder or under an S3 prefix. Class names are the folder names (underscores read as spaces);
labels follow their sorted order, as torchvision's ImageFolder gives them."""

from __future__ import annotations

import hashlib
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from torchvision.datasets import ImageFolder

from kbench.errors import ConfigError
from kbench.image_tree import check_layout, local_layout
from kbench.jobs import node_cache
from kbench.s3 import S3Store


def load(data: str) -> dict[str, ImageFolder]:
    """train/ and every evaluation folder there is (val/, test/), untransformed."""
    root = _local_copy(data) if data.startswith("s3://") else Path(data).expanduser()
    found = check_layout(local_layout(root), data)
    return {split: ImageFolder(str(root / split)) for split in ["train", *found]}


def _local_copy(uri: str) -> Path:
    """The tree on the node's scratch disk, downloaded once per node."""
    cache = (
        Path(tempfile.gettempdir()) / "kbench-data" / hashlib.sha256(uri.encode()).hexdigest()[:16]
    )

    def download() -> None:
        store = S3Store(uri)
        keys = store.list("")
        if not keys:
            raise ConfigError(f"nothing under {uri}: upload train/<class>/<image> and val/ there")
        missing = [key for key in keys if not (cache / key).exists()]  # a restart keeps the rest

        def one(key: str) -> None:  # images are small: one GET each
            node_cache.fetch(store, key, cache / key, small=True)

        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(one, missing))

    node_cache.once_per_node(download)
    return cache
