"""A user's own images: `train/<class>/<image>` and `val/` (or `test/`) alike, in a local
folder or under an S3 prefix. Class names are the folder names (underscores read as spaces);
labels follow their sorted order, as torchvision's ImageFolder gives them."""

from __future__ import annotations

import hashlib
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch.distributed as dist
from torchvision.datasets import ImageFolder

from kbench.errors import ConfigError
from kbench.storage import S3Store

EVAL_SPLITS = ("val", "test")


def load(data: str, train_tf, eval_tf) -> tuple[ImageFolder, ImageFolder, str]:
    root = _local_copy(data) if data.startswith("s3://") else Path(data).expanduser()
    if not (root / "train").is_dir():
        raise ConfigError(f"no train/ folder in {data}: lay it out as train/<class>/<image>")
    eval_split = next((s for s in EVAL_SPLITS if (root / s).is_dir()), None)
    if eval_split is None:
        raise ConfigError(f"no val/ or test/ folder in {data}: keep evaluation images there")
    train = ImageFolder(str(root / "train"), transform=train_tf)
    evaluation = ImageFolder(str(root / eval_split), transform=eval_tf)
    if evaluation.classes != train.classes:
        raise ConfigError(f"{data}: train/ and {eval_split}/ must hold the same class folders")
    return train, evaluation, eval_split


def _local_copy(uri: str) -> Path:
    """One download per node into the scratch space: local rank 0 fetches what is missing (a
    restarted pod keeps what it has), the node's other processes wait."""
    cache = (
        Path(tempfile.gettempdir()) / "kbench-data" / hashlib.sha256(uri.encode()).hexdigest()[:16]
    )
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        store = S3Store(uri)
        keys = store.list("")
        if not keys:
            raise ConfigError(f"nothing under {uri}: upload train/<class>/<image> and val/ there")

        def fetch(key: str) -> None:
            target = cache / key
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                store.get_file(key, str(target) + ".part")
                os.replace(str(target) + ".part", target)  # complete files only

        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(fetch, keys))
    if dist.is_initialized():
        dist.barrier()
    return cache
