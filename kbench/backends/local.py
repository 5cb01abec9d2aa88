"""The local backend: every pair trains on this machine under `torchrun`, K pairs at a time.

Each pair's process state (pid, exit code, log file) is kept in the store as `local.json`, so
`kbench status`, `logs` and `cancel` work from another shell while `submit` is running.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil

from kbench import records
from kbench.backends import Echo, Options, Plan, check_world
from kbench.command import train_command
from kbench.errors import JOB_ERROR_PREFIX, BackendError, ConfigError, StoreError
from kbench.pairs import Outcome, PairState
from kbench.records import utc_now
from kbench.runs import Run, read_pairs
from kbench.spec import Grid, Pair, TrainConfig
from kbench.storage import LocalStore, Store, open_store, patient, read_json, write_json

POLL_S = 1.0
LOG = "train.log"
RESUMED = "\n==== kbench: resumed at "  # starts each later attempt in a pair's log


class LocalBackend:
    name = "local"
    resubmits = False  # a run trains once; its records stay
    finishes = True  # submit trains every pair and returns when all have ended

    def __init__(self, parallel: int = 1, nproc_per_node: int = 1) -> None:
        self.parallel = parallel
        self.nproc_per_node = nproc_per_node
        self._running: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_submit(cls, grid: Grid, options: Options) -> LocalBackend:
        return cls(parallel=options.parallel, nproc_per_node=options.nproc_per_node)

    @classmethod
    def for_run(cls, run: Run, options: Options) -> LocalBackend:
        """As the run was submitted (processes per pair), `parallel` as the command says."""
        nproc = (run.cluster or {}).get("nproc_per_node", 1)
        if not isinstance(nproc, int) or isinstance(nproc, bool) or not 1 <= nproc <= 1024:
            raise StoreError(f"run {run.run_id}: run.json's nproc_per_node is {nproc!r}")
        return cls(parallel=options.parallel, nproc_per_node=nproc)

    def command(self, store: Store, run_id: str, pair: str) -> list[str]:
        """A pair's job as this backend starts it: torchrun on this machine alone."""
        return self._command(store.uri, run_id, pair)

    def _command(self, store_uri: str, run_id: str, pair: str) -> list[str]:
        torchrun = ["--standalone", f"--nproc-per-node={self.nproc_per_node}"]
        return train_command(sys.executable, torchrun, store_uri, run_id, pair)

    def plan(self, run: Run, pairs: list[Pair], store_uri: str) -> Plan:
        check_world(pairs, self.nproc_per_node)
        document = {
            "run_id": run.run_id,
            "grid": run.grid,
            "backend": self.name,
            "store": store_uri,
            "parallel": self.parallel,
            "pairs": [
                {
                    "pair": p.name,
                    "config": p.config.to_dict(),
                    "command": self._command(store_uri, run.run_id, p.name),
                }
                for p in pairs
            ],
        }
        run = dataclasses.replace(run, cluster={"nproc_per_node": self.nproc_per_node})
        return Plan(run=run, pairs=pairs, store_uri=store_uri, documents=[document])

    def check(self, store: Store, plan: Plan) -> None:
        if importlib.util.find_spec("torch") is None:
            raise BackendError(
                "the local backend trains on this machine and needs the training stack: "
                "pip install 'kbench[train]'"
            )
        for pair in plan.pairs:  # a user's folder: there, before a run is recorded
            if pair.config.data is not None:
                check_data(pair.name, pair.config.data)

    def submit(self, store: Store, plan: Plan, echo: Echo) -> dict[str, Outcome]:
        """Trains the plan's pairs (their configs are in the store); returns when all ended."""
        run, (document,) = plan.run, plan.documents
        store = patient(store)  # the pairs' jobs wait out a store outage: so does their watcher
        commands = {entry["pair"]: entry["command"] for entry in document["pairs"]}
        n = len(plan.pairs)
        echo(
            f"run {run.run_id}: {n} pairs on this machine, {self.parallel} at a "
            f"time, {self.nproc_per_node} process(es) each; store {store.uri}"
        )
        # Who trains this run: `resume` refuses while this process is at it.
        trainer, this = records.run_key(run.run_id, records.LOCAL_STATE), _this_process()
        write_json(store, trainer, {**this, "state": "running"})
        pool = ThreadPoolExecutor(max_workers=self.parallel)
        try:
            futures = {
                pair.name: pool.submit(
                    self._run_pair, store, run, pair, commands[pair.name], f"[{i}/{n}]", echo
                )
                for i, pair in enumerate(plan.pairs, start=1)
            }
            return {pair: future.result() for pair, future in futures.items()}
        except KeyboardInterrupt:
            echo("interrupted: stopping the running pairs")
            pool.shutdown(wait=False, cancel_futures=True)
            self._stop_all()
            raise
        finally:
            pool.shutdown(wait=True)
            write_json(store, trainer, {**this, "state": "done"})

    def _run_pair(
        self, store: Store, run: Run, planned: Pair, command: list[str], tag: str, echo: Echo
    ) -> Outcome:
        run_id, pair = run.run_id, planned.name
        key = records.pair_key(run_id, pair, records.LOCAL_STATE)
        log_path = self._log_path(store, run_id, pair)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with open(log_path, "ab") as log:  # a resumed pair's log goes on after the last attempt
            if log.tell():
                log.write(f"{RESUMED}{utc_now()} ====\n".encode())
                log.flush()
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own group: cancel hits all
            )
        with self._lock:
            self._running[pair] = process
        state = {"state": "running", "started": utc_now(), **_process(process.pid)}
        write_json(store, key, state)
        echo(f"{tag} {pair}: started, log {log_path}")

        shown = 0
        while True:
            try:
                returncode = process.wait(timeout=POLL_S)
            except subprocess.TimeoutExpired:
                returncode = None
            epochs = read_json(
                store, records.pair_key(run_id, pair, records.METRICS), default={"epochs": []}
            )["epochs"]
            for record in epochs[shown:]:
                echo(f"{tag} {pair}: {_epoch_line(record, planned.config.epochs)}")
            shown = len(epochs)
            if returncode is not None:
                break
        with self._lock:
            self._running.pop(pair, None)

        final = PairState.SUCCEEDED
        if returncode != 0:  # `cancel` marks the pair before it stops the process
            cancelling = read_json(store, key, default={}).get("state") == "cancelling"
            final = PairState.CANCELLED if cancelling else PairState.FAILED
        reason = _failure_reason(log_path) if final is PairState.FAILED else None
        write_json(
            store,
            key,
            {
                **state,
                "state": final.value,
                "returncode": returncode,
                "reason": reason,
                "finished": utc_now(),
            },
        )
        if not isinstance(store, LocalStore):
            store.write(records.pair_key(run_id, pair, LOG), log_path.read_bytes())
        seconds = time.monotonic() - started
        if final is not PairState.FAILED:
            echo(f"{tag} {pair}: {final.value} in {seconds:.0f}s")
        elif reason:
            echo(f"{tag} {pair}: FAILED after {seconds:.0f}s: {reason} (log {log_path})")
        else:
            echo(
                f"{tag} {pair}: FAILED (exit code {returncode}) after {seconds:.0f}s; "
                f"last lines of {log_path}:"
            )
            for line in _tail(log_path, 15):
                echo(f"    {line}")
        return Outcome(final, reason or "")

    def _log_path(self, store: Store, run_id: str, pair: str) -> Path:
        if isinstance(store, LocalStore):  # beside the pair's records
            return store.root / records.pair_key(run_id, pair, LOG)
        return Path("kbench-logs") / run_id / pair / LOG

    def states(self, store: Store, run: Run) -> dict[str, Outcome]:
        states = {}
        for pair in run.pairs:
            state = read_json(
                store, records.pair_key(run.run_id, pair, records.LOCAL_STATE), default=None
            )
            if state is not None:
                states[pair] = _outcome(pair, state)
        return states

    def logs(
        self,
        store: Store,
        run: Run,
        pair: str,
        follow: bool = False,
        node: int | None = 0,
        previous: bool = False,
        tail: int | None = None,
    ) -> str | Iterator[str]:
        """The pair's log (every attempt, a resume marks where each began); `previous`: the
        attempt before the last; `tail`: its last lines. A local pair has one node, 0."""
        if node not in (0, None):
            raise ConfigError(f"a local pair runs on one node, 0: got --node {node}")
        key = records.pair_key(run.run_id, pair, records.LOCAL_STATE)
        # The log is where this backend puts it, never a path read from the (shared) store.
        path = self._log_path(store, run.run_id, pair)
        if follow and path.is_file():
            return _follow(path, lambda: _state(read_json(store, key, default=None)))
        if path.is_file():
            text = path.read_text("utf-8", errors="replace")
        else:
            try:
                text = store.read(records.pair_key(run.run_id, pair, LOG)).decode(errors="replace")
            except KeyError:
                raise BackendError(f"no log for {pair} of run {run.run_id} yet") from None
        if previous:
            attempts = text.split(RESUMED)
            if len(attempts) < 2:
                raise BackendError(f"{pair} of run {run.run_id} has had one attempt only")
            text = attempts[-2]
        return "".join(text.splitlines(keepends=True)[-tail:]) if tail else text

    def cancel(self, store: Store, run: Run, pairs: list[str]) -> list[str]:
        stopped = []
        for pair in pairs:
            key = records.pair_key(run.run_id, pair, records.LOCAL_STATE)
            state = read_json(store, key, default=None)
            if _state(state) != "running" or not _alive(state):
                continue
            if state.get("host") != socket.gethostname():
                raise BackendError(f"{pair} trains on {state.get('host')!r}: cancel it there")
            if not _ours(state):
                raise BackendError(
                    f"{key} names process {state.get('pid')!r}, which is not the training "
                    "process kbench started (start time or command line differ): not signalled"
                )
            write_json(store, key, {**state, "state": "cancelling"})
            _terminate(state["pid"])
            stopped.append(pair)
        return stopped

    def resume(self, store: Store, run: Run, echo: Echo) -> dict[str, Outcome]:
        """Train again every pair of the run that has not succeeded, each from its last
        checkpoint; refused while the run's submit or any of its pairs still runs."""
        submitter = read_json(store, records.run_key(run.run_id, records.LOCAL_STATE), default={})
        if _state(submitter) == "running" and _ours(submitter):
            raise BackendError(
                f"run {run.run_id} is still being trained by process {submitter['pid']} on "
                f"{submitter['host']}: wait for it, or stop it (Ctrl-C, kbench cancel) first"
            )
        states = self.states(store, run)
        running = [p for p, o in states.items() if o.state is PairState.RUNNING]
        if running:
            raise BackendError(
                f"run {run.run_id}: {', '.join(running)} still running: wait, or `kbench "
                f"cancel --run {run.run_id}` first"
            )
        todo = [found for found in read_pairs(store, run) if found.result is None]
        done = len(run.pairs) - len(todo)
        echo(f"run {run.run_id}: {done} pair(s) finished, resuming {len(todo)}")
        if not todo:
            return {}
        where = lambda pair: records.pair_key(run.run_id, pair, records.CONFIG)  # noqa: E731
        pairs = [Pair(f.pair, TrainConfig.from_dict(f.config, where(f.pair))) for f in todo]
        return self.submit(store, self.plan(run, pairs, store.uri), echo)

    def _stop_all(self) -> None:
        with self._lock:
            for process in self._running.values():
                _terminate(process.pid)
            for process in self._running.values():
                process.wait()


def check_data(pair: str, data: str) -> None:
    """An imagefolder's `data` holds a train/ folder (locally) or anything (under s3://)."""
    if data.startswith("s3://"):
        if not open_store(data).list("train"):
            raise ConfigError(f"pair {pair}: data: nothing under {data}/train/")
    elif not (Path(data) / "train").is_dir():
        what = "has no train/ folder" if Path(data).is_dir() else "does not exist"
        raise ConfigError(f"pair {pair}: data: {data} {what}: lay it out as train/<class>/<image>")


def _outcome(pair: str, state: Any) -> Outcome:
    """A pair's local.json as a state: a process that is gone without saying so failed."""
    name = _state(state)
    if name in ("running", "cancelling"):
        if not _ours(state):
            return Outcome(
                PairState.FAILED,
                "the training process is gone (killed or machine restarted): kbench resume",
            )
        return Outcome(PairState.RUNNING, "cancelling" if name == "cancelling" else "")
    if name == "failed":
        reason = state.get("reason") or f"exit code {state.get('returncode')}"
        return Outcome(PairState.FAILED, f"{reason}; see kbench logs {pair}")
    if name in (PairState.SUCCEEDED.value, PairState.CANCELLED.value):
        return Outcome(PairState(name))
    return Outcome(PairState.FAILED, f"{records.LOCAL_STATE} holds no state kbench knows")


def _state(state: Any) -> str | None:
    """The `state` of a local.json (which the shared store may hold in any shape)."""
    return state.get("state") if isinstance(state, dict) else None


def _process(pid: int) -> dict[str, Any]:
    """What identifies a process beyond its id, which the system reuses: host, start time
    (since boot) and command line."""
    process = psutil.Process(pid)
    return {
        "pid": pid,
        "host": socket.gethostname(),
        "since_boot": _since_boot(pid),
        "command": process.cmdline(),
    }


def _since_boot(pid: int) -> float:
    """When the process started, in seconds after the machine booted: fixed for its life.
    Not psutil's create_time alone: that adds the boot time, which the kernel derives from
    the wall clock, so a clock step (NTP, a resumed VM) moves it and a running trainer would
    be taken for a stranger. psutil reads the boot time as it makes the Process; reading it
    before and after makes sure both sides of the subtraction saw the same clock."""
    while True:
        boot = psutil.boot_time()
        created = psutil.Process(pid).create_time()
        if psutil.boot_time() == boot:
            return created - boot


def _this_process() -> dict[str, Any]:
    return {"started": utc_now(), **_process(os.getpid())}


def _alive(state: Any) -> bool:
    """Whether the process local.json names may still run (another host's: assume so)."""
    if not isinstance(state, dict) or not isinstance(state.get("pid"), int):
        return False
    if state.get("host") != socket.gethostname():
        return True
    return psutil.pid_exists(state["pid"])


def _ours(state: Any) -> bool:
    """Whether the process local.json names is alive and the one kbench started: same start
    time and command line (a pid alone may since name another process)."""
    if not _alive(state):
        return False
    if state.get("host") != socket.gethostname():
        return True  # cannot be checked from here; nor signalled
    try:
        pid = state["pid"]
        same_start = abs(_since_boot(pid) - float(state.get("since_boot", -1))) < 0.01
        return same_start and psutil.Process(pid).cmdline() == state.get("command")
    except (psutil.Error, OSError, TypeError, ValueError):
        return False


def _terminate(pid: int) -> None:
    """SIGTERM the whole process group: torchrun and its workers (it leads its group)."""
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGTERM)


def _epoch_line(record: dict[str, Any], epochs: int) -> str:
    value = f"{record['headline_metric']} {100 * record['headline']:.1f}%"
    line = f"epoch {record['epoch']}/{epochs} {value}"
    if record["epoch"] == 0:
        return line + " (before training)"
    return line + f", train loss {record['train_loss']:.3f}, {record['images_per_s']:.0f} img/s"


def _follow(path: Path, state: Callable[[], str]) -> Iterator[str]:
    """The log as it grows, until its pair stops running."""
    with open(path, encoding="utf-8", errors="replace") as f:
        while True:
            chunk = f.read()
            if chunk:
                yield chunk
            elif state() not in ("running", "cancelling"):
                yield f.read()
                return
            else:
                time.sleep(POLL_S)


def _failure_reason(log_path: Path) -> str | None:
    """The job's own one-line error (a bad config), if it printed one."""
    for line in reversed(_tail(log_path, 200)):
        if line.startswith(JOB_ERROR_PREFIX):
            return line.removeprefix(JOB_ERROR_PREFIX).strip()
    return None


def _tail(path: Path, lines: int) -> list[str]:
    return path.read_text("utf-8", errors="replace").splitlines()[-lines:]
