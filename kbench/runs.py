"""Runs in a store: create one from a plan, find them again, read a pair's records, and say
where each pair stands (kbench.pairs decides the facts; this module reads and writes them)."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import re
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kbench import __version__, records
from kbench.errors import ConfigError, StoreError
from kbench.methods import FINE_TUNE, METHODS
from kbench.pairs import Outcome, PairRecords, PairState, pair_state
from kbench.records import Record
from kbench.registry import dataset_info
from kbench.spec import Grid, Pair, TrainConfig, is_pair_name, pair_name
from kbench.storage import Store, create_json, read_json, write_json
from kbench.sweep_grid import SweepCell


@dataclass
class Run:
    """A run as recorded in run.json: the grid as submitted, its pairs, where they went."""

    run_id: str
    grid: str
    source: str  # the grid's file
    pairs: list[str]
    backend: str
    created: str
    kbench_version: str = __version__
    document: dict[str, Any] = field(default_factory=dict)  # the grid file as written
    # kubernetes: where it went and how: {"namespace", "context", "nodes"} (nodes > 1: JobSets)
    cluster: dict[str, Any] | None = None
    # Each swept (dataset, model) and its trials (kbench.sweep_grid); the chosen settings'
    # seeds join `pairs` once successive halving has chosen (kbench.halving).
    sweeps: list[SweepCell] | None = None

    @classmethod
    def new(cls, run_id: str, grid: Grid, backend: str) -> Run:
        return cls(
            sweeps=grid.sweeps or None,
            run_id=check_run_id(run_id),
            grid=grid.name,
            source=grid.source,
            pairs=[p.name for p in grid.pairs],
            backend=backend,
            created=records.utc_now(),
            document=grid.document,
        )

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Run:
        """A run.json as read from `where` (runs/<id>/run.json). The store may be shared, so
        every name that later becomes a path, a key or a label is checked first."""
        names = {f.name for f in dataclasses.fields(cls)}
        required = ("run_id", "grid", "source", "pairs", "backend", "created")
        if not isinstance(data, dict) or any(key not in data for key in required):
            raise StoreError(f"{where} is not a kbench run record: it lacks {', '.join(required)}")
        run_id, pairs = data["run_id"], data["pairs"]
        if not isinstance(run_id, str) or where != records.run_key(run_id):
            raise StoreError(f"{where} names another run: {run_id!r}")
        try:
            check_run_id(run_id)
        except ConfigError as e:
            raise StoreError(f"{where}: {e}") from None
        if not isinstance(pairs, list) or not all(is_pair_name(p) for p in pairs):
            raise StoreError(f"{where}: pairs: not a list of <dataset>_<model> that kbench knows")
        cluster = data.get("cluster")
        nodes = cluster.get("nodes", 1) if isinstance(cluster, dict) else 1
        if cluster is not None and not (
            isinstance(cluster, dict) and type(nodes) is int and nodes >= 1
        ):
            raise StoreError(f"{where}: cluster: not a namespace, context and node count")
        if data.get("sweeps") is not None:
            sweeps = records.parse(list[SweepCell], data["sweeps"], where)
            trials = [t["pair"] for cell in sweeps for t in cell["trials"]]
            if not set(trials) <= set(pairs):
                raise StoreError(f"{where}: sweeps: a trial that is not one of the run's pairs")
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in ("cluster", "sweeps"):
            if data[key] is None:
                del data[key]
        return data


MAX_RUN_ID = 40  # characters: a run id goes into Job names and labels with its pairs


def new_run_id(grid_name: str, now: dt.datetime | None = None) -> str:
    """`<grid>-<yyyymmdd>-<hhmmss>`: sortable, safe in Kubernetes names and S3 keys, and within
    the run-id rule (`check_run_id`) whatever the grid is called: its name is cut to the first
    24 characters that fit beside the time."""
    now = now or dt.datetime.now(dt.timezone.utc)
    stamp = f"-{now:%Y%m%d-%H%M%S}"
    slug = re.sub(r"[^a-z0-9]+", "-", grid_name.lower()).strip("-")
    return (slug[: MAX_RUN_ID - len(stamp)].rstrip("-") or "run") + stamp


def check_run_id(run_id: str) -> str:
    if not re.fullmatch(rf"[a-z0-9]([a-z0-9-]{{0,{MAX_RUN_ID - 2}}}[a-z0-9])?", run_id):
        raise ConfigError(
            f"bad run id {run_id!r}: use 1-{MAX_RUN_ID} lower-case letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return run_id


def create_run(store: Store, run: Run, pairs: list[Pair], resubmit: bool = False) -> None:
    """Write run.json and every pair's config.json. An existing run is refused, or with
    `resubmit` (a backend that creates only what is missing) kept as it is when it holds the
    same pairs on the same backend."""
    existing = read_json(store, records.run_key(run.run_id), default=None)
    if existing is not None:
        same = existing.get("pairs") == run.pairs and existing.get("backend") == run.backend
        if resubmit and same:
            nodes = _nodes(existing), _nodes(run.to_dict())
            if nodes[0] != nodes[1]:  # Jobs and JobSets of one run would be two runs
                raise ConfigError(
                    f"run {run.run_id} was submitted with --nodes {nodes[0]}: submit it again "
                    "with that, or pick another --run-id"
                )
            return
        raise ConfigError(
            f"run {run.run_id!r} already exists in {store.uri}: pick another --run-id"
        )
    # Take the run id before writing anything: of two submits of one id at the same moment
    # exactly one goes on (on a store with conditional writes), and the other writes nothing.
    claim = {"run_id": run.run_id, "created": run.created, "host": socket.gethostname()}
    if not create_json(store, records.run_key(run.run_id, records.CLAIM), claim):
        raise ConfigError(
            f"run {run.run_id!r} is being created by another submit in {store.uri} (or its "
            "creation was interrupted): pick another --run-id"
        )
    for pair in pairs:
        write_json(
            store, records.pair_key(run.run_id, pair.name, records.CONFIG), pair.config.to_dict()
        )
    # run.json last: a run is listed only once every pair's config is there.
    write_json(store, records.run_key(run.run_id), run.to_dict())


def add_pairs(store: Store, run: Run, pairs: list[Pair]) -> Run:
    """A run with more pairs (a sweep's chosen seeds): their configs first, then run.json;
    pairs it has already are left as they are."""
    new = [p for p in pairs if p.name not in run.pairs]
    if not new:
        return run
    for pair in new:
        write_json(
            store, records.pair_key(run.run_id, pair.name, records.CONFIG), pair.config.to_dict()
        )
    grown = dataclasses.replace(run, pairs=run.pairs + [p.name for p in new])
    write_json(store, records.run_key(run.run_id), grown.to_dict())
    return grown


def _nodes(run: dict[str, Any]) -> Any:
    """Pods per pair of a run record (1 without a cluster: local runs, earlier runs)."""
    cluster = run.get("cluster")
    return cluster.get("nodes", 1) if isinstance(cluster, dict) else 1


def list_runs(store: Store) -> list[Run]:
    """Every run in the store, oldest first."""
    keys = [k for k in store.list("runs") if k.count("/") == 2 and k.endswith("/" + records.RUN)]
    runs = [Run.from_dict(read_json(store, k), where=k) for k in keys]
    return sorted(runs, key=lambda r: (r.created, r.run_id))


def load_run(store: Store, run_id: str | None) -> Run:
    """The named run, or the newest one when no id is given."""
    if run_id is None:
        runs = list_runs(store)
        if not runs:
            raise StoreError(f"no runs in {store.uri}: start one with `kbench submit`")
        return runs[-1]
    key = records.run_key(run_id)
    data = read_json(store, key, default=None)
    if data is None:
        raise ConfigError(f"no run {run_id!r} in {store.uri}: `kbench runs` lists them")
    return Run.from_dict(data, where=key)


def check_pairs(run: Run, pairs: list[str]) -> list[str]:
    """The named pairs, each one of the run's."""
    for pair in pairs:
        if pair not in run.pairs:
            known = ", ".join(run.pairs)
            raise ConfigError(f"run {run.run_id} has no pair {pair!r}; pairs: {known}")
    return pairs


def read_pair(store: Store, run_id: str, pair: str, with_progress: bool = False) -> PairRecords:
    """A pair's config, epoch records and result (None until it finished); its progress too
    when asked. One read once its job has started (summary.json); before, or for a job of an
    older kbench, the separate records. Records not written yet read as empty; every record
    read is checked against its type (kbench.records), and refused in one line if it is not
    one."""
    key = lambda name: records.pair_key(run_id, pair, name)  # noqa: E731
    summary = read_json(store, key(records.SUMMARY), default=None)
    if summary is not None:
        where = key(records.SUMMARY)
        found = records.parse(records.SummaryRecord, summary, where)
        return PairRecords(
            pair,
            _config(found["config"], pair, where),
            found["epochs"],
            found["result"],
            found["progress"] if with_progress else None,
            records.check_prediction_names(found.get("predictions", []), where),
        )

    def optional(kind: type[Record], name: str) -> Record | None:
        data = read_json(store, key(name), default=None)
        return None if data is None else records.parse(kind, data, key(name))

    metrics = optional(records.MetricsRecord, records.METRICS)
    return PairRecords(
        pair=pair,
        config=_config(read_json(store, key(records.CONFIG)), pair, key(records.CONFIG)),
        epochs=metrics["epochs"] if metrics else [],
        result=optional(records.ResultRecord, records.RESULT),
        progress=optional(records.ProgressRecord, records.PROGRESS) if with_progress else None,
    )


def _config(config: Any, pair: str, where: str) -> TrainConfig:
    """The config of this pair, checked as a TrainConfig: its dataset and model (and, for one
    of a grid's seeds, its seed) are what its name says."""
    data = config if isinstance(config, dict) else {}
    dataset, model = data.get("dataset"), data.get("model")
    names = set()
    if isinstance(dataset, str) and isinstance(model, str):
        with contextlib.suppress(ConfigError):  # a model name of no known form: none
            method = data.get("method", FINE_TUNE)
            method = method if method in METHODS else FINE_TUNE  # refused below, by name
            names = {pair_name(dataset, model, s, method) for s in (None, data.get("seed"))}
    trial = re.fullmatch(r"(.+)_trial\d+", pair)  # a sweep's trial of that pair
    if pair not in names and not (trial and trial[1] in names):
        raise StoreError(f"{where} is not the config of {pair}")
    if "select_on" not in data:  # an older kbench's run, which chose on the test split
        data = {**data, "select_on": "test"}
    try:
        return TrainConfig.from_dict(data, where)
    except ConfigError as e:
        raise StoreError(f"{where} is not a config kbench writes: {e}") from None


def read_pairs(
    store: Store, run: Run, with_progress: bool = False, workers: int = 32
) -> list[PairRecords]:
    """Every pair's records, `workers` pairs at a time: S3 GETs are latency-bound."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda p: read_pair(store, run.run_id, p, with_progress), run.pairs))


@dataclass
class PairStatus:
    """One row of `kbench status`."""

    pair: str
    state: PairState
    epoch: int | None  # last evaluated epoch
    epochs: int
    headline_metric: str
    headline: float | None  # of the last evaluated epoch
    images_per_s: float | None
    eta_s: float | None
    detail: str  # why it failed, where its log is, ...

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "state": self.state.value}


def pair_statuses(store: Store, run: Run, backend_states: dict[str, Outcome]) -> list[PairStatus]:
    """Merge what the backend knows of each pair with what its job wrote."""

    def status(found: PairRecords) -> PairStatus:
        outcome = pair_state(found, backend_states.get(found.pair))
        last, progress = found.last, found.progress
        running = outcome.state is PairState.RUNNING
        return PairStatus(
            pair=found.pair,
            state=outcome.state,
            epoch=last["epoch"] if last else None,
            epochs=found.config.epochs,
            headline_metric=dataset_info(found.config.dataset).headline,
            headline=last["headline"] if last else None,
            images_per_s=progress["images_per_s"] if running and progress else None,
            eta_s=progress["eta_s"] if running and progress else None,
            detail=outcome.detail,
        )

    return [status(found) for found in read_pairs(store, run, with_progress=True, workers=16)]
