"""Pods' output as kbench.jobs.pod_log kept it in the store, for `kbench logs` once the pods
are gone (a gang restart deletes the failed ones, a TTL or a colleague the rest). The store is
not trusted: a key that is not a log's name is left out."""

from __future__ import annotations

import re

from kbench import records
from kbench.storage import Store

_NAME = re.compile(r"node-(\d+)/(\d{8}T\d{6}Z)-([a-z0-9][-a-z0-9.]*)\.log")


def kept_logs(store: Store, run_id: str, pair: str) -> dict[int, list[tuple[str, str]]]:
    """node -> [(pod, key)] of the pair's kept logs, in the order their attempts started (one
    list of the store)."""
    folder = records.pair_key(run_id, pair, records.LOGS + "/")
    found: dict[int, list[tuple[str, str, str]]] = {}
    for key in store.list(folder):
        name = _NAME.fullmatch(key.removeprefix(folder))
        if name:
            node, started, pod = name.groups()
            found.setdefault(int(node), []).append((started, pod, key))
    return {node: [(pod, key) for _, pod, key in sorted(logs)] for node, logs in found.items()}


def kept_text(store: Store, pod: str, key: str, tail: int | None) -> str:
    """A kept log, last `tail` lines only if given, under a line that says where it is from."""
    text = store.read(key).decode(errors="replace")
    lines = text.splitlines(keepends=True)
    kept = text if tail is None else "".join(lines[len(lines) - tail :] if tail else [])
    return f"[pod {pod} is gone: its output as kept in the store]\n{kept}"
