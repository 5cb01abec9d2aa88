"""Where training runs. A backend first turns a run into a plan: everything it would create,
validated, nothing sent (Kubernetes: the manifests; local: each pair's config and command).
`--dry-run` prints the plan; `send` checks what can be known before anything exists, records
the run, and submits exactly that plan. The model is TorchX's `submit_dryrun` + `schedule`.

    backend = open_backend("kubernetes", grid, options)
    plan = backend.plan(Run.new(run_id, grid, backend.name), grid.pairs, store.uri)
    outcomes = send(backend, plan, store, echo)

Backends share one small interface and are picked by name; their modules (and the `kubernetes`
client) are imported only when their backend is used. The CLI passes `echo` for progress so a
backend never prints by itself.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from kbench.errors import ConfigError
from kbench.pairs import Outcome
from kbench.runs import Run, create_run
from kbench.spec import Grid, Pair
from kbench.storage import Store

Echo = Callable[[str], None]

# name -> "module:Class"; modules are imported only when their backend is used.
BACKENDS = {
    "local": "kbench.backends.local:LocalBackend",
    "kubernetes": "kbench.k8s.backend:KubernetesBackend",
}


@dataclass(frozen=True)
class Options:
    """What a command line says about where pairs run; each backend reads its own."""

    parallel: int = 1  # local: pairs trained at the same time
    nproc_per_node: int = 1  # local: training processes per pair
    profile: str | None = None  # kubernetes: a YAML file of cluster settings
    cluster: dict[str, Any] = field(default_factory=dict)  # kubernetes: settings given as flags
    replace: bool = False  # kubernetes: recreate pairs already on the cluster


@dataclass
class Plan:
    """A submission before it is sent: validated, complete, printable."""

    run: Run  # what run.json will hold
    pairs: list[Pair]  # each pair's resolved config, written beside it
    store_uri: str  # where the pairs' jobs read and write
    documents: list[dict[str, Any]]  # what the backend sends, one document per object


class Backend(Protocol):
    name: str
    resubmits: bool  # submitting an existing run again creates only what is missing
    finishes: bool  # submit returns once the pairs have finished (else: once they are sent)

    @classmethod
    def for_submit(cls, grid: Grid, options: Options) -> Backend:
        """The backend as a submission of this grid configures it."""

    @classmethod
    def for_run(cls, run: Run, options: Options) -> Backend:
        """The backend pointed where an existing run went (options may redirect it)."""

    def plan(self, run: Run, pairs: list[Pair], store_uri: str) -> Plan:
        """Everything the submission would create, validated; sends nothing, and reads only
        what sizes it (Kubernetes: the staged manifests that size each pod's scratch)."""

    def check(self, store: Store, plan: Plan) -> list[str]:
        """Raise a KbenchError naming the fix for what would fail once sent (a missing
        install, an unreachable cluster, data the pods cannot read, a manifest the API server
        refuses), before anything is; return what to warn of, one line each."""

    def submit(self, store: Store, plan: Plan, echo: Echo) -> dict[str, Outcome]:
        """Start every pair of the plan; returns pair -> outcome."""

    def states(self, store: Store, run: Run) -> dict[str, Outcome]:
        """pair -> what the backend sees of it; pairs it knows nothing of are absent."""

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
        """The pair's training log so far (node `node`; every node, prefixed, with None);
        `previous`: the last attempt that failed; `tail`: the last lines only; following, a
        stream of it until the pair ends."""

    def cancel(self, store: Store, run: Run, pairs: list[str]) -> list[str]:
        """Stop the given pairs; returns those that were running."""


def check_world(pairs: list[Pair], processes: int) -> None:
    """Every pair's global batch splits evenly over its training processes (refused at plan
    time, not inside a pod)."""
    for pair in pairs:
        if pair.config.batch_size % processes:
            raise ConfigError(
                f"pair {pair.name}: batch_size {pair.config.batch_size} does not split evenly "
                f"over {processes} training processes: pick a multiple of {processes}"
            )


def send(backend: Backend, plan: Plan, store: Store, echo: Echo) -> dict[str, Outcome]:
    """Check, record the run, submit: a submission refused by a check leaves nothing behind."""
    warnings = verify(backend, plan, store)
    create_run(store, plan.run, plan.pairs, resubmit=backend.resubmits)
    for warning in warnings:  # once nothing refused the submission: an error stays one line
        echo(f"warning: {warning}")
    return backend.submit(store, plan, echo)


def send_more(
    backend: Backend, run: Run, pairs: list[Pair], store: Store, echo: Echo
) -> dict[str, Outcome]:
    """More pairs of a recorded run (a sweep's next rung, its chosen seeds; their configs are
    in the store): checked as a submission is, then sent; what exists already is skipped."""
    plan = backend.plan(run, pairs, store.uri)
    for warning in backend.check(store, plan):
        echo(f"warning: {warning}")
    return backend.submit(store, plan, echo)


def verify(backend: Backend, plan: Plan, store: Store) -> list[str]:
    """Every check a submission makes before anything exists (`submit --dry-run=server`
    alone); its warnings."""
    from kbench.staged import require_a_start

    require_a_start(store, plan.pairs)
    return backend.check(store, plan)


def backend_class(name: str) -> Any:
    try:
        module, _, cls = BACKENDS[name].partition(":")
    except KeyError:
        raise ConfigError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}") from None
    return getattr(importlib.import_module(module), cls)


def open_backend(name: str, grid: Grid, options: Options) -> Backend:
    """The named backend, configured for submitting this grid."""
    return backend_class(name).for_submit(grid, options)


def backend_of(run: Run, options: Options | None = None) -> Backend:
    """The backend that ran a run, pointed where the run went."""
    return backend_class(run.backend).for_run(run, options or Options())
