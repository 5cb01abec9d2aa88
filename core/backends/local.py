"""The local backend: every pair trains on this machine under `torchrun`, K pairs at a time.

Each pair's process state (pid, exit code, log file) is kept in the store as `local.json`, so
`kbench status`, `logs` and `cancel` work from another shell while `submit` is running.
"""

from __future__ import annotations

import contextlib
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

from kbench import records
from kbench.backends import Echo, Options, Plan
from kbench.command import train_command
from kbench.errors import JOB_ERROR_PREFIX, BackendError
from kbench.pairs import Outcome, PairState
from kbench.runs import Run, utc_now
from kbench.spec import Grid, Pair
from kbench.storage import LocalStore, Store, read_json, write_json

POLL_S = 1.0
LOG = "train.log"


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
        return cls()

    def command(self, store: Store, run_id: str, pair: str) -> list[str]:
        """A pair's job as this backend starts it: torchrun on this machine alone."""
        return self._command(store.uri, run_id, pair)

    def _command(self, store_uri: str, run_id: str, pair: str) -> list[str]:
        torchrun = ["--standalone", f"--nproc-per-node={self.nproc_per_node}"]
        return train_command(sys.executable, torchrun, store_uri, run_id, pair)

    def plan(self, run: Run, pairs: list[Pair], store_uri: str) -> Plan:
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
        return Plan(run=run, pairs=pairs, store_uri=store_uri, documents=[document])

    def check(self, store: Store, plan: Plan) -> None:
        if importlib.util.find_spec("torch") is None:
            raise BackendError(
                "the local backend trains on this machine and needs the training stack: "
                "pip install 'kbench[train]'"
            )

    def submit(self, store: Store, plan: Plan, echo: Echo) -> dict[str, Outcome]:
        """Trains the plan's pairs (their configs are in the store); returns when all ended."""
        run, (document,) = plan.run, plan.documents
        commands = {entry["pair"]: entry["command"] for entry in document["pairs"]}
        n = len(plan.pairs)
        echo(
            f"run {run.run_id}: {n} pairs on this machine, {self.parallel} at a "
            f"time, {self.nproc_per_node} process(es) each; store {store.uri}"
        )
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

    def _run_pair(
        self, store: Store, run: Run, planned: Pair, command: list[str], tag: str, echo: Echo
    ) -> Outcome:
        run_id, pair = run.run_id, planned.name
        key = records.pair_key(run_id, pair, records.LOCAL_STATE)
        log_path = self._log_path(store, run_id, pair)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own group: cancel hits all
            )
        with self._lock:
            self._running[pair] = process
        state = {
            "state": "running",
            "pid": process.pid,
            "host": socket.gethostname(),
            "log": str(log_path),
            "started": utc_now(),
            "command": process.args,
        }
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
        self, store: Store, run: Run, pair: str, follow: bool = False, node: int = 0
    ) -> str | Iterator[str]:
        key = records.pair_key(run.run_id, pair, records.LOCAL_STATE)
        state = read_json(store, key, default=None)
        if state and Path(state["log"]).is_file():
            if follow:
                return _follow(Path(state["log"]), lambda: read_json(store, key)["state"])
            return Path(state["log"]).read_text("utf-8", errors="replace")
        try:
            return store.read(records.pair_key(run.run_id, pair, LOG)).decode(errors="replace")
        except KeyError:
            raise BackendError(f"no log for {pair} of run {run.run_id} yet") from None

    def cancel(self, store: Store, run: Run, pairs: list[str]) -> list[str]:
        stopped = []
        for pair in pairs:
            key = records.pair_key(run.run_id, pair, records.LOCAL_STATE)
            state = read_json(store, key, default=None)
            if not state or state["state"] != "running" or not _alive(state):
                continue
            write_json(store, key, {**state, "state": "cancelling"})
            _terminate(state["pid"])
            stopped.append(pair)
        return stopped

    def _stop_all(self) -> None:
        with self._lock:
            for process in self._running.values():
                _terminate(process.pid)
            for process in self._running.values():
                process.wait()


def _outcome(pair: str, state: dict[str, Any]) -> Outcome:
    """A pair's local.json as a state: a process that is gone without saying so failed."""
    if state["state"] in ("running", "cancelling"):
        if not _alive(state):
            return Outcome(
                PairState.FAILED, "the training process is gone (killed or machine restarted)"
            )
        return Outcome(PairState.RUNNING, "cancelling" if state["state"] == "cancelling" else "")
    if state["state"] == "failed":
        reason = state.get("reason") or f"exit code {state.get('returncode')}"
        return Outcome(PairState.FAILED, f"{reason}; see kbench logs {pair}")
    if state["state"] in (PairState.SUCCEEDED.value, PairState.CANCELLED.value):
        return Outcome(PairState(state["state"]))
    return Outcome(PairState.FAILED, f"{records.LOCAL_STATE} holds an unknown state")


def _terminate(pid: int) -> None:
    """SIGTERM the whole process group: torchrun and its workers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)


def _alive(state: dict[str, Any]) -> bool:
    if state.get("host") != socket.gethostname():
        return True  # another machine's process: assume it is still there
    try:
        os.kill(state["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
