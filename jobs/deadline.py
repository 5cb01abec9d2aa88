"""A pair's time limit across attempts (the cluster setting `time_limit_seconds`): Kubernetes'
own deadline counts one attempt only (a JobSet's restart starts a new Job, and a new deadline).
The pod is told when the limit runs out; every process of it stops then, even one stuck in a
collective, with the bad-config exit code, so that no retry or restart follows."""

from __future__ import annotations

import datetime as dt
import os
import sys
import threading

from kbench.command import DEADLINE_ENV
from kbench.errors import JOB_ERROR_EXIT_CODE, JOB_ERROR_PREFIX, ConfigError


def watch_deadline() -> None:
    """Refuse to start after the deadline; stop this process when it comes."""
    text = os.environ.get(DEADLINE_ENV)
    if not text:
        return
    try:
        deadline = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{DEADLINE_ENV}={text!r} is not an ISO 8601 time") from None
    left = (deadline - dt.datetime.now(dt.timezone.utc)).total_seconds()
    if left <= 0:
        raise ConfigError(ran_out(text))
    timer = threading.Timer(left, _stop, args=(text,))
    timer.daemon = True
    timer.start()


def ran_out(deadline: str) -> str:
    return (
        f"the pair's time limit ran out at {deadline} (time_limit_seconds, counted from its "
        "submission across every attempt): stopped, not retried"
    )


def _stop(deadline: str) -> None:
    # From a timer thread: the main thread may be stuck in a collective that never returns.
    # Checkpoints are whole objects in the store, so stopping here corrupts none.
    print(f"{JOB_ERROR_PREFIX} {ran_out(deadline)}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(JOB_ERROR_EXIT_CODE)
