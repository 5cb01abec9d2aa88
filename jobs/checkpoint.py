"""One checkpoint per epoch in the store, then a small pointer to it; resume reads the pointer.

    runs/<run>/<pair>/checkpoints/epoch-0003.pt     everything needed to continue bit for bit
    runs/<run>/<pair>/checkpoints/latest.json       {"epoch": 3, "key": ".../epoch-0003.pt",
                                                     "id": "<random, new with every save>"}

The pointer is written only after its checkpoint is complete, and older checkpoints are deleted
only after the pointer moved on, so a kill at any moment leaves a usable pair (and the next
save removes what the kill left). The checkpoint also holds the epoch records so far: a
resumed run rewrites metrics.json from them, so an epoch that was recorded but not checkpointed
is trained again and recorded once.

Uploads run in the background (`Uploader`): the checkpoint is written to local disk at once
(the weights as they are at the epoch's end), then uploaded while the next epoch trains, one at
a time, the pointer moved only once the upload is complete.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from kbench import __version__, records
from kbench.errors import StoreError
from kbench.jobs import node_cache
from kbench.storage import Store, read_json, write_json

POINTER = "checkpoints/latest.json"
CHOSEN_WEIGHTS = "chosen.safetensors"  # the model at the epoch the run chose
CHOSEN_RECORD = "chosen.json"  # {"epoch", "classes", "sha256", "bytes"}: written after it


def _key(run_id: str, pair: str, name: str) -> str:
    return records.pair_key(run_id, pair, name)


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def gather_rng_states(world: int) -> list[dict[str, Any]]:
    """Every process's RNG state (each process augments with its own generator)."""
    if world == 1:
        return [rng_state()]
    states: list[Any] = [None] * world
    dist.all_gather_object(states, rng_state())
    return states


class Uploader:
    """Rank 0's checkpoints: written to local disk at once, uploaded in the background while
    the next epoch trains, never two in flight. `wait` returns once the last one is in the
    store (and raises what its upload raised)."""

    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._pending: Future | None = None

    def save(self, store: Store, run_id: str, pair: str, state: dict[str, Any]) -> None:
        self.wait()
        folder = tempfile.mkdtemp(prefix="kbench-checkpoint-")
        path = os.path.join(folder, "checkpoint.pt")
        try:
            _write(state, path)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        self._pending = self._thread.submit(
            _publish_then_remove, store, run_id, pair, state["epoch"], path
        )

    def keep_chosen(
        self, store: Store, run_id: str, pair: str, model: Any, chosen: dict[str, Any]
    ) -> None:
        """The weights of the epoch the run chose so far (`kbench export` hands them out), as
        safetensors, with `chosen` (its epoch, the classes in order) beside them."""
        self.wait()
        weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        self._pending = self._thread.submit(write_chosen, store, run_id, pair, weights, chosen)

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()


def _publish_then_remove(store: Store, run_id: str, pair: str, epoch: int, path: str) -> None:
    try:
        publish(store, run_id, pair, epoch, path)
    finally:
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)


def write_chosen(
    store: Store, run_id: str, pair: str, weights: dict[str, Any], chosen: dict[str, Any]
) -> None:
    """The chosen weights, then the record that names them (written last, with their SHA-256)."""
    import hashlib

    from safetensors.torch import save

    data = save({k: v.contiguous() for k, v in weights.items()})
    store.write(_key(run_id, pair, CHOSEN_WEIGHTS), data)
    write_json(
        store,
        _key(run_id, pair, CHOSEN_RECORD),
        {**chosen, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)},
    )


def save(store: Store, run_id: str, pair: str, state: dict[str, Any]) -> None:
    """Rank 0 only, in the foreground: write the checkpoint and publish it."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "checkpoint.pt")
        _write(state, path)
        publish(store, run_id, pair, state["epoch"], path)


def _write(state: dict[str, Any], path: str) -> None:
    torch.save({**state, "kbench_version": __version__}, path)


def publish(store: Store, run_id: str, pair: str, epoch: int, path: str) -> None:
    """Upload a checkpoint file, move the pointer, then drop every other checkpoint of the pair
    and what interrupted uploads left (a kill before the last cleanup left some)."""
    key = _key(run_id, pair, f"checkpoints/epoch-{epoch:04d}.pt")
    store.put_file(key, path)
    pointer = {"epoch": epoch, "key": key, "id": uuid.uuid4().hex}
    write_json(store, _key(run_id, pair, POINTER), pointer)
    folder = _key(run_id, pair, "checkpoints")
    for old in store.list(folder):
        if old not in (key, _key(run_id, pair, POINTER)):
            store.delete(old)
    store.discard_partial(folder)  # only this job writes here, and its writes are done


def latest_epoch(store: Store, run_id: str, pair: str) -> int:
    """The epoch of the pair's newest checkpoint, 0 before the first (or for a pointer that
    does not say: the store is not trusted)."""
    pointer = read_json(store, _key(run_id, pair, POINTER), default=None)
    epoch = pointer.get("epoch") if isinstance(pointer, dict) else 0
    return epoch if isinstance(epoch, int) and epoch >= 0 else 0


def load_latest(store: Store, run_id: str, pair: str, cache_dir: str) -> dict[str, Any] | None:
    """The newest checkpoint, or None on a first start. One download per node: local rank 0
    fetches into `cache_dir`, the node's other processes wait and read that file."""
    pointer = read_json(store, _key(run_id, pair, POINTER), default=None)
    if pointer is None:
        return None
    folder = _key(run_id, pair, "checkpoints/")
    key = pointer.get("key") if isinstance(pointer, dict) else None
    if not (isinstance(key, str) and re.fullmatch(re.escape(folder) + r"epoch-\d{4,}\.pt", key)):
        raise StoreError(f"{_key(run_id, pair, POINTER)} names no checkpoint of this pair: {key!r}")
    # Named by the pointer's id: a file left in the cache by an earlier run of the same name
    # (a re-created run, a rerun test) is never taken for this checkpoint. A pointer without
    # a proper id (the store is not trusted) is downloaded every time.
    ident = pointer.get("id")
    named = isinstance(ident, str) and re.fullmatch(r"[0-9a-f]{32}", ident) is not None
    path = Path(cache_dir) / f"{ident if named else 'unnamed'}-{os.path.basename(key)}"

    def download() -> None:
        if not (named and path.exists()):
            node_cache.fetch(store, key, path)

    node_cache.once_per_node(download)
    return torch.load(path, map_location="cpu", weights_only=True)
