"""A process of a multi-node pair whose peer went away: a preempted pod, a lost node, a peer
that crashed. Its collective or the rendezvous store breaks with the other end's words (gloo:
"Connection reset by peer"; c10d: DistNetworkError), though nothing is wrong with it.

The process exits with PEER_LOST_EXIT_CODE, and so does its pod (kbench.jobs.launch) when every
failed process of it did: the gang Job's podFailurePolicy ignores that exit (the pod is replaced
without spending a restart), and the peer's own failure says whether the gang's restart counts
(preempted: free; crashed: counted). So that a peer that never comes back cannot restart
a pair for ever, a restart is free only while training moves on: a pod that lost a peer more
than FREE_PEER_LOSSES times since the same checkpoint exits 1, a counted failure, instead.
NCCL's watchdog aborts the process on a lost peer (no Python error): that exit counts."""

from __future__ import annotations

import sys

import torch.distributed as dist

from kbench import records
from kbench.errors import PEER_LOST_EXIT_CODE
from kbench.jobs.checkpoint import latest_epoch
from kbench.storage import Store, read_json, write_json

FREE_PEER_LOSSES = 3

# What gloo and NCCL say when the process at the other end of a connection is gone.
_GONE = ("connection reset by peer", "connection closed by peer", "remote process exited")


def lost_peer(error: BaseException) -> bool:
    """The error is a peer gone, not this process's own: the rendezvous store unreachable, or
    a collective whose other end went away."""
    if isinstance(error, (dist.DistNetworkError, dist.DistStoreError)):
        return True
    return isinstance(error, RuntimeError) and any(w in str(error).lower() for w in _GONE)


def pod_exit_code(store: Store, run_id: str, pair: str, node: str) -> int:
    """The exit code of a pod whose failed processes all lost a peer: PEER_LOST_EXIT_CODE, or
    1 once this node has lost a peer more than FREE_PEER_LOSSES times without a new
    checkpoint (the count is kept in the store)."""
    key = records.pair_key(run_id, pair, records.PEER_LOST.format(node=node))
    epoch = latest_epoch(store, run_id, pair)
    found = read_json(store, key, default=None)
    mark = records.parse(records.PeerLostMark, found, key) if found is not None else None
    count = mark["count"] + 1 if mark and mark["epoch"] == epoch else 1
    new: records.PeerLostMark = {"epoch": epoch, "count": count}
    write_json(store, key, new)
    if count > FREE_PEER_LOSSES:
        print(
            f"kbench.jobs.launch: lost a peer {count} times since checkpoint {epoch}: "
            "counted as a failure",
            file=sys.stderr,
            flush=True,
        )
        return 1
    print(
        f"kbench.jobs.launch: lost a peer; this pod is replaced without spending a restart "
        f"({count} of {FREE_PEER_LOSSES} free since checkpoint {epoch})",
        file=sys.stderr,
        flush=True,
    )
    return PEER_LOST_EXIT_CODE
