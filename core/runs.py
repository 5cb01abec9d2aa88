"""Runs in a store: create one from a grid, find them again, and say where each pair stands."""

from __future__ import annotations

import datetime as dt
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from kbench import __version__, records
from kbench.errors import ConfigError, StoreError
from kbench.registry import dataset_info
from kbench.spec import Grid, TrainConfig
from kbench.storage import Store, read_json, write_json


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def new_run_id(grid_name: str, now: dt.datetime | None = None) -> str:
    """`<grid>-<yyyymmdd>-<hhmmss>`: sortable, and safe in Kubernetes names and S3 keys."""
    now = now or dt.datetime.now(dt.timezone.utc)
    slug = re.sub(r"[^a-z0-9]+", "-", grid_name.lower()).strip("-")[:30] or "run"
    return f"{slug}-{now:%Y%m%d-%H%M%S}"


def check_run_id(run_id: str) -> str:
    if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?", run_id):
        raise ConfigError(
            f"bad run id {run_id!r}: use 1-40 lower-case letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return run_id


def create_run(
    store: Store,
    run_id: str,
    grid: Grid,
    backend: str,
    extra: dict[str, Any] | None = None,
    exist_ok: bool = False,
) -> dict[str, Any]:
    """Write run.json and every pair's config.json. An existing run is refused, or with
    `exist_ok` (resubmitting to a cluster) returned as it is when it holds the same pairs."""
    check_run_id(run_id)
    existing = read_json(store, records.run_key(run_id), default=None)
    if existing is not None:
        same = existing["pairs"] == [p.name for p in grid.pairs]
        if exist_ok and same and existing["backend"] == backend:
            return existing
        raise ConfigError(f"run {run_id!r} already exists in {store.uri}: pick another --run-id")
    run = {
        "run_id": run_id,
        "grid": grid.name,
        "source": grid.source,
        "document": grid.document,
        "pairs": [p.name for p in grid.pairs],
        "backend": backend,
        "created": utc_now(),
        "kbench_version": __version__,
        **(extra or {}),
    }
    for pair in grid.pairs:
        write_json(
            store, records.pair_key(run_id, pair.name, records.CONFIG), pair.config.to_dict()
        )
    # run.json last: a run is listed only once every pair's config is there.
    write_json(store, records.run_key(run_id), run)
    return run


def unstaged_datasets(store: Store, grid: Grid) -> list[str]:
    """The grid's datasets a pod could not read: not staged in the store. Synthetic data is
    drawn in the pod and an imagefolder under s3:// is read directly."""
    needed: dict[str, str] = {}
    for pair in grid.pairs:
        config = pair.config
        if config.dataset == "synthetic" or (config.data or "").startswith("s3://"):
            continue
        label = f"imagefolder {config.data}" if config.data else config.dataset
        needed[records.staged_name(config.dataset, config.data)] = label
    with ThreadPoolExecutor(max_workers=8) as pool:
        found = list(pool.map(lambda n: read_json(store, records.dataset_key(n), None), needed))
    return [label for label, got in zip(needed.values(), found, strict=True) if got is None]


def list_runs(store: Store) -> list[dict[str, Any]]:
    """Every run in the store, oldest first."""
    keys = [k for k in store.list("runs") if k.count("/") == 2 and k.endswith("/" + records.RUN)]
    runs = [read_json(store, k) for k in keys]
    return sorted(runs, key=lambda r: (r["created"], r["run_id"]))


def load_run(store: Store, run_id: str | None) -> dict[str, Any]:
    """The named run, or the newest one when no id is given."""
    if run_id is None:
        runs = list_runs(store)
        if not runs:
            raise StoreError(f"no runs in {store.uri}: start one with `kbench submit`")
        return runs[-1]
    run = read_json(store, records.run_key(run_id), default=None)
    if run is None:
        raise StoreError(f"no run {run_id!r} in {store.uri}: `kbench runs` lists them")
    return run


def load_config(store: Store, run_id: str, pair: str) -> TrainConfig:
    data = read_json(store, records.pair_key(run_id, pair, records.CONFIG))
    return TrainConfig.from_dict(data, where=records.pair_key(run_id, pair, records.CONFIG))


def read_pair(store: Store, run_id: str, pair: str, with_progress: bool = False) -> dict:
    """A pair's config, epoch records and result (None until it finished); its progress too
    when asked. Records not written yet read as empty."""
    key = lambda name: records.pair_key(run_id, pair, name)  # noqa: E731
    found = {
        "pair": pair,
        "config": read_json(store, key(records.CONFIG)),
        "epochs": read_json(store, key(records.METRICS), default={"epochs": []})["epochs"],
        "result": read_json(store, key(records.RESULT), default=None),
    }
    if with_progress:
        found["progress"] = read_json(store, key(records.PROGRESS), default={})
    return found


@dataclass
class PairStatus:
    pair: str
    state: str  # pending | running | succeeded | failed | cancelled
    epoch: int | None  # last evaluated epoch
    epochs: int
    headline_metric: str
    headline: float | None  # of the last evaluated epoch
    images_per_s: float | None
    eta_s: float | None
    detail: str  # why it failed, where its log is, ...

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pair_statuses(
    store: Store, run: dict[str, Any], backend_states: dict[str, tuple[str, str]]
) -> list[PairStatus]:
    """Merge what the backend knows (state, detail per pair) with what the jobs wrote."""

    def one(pair: str) -> PairStatus:
        records_ = read_pair(store, run["run_id"], pair, with_progress=True)
        config, epochs, result = records_["config"], records_["epochs"], records_["result"]
        progress = records_["progress"]
        state, detail = backend_states.get(pair, ("pending", ""))
        if result is not None:
            state = "succeeded"
        last = epochs[-1] if epochs else None
        running = state == "running"
        return PairStatus(
            pair=pair,
            state=state,
            epoch=last["epoch"] if last else None,
            epochs=config["epochs"],
            headline_metric=dataset_info(config["dataset"]).headline,
            headline=last["headline"] if last else None,
            images_per_s=progress.get("images_per_s") if running else None,
            eta_s=progress.get("eta_s") if running else None,
            detail=detail,
        )

    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(one, run["pairs"]))
