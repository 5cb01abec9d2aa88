"""Files from the store on a node's local disk, fetched once per node: local rank 0 downloads,
the node's other processes wait, and a file is only ever seen whole."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch.distributed as dist

from kbench.errors import StoreError
from kbench.staged import file_sha256
from kbench.storage import Store


def once_per_node(work: Callable[[], None]) -> None:
    """Local rank 0 runs `work`; the node's other processes wait until it is done."""
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        work()
    if dist.is_initialized():
        dist.barrier()


def fetch(
    store: Store, key: str, path: Path, sha256: str | None = None, small: bool = False
) -> None:
    """Download into `<path>.part`, check it when a checksum is given, then move it in place.
    `small`: one plain GET, without the managed transfer's set-up that pays off for large
    files only (bench/node_download.py)."""
    part = Path(f"{path}.part")
    path.parent.mkdir(parents=True, exist_ok=True)
    if small:
        part.write_bytes(store.read(key))
    else:
        store.get_file(key, str(part))
    if sha256 is not None and file_sha256(part) != sha256:
        part.unlink()
        raise StoreError(f"{key} does not match its checksum: stage it again")
    os.replace(part, path)


def ensure(store: Store, key: str, path: Path, sha256: str) -> None:
    """The node's copy of `key` at `path`, fetched unless one with this checksum is there (a
    missing or corrupt copy is fetched again)."""
    if not (path.exists() and file_sha256(path) == sha256):
        fetch(store, key, path, sha256)
