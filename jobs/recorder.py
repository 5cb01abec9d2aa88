"""Writes a pair's records to storage (rank 0 only): the epoch records, progress, the result.

Each write replaces a whole small JSON object, so readers (status, collect) never see a half
record; metrics.json always holds every epoch so far.
"""

from __future__ import annotations

import math
import time
from typing import Any

from kbench import records
from kbench.runs import utc_now
from kbench.storage import Store, write_json

PROGRESS_EVERY_S = 5.0


class Recorder:
    def __init__(self, store: Store, run_id: str, pair: str, enabled: bool, gpus: int) -> None:
        self.store, self.run_id, self.pair, self.enabled = store, run_id, pair, enabled
        self.gpus = gpus
        self.epochs: list[dict[str, Any]] = []
        self._last_progress = -math.inf

    def _key(self, name: str) -> str:
        return records.pair_key(self.run_id, self.pair, name)

    def progress(self, force: bool = False, **fields: Any) -> None:
        """Rewrite progress.json, at most every few seconds unless forced."""
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last_progress < PROGRESS_EVERY_S):
            return
        self._last_progress = now
        per_gpu = fields["images_per_s"] / self.gpus if self.gpus else None
        record = {**fields, "images_per_s_per_gpu": per_gpu, "time": utc_now()}
        write_json(self.store, self._key(records.PROGRESS), record)

    def restore(self, epochs: list[dict[str, Any]]) -> None:
        """Continue from a checkpoint's records: metrics.json is rewritten from these, so an
        epoch recorded after the checkpoint (and trained again now) is not listed twice."""
        self.epochs = list(epochs)

    def epoch(self, record: dict[str, Any], epochs: int) -> None:
        self.epochs.append({**record, "time": utc_now()})
        if self.enabled:
            write_json(self.store, self._key(records.METRICS), {"epochs": self.epochs})
            # One line in the log as well: what `kbench logs` and `kubectl logs` show.
            print(
                f"kbench.jobs.train: epoch {record['epoch']}/{epochs} "
                f"{record['headline_metric']} {record['headline']:.4f} loss {record['loss']:.4f} "
                f"{record['images_per_s']:.0f} img/s",
                flush=True,
            )

    def result(self, summary: dict[str, Any]) -> None:
        if self.enabled:
            write_json(self.store, self._key(records.RESULT), summary)
