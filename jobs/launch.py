"""torchrun, but with the workers' "bad config" and "lost a peer" exit codes passed through.

torchrun exits 1 whatever its workers exited with, so a Kubernetes podFailurePolicy could not
tell a config error (no retry can help) or a peer gone (not this pod's fault) from a crash. This
runs torchrun's own launcher and, when a worker exited with `JOB_ERROR_EXIT_CODE`, exits with that
code too; when every failed worker lost a peer, with `PEER_LOST_EXIT_CODE` (kbench.jobs.peers
bounds how often). In a pod of a multi-node pair it also names the pod that hosts the rendezvous
(index 0). Arguments are torchrun's:

    python -m kbench.jobs.launch --standalone --nproc-per-node 2 -m kbench.jobs.train ...
"""

from __future__ import annotations

import os
import signal
import sys

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import get_args_parser, run

from kbench.command import trainer_target
from kbench.errors import (
    JOB_ERROR_EXIT_CODE,
    PEER_LOST_EXIT_CODE,
    PREEMPTED_EXIT_CODE,
    KbenchError,
)
from kbench.jobs.peers import pod_exit_code
from kbench.jobs.pod_log import pod_output
from kbench.storage import open_store

# A worker torchrun stopped once another had failed: it says nothing of the failure.
_STOPPED = {PREEMPTED_EXIT_CODE, -signal.SIGTERM, -signal.SIGKILL}


def main(argv: list[str] | None = None) -> None:
    args = get_args_parser().parse_args(argv)
    args.rdzv_conf = rendezvous_conf(args.rdzv_backend, args.rdzv_conf)
    with pod_output(args.training_script_args):  # kept in the store, in a pod
        try:
            run(args)
        except ChildFailedError as e:
            codes = {failure.exitcode for failure in e.failures.values()}
            print(
                f"kbench.jobs.launch: workers failed with exit codes {sorted(codes)}",
                file=sys.stderr,
                flush=True,
            )
            raise SystemExit(exit_code(codes, args.training_script_args)) from None


def exit_code(codes: set[int], trainer_args: list[str]) -> int:
    """The pod's exit code from its failed workers' codes."""
    if JOB_ERROR_EXIT_CODE in codes:
        return JOB_ERROR_EXIT_CODE
    if PEER_LOST_EXIT_CODE not in codes or not codes <= {PEER_LOST_EXIT_CODE, *_STOPPED}:
        return 1
    node = os.environ.get("JOB_COMPLETION_INDEX", "0")
    try:
        store, run_id, pair = trainer_target(trainer_args)
        return pod_exit_code(open_store(store), run_id, pair, node)
    except KbenchError as e:  # the store is away too: count it, as any other failure
        print(f"kbench.jobs.launch: {e}", file=sys.stderr, flush=True)
        return 1


def rendezvous_conf(backend: str, conf: str) -> str:
    """In a pod of an Indexed Job (JOB_COMPLETION_INDEX set), pod 0 hosts the c10d store and
    the others only connect: torch would otherwise decide by resolving the endpoint's name,
    and a headless Service's DNS record published late leaves no pod hosting it."""
    index = os.environ.get("JOB_COMPLETION_INDEX")
    if backend != "c10d" or index is None or "is_host=" in conf:
        return conf
    return ",".join(filter(None, [conf, f"is_host={'true' if index == '0' else 'false'}"]))


if __name__ == "__main__":
    main()
