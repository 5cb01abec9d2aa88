"""Where training runs: backends share one small interface and are picked by name.

Each backend gets the store and a run (as in run.json); the CLI passes `echo` for progress so
the backend never prints by itself.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from kbench.errors import ConfigError
from kbench.spec import Pair
from kbench.storage import Store

Echo = Callable[[str], None]

# name -> "module:Class"; modules are imported only when their backend is used.
BACKENDS = {
    "local": "kbench.backends.local:LocalBackend",
    "kubernetes": "kbench.k8s.backend:KubernetesBackend",
}


class Backend(Protocol):
    name: str

    def check(self) -> None:
        """Raise a KbenchError saying what to install or configure, before anything runs."""

    def submit(
        self, store: Store, run: dict[str, Any], pairs: list[Pair], echo: Echo
    ) -> dict[str, str]:
        """Start every pair of the run; returns pair -> outcome ("succeeded", "created", ...
        or "failed: why")."""

    def states(self, store: Store, run: dict[str, Any]) -> dict[str, tuple[str, str]]:
        """pair -> (state, detail) as the backend sees it; pairs it knows nothing of are absent."""

    def logs(
        self, store: Store, run: dict[str, Any], pair: str, follow: bool = False, node: int = 0
    ) -> str | Iterator[str]:
        """The pair's training log so far; following, a stream of it until the pair ends."""

    def cancel(self, store: Store, run: dict[str, Any], pairs: list[str]) -> list[str]:
        """Stop the given pairs; returns those that were running."""


def get_backend(name: str, **options: Any) -> Backend:
    try:
        module, _, cls = BACKENDS[name].partition(":")
    except KeyError:
        raise ConfigError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}") from None
    return getattr(importlib.import_module(module), cls)(**options)
