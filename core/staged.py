"""Datasets staged in a store, as the client sees them (`kbench data stage` writes them; see
kbench.jobs.staging): what a store holds, and what a grid's pods would miss."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kbench import records
from kbench.errors import ConfigError
from kbench.spec import Pair
from kbench.storage import Store, read_json


def manifest_keys(store: Store, top: str) -> list[str]:
    """The keys of the manifests one level under `top` ("datasets", "models"): one per thing
    staged there."""
    return [
        key
        for key in store.list(top)
        if key.count("/") == 2 and key.endswith("/" + records.MANIFEST)
    ]


def staged_datasets(store: Store) -> list[dict[str, Any]]:
    """The manifest of every dataset staged in the store, by name."""
    return [read_json(store, key) for key in manifest_keys(store, "datasets")]


def split_sizes(manifest: dict[str, Any]) -> list[tuple[str, int]]:
    """(split, samples) of a staged dataset: its train split first, then the others by name."""
    first = manifest["train_split"]
    order = [first, *sorted(set(manifest["splits"]) - {first})]
    return [(split, manifest["splits"][split]["samples"]) for split in order]


def unstaged_datasets(store: Store, pairs: list[Pair]) -> list[str]:
    """The pairs' datasets a pod could not read: not staged in the store. Synthetic data is
    drawn in the pod and an imagefolder under s3:// is read directly."""
    needed: dict[str, str] = {}
    for pair in pairs:
        config = pair.config
        if config.dataset == "synthetic" or (config.data or "").startswith("s3://"):
            continue
        label = f"imagefolder {config.data}" if config.data else config.dataset
        needed[records.staged_name(config.dataset, config.data)] = label
    absent = set(missing_records(store, [records.dataset_key(n) for n in needed]))
    return [label for name, label in needed.items() if records.dataset_key(name) in absent]


def missing_records(store: Store, keys: list[str]) -> list[str]:
    """The keys with no record in the store, in order; read 8 at a time (latency-bound)."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        found = list(pool.map(lambda key: read_json(store, key, None), keys))
    return [key for key, got in zip(keys, found, strict=True) if got is None]


def require_staged(store: Store, pairs: list[Pair]) -> None:
    """Refuse pairs whose pods would find no dataset in the store, naming the fix."""
    missing = unstaged_datasets(store, pairs)
    if missing:
        raise ConfigError(
            f"not staged in {store.uri}: {', '.join(missing)}; pods read datasets "
            f"from the store: run `kbench data stage NAME --store {store.uri}` "
            "(an imagefolder: --root DIR) first"
        )
