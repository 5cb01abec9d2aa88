"""A pair's pretrained weights from the store, as a local file on the node (fetched once per
node, checked against the staged checksum), so a pod needs no internet (kbench.staged)."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from kbench import records
from kbench.errors import StoreError
from kbench.jobs import node_cache
from kbench.registry import model_slug
from kbench.spec import TrainConfig
from kbench.staged import staged_weights
from kbench.storage import Store


def local_weights(store: Store | None, config: TrainConfig) -> Path | None:
    """The staged weights file of the config's model on this node's disk; None when the model
    trains from scratch or its weights are not staged (the model's library downloads them)."""
    manifest = staged_weights(store, config.model) if store and config.pretrained else None
    if store is None or manifest is None:
        return None
    file, sha256 = manifest.get("file"), manifest.get("sha256")
    # The store is shared: a manifest names a plain file beside it and a real checksum.
    if not (isinstance(file, str) and re.fullmatch(r"[\w][\w.-]*", file)) or not (
        isinstance(sha256, str) and re.fullmatch(r"[0-9a-f]{64}", sha256)
    ):
        raise StoreError(f"{records.weights_key(config.model)} is malformed: stage it again")
    folder = Path(tempfile.gettempdir()) / "kbench-models" / model_slug(config.model)
    # Named by checksum as well: weights staged again under the same name are fetched again.
    path = folder / f"{sha256[:16]}-{file}"
    key = records.weights_key(config.model, file)
    node_cache.once_per_node(lambda: node_cache.ensure(store, key, path, sha256))
    return path
