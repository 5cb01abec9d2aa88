"""torchrun, but with the workers' "bad config" exit code passed through.

torchrun exits 1 whatever its workers exited with, so a Kubernetes podFailurePolicy could not
tell a config error (no retry can help) from a crash. This runs torchrun's own launcher and, when
a worker exited with `JOB_ERROR_EXIT_CODE`, exits with that code too; in a pod of a multi-node
pair it also names the pod that hosts the rendezvous (index 0). Arguments are torchrun's:

    python -m kbench.jobs.launch --standalone --nproc-per-node 2 -m kbench.jobs.train ...
"""

from __future__ import annotations

import os
import sys

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import get_args_parser, run

from kbench.errors import JOB_ERROR_EXIT_CODE


def main(argv: list[str] | None = None) -> None:
    args = get_args_parser().parse_args(argv)
    args.rdzv_conf = rendezvous_conf(args.rdzv_backend, args.rdzv_conf)
    try:
        run(args)
    except ChildFailedError as e:
        codes = {failure.exitcode for failure in e.failures.values()}
        print(
            f"kbench.jobs.launch: workers failed with exit codes {sorted(codes)}",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(JOB_ERROR_EXIT_CODE if JOB_ERROR_EXIT_CODE in codes else 1) from None


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
