"""torchrun, but with the workers' "bad config" exit code passed through.

torchrun exits 1 whatever its workers exited with, so a Kubernetes podFailurePolicy could not
tell a config error (no retry can help) from a crash. This runs torchrun's own launcher and, when
a worker exited with `JOB_ERROR_EXIT_CODE`, exits with that code too. Arguments are torchrun's:

    python -m kbench.jobs.launch --standalone --nproc-per-node 2 -m kbench.jobs.train ...
"""

from __future__ import annotations

import sys

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import get_args_parser, run

from kbench.errors import JOB_ERROR_EXIT_CODE


def main(argv: list[str] | None = None) -> None:
    args = get_args_parser().parse_args(argv)
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


if __name__ == "__main__":
    main()
