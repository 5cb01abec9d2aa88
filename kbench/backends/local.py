"""The local backend: every pair trains on this machine under `torchrun`, K pairs at a time.

Each pair's process state (pid, exit code, log file) is kept in the store as `local.json`, so
`kbench status`, `logs` and `cancel` work from another shell while `submit` is running.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

from kbench import records
from kbench.backends import Echo, Options, Plan, check_world, processes
from kbench.command import train_command
from kbench.errors import BackendError, ConfigError, StoreError
from kbench.halving import advance, decision_line, trial_outcomes
from kbench.image_tree import check_imagefolders
from kbench.pairs import Outcome, PairState
from kbench.records import EpochRecord, LocalProcess, utc_now
from kbench.runs import Run, read_pairs
from kbench.spec import Grid, Pair
from kbench.storage import LocalStore, Store, patient, read_json, write_json

LOG = "train.log"
PROCESS_GONE = "the training process is gone (killed or machine restarted): kbench resume"
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

    def _command(
        self, store_uri: str, run_id: str, pair: str, until: int | None = None
    ) -> list[str]:
        torchrun = ["--standalone", f"--nproc-per-node={self.nproc_per_node}"]
        return train_command(sys.executable, torchrun, store_uri, run_id, pair, until)

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
                    "command": self._command(store_uri, run.run_id, p.name, p.until),
                }
                for p in pairs
            ],
        }
        run = dataclasses.replace(run, cluster={"nproc_per_node": self.nproc_per_node})
        return Plan(run=run, pairs=pairs, store_uri=store_uri, documents=[document])

    def check(self, store: Store, plan: Plan) -> list[str]:
        if importlib.util.find_spec("torch") is None:
            raise BackendError(
                "the local backend trains on this machine and needs the training stack: "
                "pip install 'kbench[train]'"
            )
        check_imagefolders(plan.pairs)
        return []

    def submit(self, store: Store, plan: Plan, echo: Echo) -> dict[str, Outcome]:
        """Trains the plan's pairs (their configs are in the store), then a sweep's later
        rungs and chosen seeds as successive halving decides them; returns when all ended."""
        run = plan.run
        store = patient(store)  # the pairs' jobs wait out a store outage: so does their watcher
        echo(
            f"run {run.run_id}: {len(plan.pairs)} pairs on this machine, {self.parallel} at a "
            f"time, {self.nproc_per_node} process(es) each; store {store.uri}"
        )
        # Who trains this run: `resume` refuses while this process is at it.
        trainer = records.run_key(run.run_id, records.LOCAL_STATE)
        this = processes.record(os.getpid(), "running")
        write_json(store, trainer, this)
        try:
            outcomes = self._train(store, run, plan.pairs, echo)
            while run.sweeps:  # the next rung's trials, or the chosen settings' seeds
                step = advance(store, run, self._sweep_states(store, run))
                run = step.run
                for decision in step.decided:
                    echo(decision_line(decision))
                if not step.work:
                    outcomes.update(trial_outcomes(store, run, self.states(store, run)))
                    break
                outcomes.update(self._train(store, run, step.work, echo))
            return outcomes
        finally:
            write_json(store, trainer, {**this, "state": "done"})

    def _sweep_states(self, store: Store, run: Run) -> dict[str, Outcome]:
        """The pairs' states for the sweep's driver: a trial whose process vanished (this
        machine restarted) trains again, as `resume` trains a pair again."""
        return {p: o for p, o in self.states(store, run).items() if o.detail != PROCESS_GONE}

    def _train(self, store: Store, run: Run, pairs: list[Pair], echo: Echo) -> dict[str, Outcome]:
        """Each pair to its end (or a trial to its rung), `parallel` at a time."""
        n = len(pairs)
        pool = ThreadPoolExecutor(max_workers=self.parallel)
        try:
            futures = {
                pair.name: pool.submit(
                    self._run_pair,
                    store,
                    run,
                    pair,
                    self._command(store.uri, run.run_id, pair.name, pair.until),
                    f"[{i}/{n}]",
                    echo,
                )
                for i, pair in enumerate(pairs, start=1)
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
        state = processes.record(process.pid, "running")
        write_json(store, key, state)
        rung = f" to epoch {planned.until} (rung {planned.rung})" if planned.until else ""
        echo(f"{tag} {pair}: started{rung}, log {log_path}")

        shown = len(_epochs(store, records.pair_key(run_id, pair, records.METRICS)))  # resumed
        while True:
            try:
                returncode = process.wait(timeout=processes.POLL_S)
            except subprocess.TimeoutExpired:
                returncode = None
            epochs = _epochs(store, records.pair_key(run_id, pair, records.METRICS))
            for record in epochs[shown:]:
                echo(f"{tag} {pair}: {_epoch_line(record, planned.config.epochs)}")
            shown = len(epochs)
            if returncode is not None:
                break
        with self._lock:
            self._running.pop(pair, None)

        ended: Literal["succeeded", "cancelled", "failed"] = "succeeded"
        if returncode != 0:  # `cancel` marks the pair before it stops the process
            cancelling = _state(_process_record(store, key)) == "cancelling"
            ended = "cancelled" if cancelling else "failed"
        final = PairState(ended)
        reason = processes.failure_reason(log_path) if final is PairState.FAILED else None
        last: LocalProcess = {
            **state,
            "state": ended,
            "returncode": returncode,
            "reason": reason,
            "finished": utc_now(),
        }
        write_json(store, key, last)
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
            for line in processes.tail(log_path, 15):
                echo(f"    {line}")
        return Outcome(final, reason or "")

    def _log_path(self, store: Store, run_id: str, pair: str) -> Path:
        if isinstance(store, LocalStore):  # beside the pair's records
            return store.root / records.pair_key(run_id, pair, LOG)
        return Path("kbench-logs") / run_id / pair / LOG

    def states(self, store: Store, run: Run) -> dict[str, Outcome]:
        states = {}
        for pair in run.pairs:
            state = _process_record(store, records.pair_key(run.run_id, pair, records.LOCAL_STATE))
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
            return processes.follow(path, lambda: _state(_process_record(store, key)))
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
            state = _process_record(store, key)
            if state is None or state["state"] != "running" or not processes.alive(state):
                continue
            if state["host"] != socket.gethostname():
                raise BackendError(f"{pair} trains on {state['host']!r}: cancel it there")
            if not processes.ours(state):
                raise BackendError(
                    f"{key} names process {state['pid']}, which is not the training "
                    "process kbench started (start time or command line differ): not signalled"
                )
            write_json(store, key, {**state, "state": "cancelling"})
            processes.terminate(state["pid"])
            stopped.append(pair)
        return stopped

    def resume(self, store: Store, run: Run, echo: Echo) -> dict[str, Outcome]:
        """Train again every pair of the run that has not succeeded, each from its last
        checkpoint; refused while the run's submit or any of its pairs still runs."""
        submitter = _process_record(store, records.run_key(run.run_id, records.LOCAL_STATE))
        if submitter and submitter["state"] == "running" and processes.ours(submitter):
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
        # A sweep's trials never write a result: the sweep's driver (submit) goes on with them.
        trials = {t["pair"] for cell in run.sweeps or [] for t in cell["trials"]}
        found = [f for f in read_pairs(store, run) if f.pair not in trials]
        todo = [f for f in found if f.result is None]
        echo(f"run {run.run_id}: {len(found) - len(todo)} pair(s) finished, resuming {len(todo)}")
        if not todo and not run.sweeps:
            return {}
        pairs = [Pair(f.pair, f.config) for f in todo]
        return self.submit(store, self.plan(run, pairs, store.uri), echo)

    def _stop_all(self) -> None:
        with self._lock:
            for process in self._running.values():
                processes.terminate(process.pid)
            for process in self._running.values():
                process.wait()


def _outcome(pair: str, state: LocalProcess) -> Outcome:
    """A pair's local.json as a state: a process that is gone without saying so failed."""
    name = state["state"]
    if name in ("running", "cancelling"):
        if not processes.ours(state):
            return Outcome(PairState.FAILED, PROCESS_GONE)
        return Outcome(PairState.RUNNING, "cancelling" if name == "cancelling" else "")
    if name == "failed":
        reason = state.get("reason") or f"exit code {state.get('returncode')}"
        return Outcome(PairState.FAILED, f"{reason}; see kbench logs {pair}")
    if name in ("succeeded", "cancelled"):
        return Outcome(PairState(name))
    return Outcome(PairState.FAILED, f"{records.LOCAL_STATE} says {name!r} of a pair")


def _process_record(store: Store, key: str) -> LocalProcess | None:
    """A local.json as read (None: there is none), checked against its type: it names a
    process that `cancel` may signal."""
    data = read_json(store, key, default=None)
    return None if data is None else records.parse(LocalProcess, data, key)


def _state(state: LocalProcess | None) -> str | None:
    return state["state"] if state else None


def _epochs(store: Store, key: str) -> list[EpochRecord]:
    """metrics.json's epoch records so far ([] before the first)."""
    data = read_json(store, key, default=None)
    return [] if data is None else records.parse(records.MetricsRecord, data, key)["epochs"]


def _epoch_line(record: EpochRecord, epochs: int) -> str:
    value = f"{record['headline_metric']} {100 * record['headline']:.1f}%"
    line = f"epoch {record['epoch']}/{epochs} {value}"
    if record["epoch"] == 0:
        return line + " (before training)"
    if record["train_loss"] is None:  # a linear probe: fitted, not trained
        return line + f" (linear probe, {record['epoch_seconds']:.0f}s)"
    return line + f", train loss {record['train_loss']:.3f}, {record['images_per_s']:.0f} img/s"
