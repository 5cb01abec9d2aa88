"""The training job's side of experiment tracking (kbench.tracking): rank 0 hands each epoch's
records to a background thread that sends what the tracker lacks, so a tracker that is down or
slow never holds training up. A failed send is said once, in one line, and tried again with
the next epoch's records; at the end the job waits a bounded time for the last send, and what
is still missing is for `kbench collect --track`."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from kbench import tracking

WAIT_AT_END_S = 15.0  # the most the job's end waits for the tracker


class Tracker:
    def __init__(self, uri: str, run_id: str, pair: str, config: dict[str, Any]) -> None:
        # A tracker that does not answer fails a request in seconds, on this thread only (the
        # client's defaults retry for minutes); set before mlflow is imported.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        self.uri, self.run_id, self.pair, self.config = uri, run_id, pair, config
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tracker")
        self._pending: Future | None = None
        self._lock = threading.Lock()
        self._warned = False
        self._client: Any = None

    @classmethod
    def from_environment(cls, run_id: str, pair: str, config: dict[str, Any]) -> Tracker | None:
        uri = tracking.tracking_uri()
        return cls(uri, run_id, pair, config) if uri else None

    def send(self, epochs: list, result: Any = None) -> None:
        """Send the records so far, in the background; a send still under way is not waited
        for: the next one sends what it missed."""
        with self._lock:
            if self._pending is not None and not self._pending.done():
                if result is None:
                    return  # the next epoch's send carries these too
                self._pending.result()
            snapshot = [dict(e) for e in epochs]
            self._pending = self._thread.submit(self._sync, snapshot, result)

    def flush(self, timeout: float = WAIT_AT_END_S) -> None:
        """Wait, at most `timeout` seconds, for the send under way."""
        pending = self._pending
        if pending is not None:
            with contextlib.suppress(TimeoutError):  # _sync says its own failures
                pending.result(timeout=timeout)

    def close(self, timeout: float = WAIT_AT_END_S) -> None:
        self.flush(timeout)
        self._thread.shutdown(wait=False, cancel_futures=True)

    def _sync(self, epochs: list, result: Any) -> None:
        try:
            if self._client is None:
                self._client = tracking.client(self.uri)
            tracking.sync_pair(self._client, self.run_id, self.pair, self.config, epochs, result)
        except Exception as e:  # never the training's problem
            if not self._warned:
                self._warned = True
                line = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
                print(
                    f"kbench.jobs.train: warning: the tracker at {self.uri} did not take the "
                    f"records ({line}); training goes on, they are sent again with the next "
                    "epoch's, or by `kbench collect --track`",
                    file=sys.stderr,
                    flush=True,
                )
