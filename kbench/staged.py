"""What a store holds staged, as both sides read it: datasets (`kbench data stage`,
kbench.staging.datasets) and pretrained weights (`kbench models stage`, kbench.staging.weights),
each under a manifest with its checksums; what a grid's pods would miss, refused at submit."""

from __future__ import annotations

import contextlib
import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kbench import records
from kbench.errors import ConfigError
from kbench.registry import model_info
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
    """The keys with no record in the store, in order."""
    found = read_records(store, keys)
    return [key for key, got in zip(keys, found, strict=True) if got is None]


def read_records(store: Store, keys: list[str]) -> list[Any]:
    """Each key's record, None where there is none; read 8 at a time (latency-bound)."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda key: read_json(store, key, None), keys))


def require_staged(store: Store, pairs: list[Pair]) -> None:
    """Refuse pairs whose pods would find no dataset in the store, naming the fix."""
    missing = unstaged_datasets(store, pairs)
    if missing:
        raise ConfigError(
            f"not staged in {store.uri}: {', '.join(missing)}; pods read datasets "
            f"from the store: run `kbench data stage NAME --store {store.uri}` "
            "(an imagefolder: --root DIR) first"
        )


def staged_weights(store: Store, model: str) -> dict[str, Any] | None:
    """The manifest of a model's staged weights, or None."""
    return read_json(store, records.weights_key(model), None)


def staged_models(store: Store) -> dict[str, dict[str, Any]]:
    """Every model whose weights the store holds (a manifest under its slug): its manifest."""
    found = {}
    for key in manifest_keys(store, "models"):
        manifest = read_json(store, key, None)
        model = manifest.get("model") if isinstance(manifest, dict) else None
        with contextlib.suppress(ConfigError):  # the store is shared: a name of no known form
            if isinstance(model, str) and records.weights_key(model) == key:
                found[model] = manifest
    return found


def unstaged_models(store: Store, pairs: list[Pair]) -> list[str]:
    """The pretrained models of these pairs whose weights are not in the store."""
    needed = sorted({p.config.model for p in pairs if p.config.pretrained})
    absent = set(missing_records(store, [records.weights_key(m) for m in needed]))
    return [m for m in needed if records.weights_key(m) in absent]


def require_a_start(store: Store, pairs: list[Pair]) -> None:
    """Refuse pretrained pairs of a model with no published weights and none staged: their
    pods would fail as they start."""
    nothing = sorted(
        {
            p.config.model
            for p in pairs
            if p.config.pretrained and not model_info(p.config.model).weights
        }
    )
    missing = [m for m in nothing if staged_weights(store, m) is None]
    if missing:
        raise ConfigError(
            f"{', '.join(missing)}: no published weights to start from: stage a file with "
            f"`kbench models stage NAME --from FILE --store {store.uri}`, or set pretrained: false"
        )


def require_weights(store: Store, pairs: list[Pair]) -> None:
    """Refuse pairs whose pods would have to download their pretrained weights."""
    missing = unstaged_models(store, pairs)
    if missing:
        raise ConfigError(
            f"pretrained weights not staged in {store.uri}: {', '.join(missing)}; pods load "
            f"them from the store: run `kbench models stage {' '.join(missing)} --store "
            f"{store.uri}` first (or set download_weights: true to let pods download them)"
        )


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read in blocks: what a manifest records and a node checks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


GIB = 1024**3


def scratch_sizes(store: Store, pairs: list[Pair]) -> dict[str, str]:
    """pair -> the scratch volume its pod needs, from what the store holds staged for it: the
    dataset's shards (every split, cached once per node) with a tenth more, two checkpoints in
    transit (weights and AdamW's two moments each: 6 x the weights) beside the weights, and
    4Gi for caches and temporary files. Pairs with no staged dataset are left out (an s3://
    folder is read directly; synthetic data is drawn, so needs no room). One manifest read per
    dataset and model, all at once."""
    names = list(
        dict.fromkeys(
            records.staged_name(p.config.dataset, p.config.data)
            for p in pairs
            if p.config.dataset != "synthetic"
        )
    )
    models = list(dict.fromkeys(p.config.model for p in pairs))
    keys = [records.dataset_key(n) for n in names] + [records.weights_key(m) for m in models]
    found = read_records(store, keys)
    data_found, weights_found = found[: len(names)], found[len(names) :]
    datasets = {n: _shard_bytes(m) for n, m in zip(names, data_found, strict=True)}
    weights = {m: _weights_bytes(w) for m, w in zip(models, weights_found, strict=True)}
    sizes = {}
    for pair in pairs:
        config = pair.config
        data = (  # synthetic data is drawn in the pod
            0
            if config.dataset == "synthetic"
            else datasets[records.staged_name(config.dataset, config.data)]
        )
        if data is not None:
            need = 1.1 * data + 7 * weights[config.model]
            sizes[pair.name] = f"{-(-int(need) // GIB) + 4}Gi"
    return sizes


def _weights_bytes(manifest: Any) -> int:
    """A staged weights file's bytes, or 1 GiB where its manifest does not say."""
    size = manifest.get("bytes") if isinstance(manifest, dict) else None
    return size if isinstance(size, int) and size > 0 else GIB


def _shard_bytes(manifest: Any) -> int | None:
    """Every shard's bytes of a staged dataset's manifest; None without one (or a manifest
    that does not say: the store is not trusted, the fallback size is used)."""
    try:
        return sum(
            int(shard["bytes"])
            for split in manifest["splits"].values()
            for shard in split["shards"]
        )
    except (TypeError, KeyError, ValueError, AttributeError):
        return None
