"""Writes a pair's records to storage (rank 0 only) and owns what they hold in common: every
epoch record's split, metric, world size and GPU count, every progress record's epoch and step
counts. The training loop hands it numbers and evaluations; it builds the records, typed by
kbench.records.

Each write replaces a whole small JSON object, so readers (status, collect) never see a half
record; metrics.json always holds every epoch so far.
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal

from typing_extensions import NotRequired

from kbench import records
from kbench.jobs.metrics import Evaluation
from kbench.jobs.tensorboard_events import write_events
from kbench.jobs.tracker import Tracker
from kbench.pairs import PairRecords, per_gpu, result_record, value
from kbench.records import (
    Environment,
    EpochRecord,
    EvalMetrics,
    ProgressRecord,
    ResultRecord,
    StagedCopy,
    SummaryRecord,
    ValRecord,
    WiseFtPoint,
    metrics_of,
    utc_now,
)
from kbench.registry import dataset_info
from kbench.spec import TrainConfig
from kbench.storage import Store, write_json

PROGRESS_EVERY_S = 5.0


class Evaluated(EvalMetrics):
    """An evaluation as records hold it: the test split's metrics and headline, and the
    validation split's evaluation where the run has one."""

    headline: float
    val: NotRequired[ValRecord]


class Recorder:
    def __init__(
        self,
        store: Store,
        run_id: str,
        pair: str,
        config: TrainConfig,
        *,
        eval_split: str,
        val_split: str | None = None,  # the validation split's name (select_on: val)
        staging: StagedCopy | None = None,  # how the staged copy of the data was prepared
        steps: int,  # training steps per epoch
        images: int,  # images trained per epoch, all processes together
        rank: int,
        world: int,
        gpus: int,  # 0 on a CPU
    ) -> None:
        self.store, self.run_id, self.pair, self.config = store, run_id, pair, config
        self.enabled = rank == 0
        # MLflow, where the environment names one (kbench.tracking): rank 0 sends.
        tracker = Tracker.from_environment(run_id, pair, config.to_dict())
        self.tracker = tracker if self.enabled else None
        self.steps, self.images = steps, images
        self.headline_metric = dataset_info(config.dataset).headline
        self.split, self.val_split = eval_split, val_split
        self.world, self.gpus, self.staging = world, gpus, staging
        self.epochs: list[EpochRecord] = []
        self.predicted: dict[str, Any] = {}  # evaluation name -> each sample's predicted class
        self._samples: tuple[Any, Any] | None = None  # the (labels, groups) they are of
        self._progress: ProgressRecord | None = None
        self._result: ResultRecord | None = None
        self._last_progress = -math.inf

    def close(self) -> None:
        """Wait a bounded time for the tracker's last send."""
        if self.tracker is not None:
            self.tracker.close()

    def _key(self, name: str) -> str:
        return records.pair_key(self.run_id, self.pair, name)

    @property
    def records(self) -> PairRecords:
        return PairRecords(self.pair, self.config, self.epochs)

    # ---------------------------------------------------------------------------- progress

    def progress(
        self,
        phase: Literal["starting", "eval", "train", "done"],
        epoch: int,
        step: int = 0,
        images_per_s: float = 0.0,
        eta_s: float | None = None,
        force: bool = True,
    ) -> None:
        """Rewrite the progress record (in summary.json), at most every few seconds unless
        forced."""
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last_progress < PROGRESS_EVERY_S):
            return
        self._last_progress = now
        self._progress = {
            "phase": phase,
            "epoch": epoch,
            "epochs": self.config.epochs,
            "step": step,
            "steps": self.steps,
            "images_per_s": images_per_s,
            "images_per_s_per_gpu": per_gpu(images_per_s, self.gpus),
            "eta_s": eta_s,
            "time": utc_now(),
        }
        self._write_summary()

    def _keep_predictions(self, name: str, predictions: Any, write: bool = True) -> None:
        """An evaluation's predicted classes, kept with the others in predictions.npz."""
        if predictions is None:
            return
        self.predicted[name] = predictions.predicted
        self._samples = (predictions.labels, predictions.groups)
        if write:
            self._write_predictions()

    def _write_predictions(self) -> None:
        if self.enabled and self._samples is not None:
            labels, groups = self._samples
            data = records.encode_predictions(labels, groups, self.predicted)
            self.store.write(self._key(records.PREDICTIONS), data)

    def _write_summary(self) -> None:
        """summary.json: everything `status` and `collect` read of the pair, in one object,
        rewritten with each of the job's writes (progress, an epoch, the result)."""
        summary: SummaryRecord = {
            "config": self.config.to_dict(),
            "epochs": self.epochs,
            "progress": self._progress,
            "result": self._result,
            "predictions": sorted(self.predicted),  # what predictions.npz holds
        }
        write_json(self.store, self._key(records.SUMMARY), summary)

    def images_per_s(self, seconds: float) -> float:
        """Throughput of a whole epoch trained in `seconds`, all processes together; 0 for an
        epoch that trained nothing (epoch 0)."""
        return self.images / seconds if seconds else 0.0

    def step(self, epoch: int, step: int, seconds: float) -> None:
        """`step` steps of `epoch` done in `seconds`: throughput and time left so far. Every
        step is a full batch but the last."""
        done = min(step * self.config.batch_size, self.images)
        images_per_s = done / seconds
        left = (self.config.epochs - epoch + 1) * self.images - done
        self.progress("train", epoch, step, images_per_s, left / images_per_s, force=False)

    # ------------------------------------------------------------------------------ epochs

    def restore(self, epochs: list[EpochRecord]) -> None:
        """Continue from a checkpoint's records: metrics.json is rewritten from these, so an
        epoch recorded after the checkpoint (and trained again now) is not listed twice; the
        predictions of those epochs are read back (rank 0 writes them)."""
        self.epochs = list(epochs)
        if not self.enabled:
            return
        try:
            stored = records.decode_predictions(self.store.read(self._key(records.PREDICTIONS)))
        except (KeyError, ValueError):  # none yet, or unreadable: the next evaluation rewrites
            return
        kept = {f"epoch_{record['epoch']}" for record in epochs}
        self.predicted = {k: p.predicted for k, p in stored.items() if k in kept}
        if stored:
            first = next(iter(stored.values()))
            self._samples = (first.labels, first.groups)

    def evaluation(self, epoch: int) -> Evaluation | None:
        """The evaluation recorded for `epoch` (on every process alike), or None; its
        predictions are kept already."""
        record = next((r for r in self.epochs if r["epoch"] == epoch), None)
        if record is None:
            return None
        val = record.get("val")
        return Evaluation(metrics_of(record), None, metrics_of(val) if val else None)

    def epoch(
        self,
        epoch: int,
        evaluation: Evaluation,
        *,
        train_loss: float | None = None,
        lr: float | None = None,
        seconds: float = 0.0,
    ) -> None:
        """One evaluated epoch; epoch 0 (the model before training) trained nothing."""
        self._keep_predictions(f"epoch_{epoch}", evaluation.predictions)
        images_per_s = self.images_per_s(seconds)
        record: EpochRecord = {
            **self._evaluated(evaluation),
            "epoch": epoch,
            "split": self.split,
            "headline_metric": self.headline_metric,
            "train_loss": train_loss,
            "lr": lr,
            "epoch_seconds": seconds,
            "images_per_s": images_per_s,
            "images_per_s_per_gpu": per_gpu(images_per_s, self.gpus) if epoch else None,
            "world_size": self.world,
            "gpus": self.gpus,
            "time": utc_now(),
            "eval_seconds": evaluation.seconds,
        }
        if self.staging is not None:
            record["data"] = self.staging
        self.epochs.append(record)
        if self.enabled:
            write_json(self.store, self._key(records.METRICS), {"epochs": self.epochs})
            self._write_summary()
            if self.tracker is not None:  # in the background: never holds training up
                self.tracker.send(self.epochs)
            if self.config.tensorboard:
                write_events(self.store, self.run_id, self.pair, self.epochs)
            # One line in the log as well: what `kbench logs` and `kubectl logs` show.
            print(
                f"kbench.jobs.train: epoch {epoch}/{self.config.epochs} "
                f"{self.headline_metric} {record['headline']:.4f} loss {record['loss']:.4f} "
                f"{images_per_s:.0f} img/s",
                flush=True,
            )

    def _evaluated(self, evaluation: Evaluation) -> Evaluated:
        """What an epoch record and a WiSE-FT point hold of an evaluation: the test split's
        metrics and headline, and the validation split's where there is one."""
        found: Evaluated = {
            **evaluation.metrics,
            "headline": self._headline(evaluation.metrics),
        }
        if evaluation.val is not None and self.val_split is not None:
            val: ValRecord = {
                **evaluation.val,
                "split": self.val_split,
                "headline": self._headline(evaluation.val),
            }
            found["val"] = val
        return found

    def _headline(self, metrics: EvalMetrics) -> float:
        headline = value(metrics, self.headline_metric)
        if headline is None:
            raise ValueError(f"the evaluation has no {self.headline_metric}")
        return headline

    # ------------------------------------------------------------------------------ result

    def finish(
        self,
        *,
        parameters: int,
        wise_ft: list[tuple[float, Evaluation]] | None,
        environment: Environment,
        start: str | None = None,
    ) -> None:
        """The last progress record and result.json (with WiSE-FT's curve, for CLIP)."""
        if not self.enabled:
            return
        found = self.records
        curve: list[WiseFtPoint] | None = None
        if wise_ft:
            curve = []
            for alpha, evaluation in wise_ft:
                self._keep_predictions(f"alpha_{alpha:.1f}", evaluation.predictions, write=False)
                point: WiseFtPoint = {**self._evaluated(evaluation), "alpha": alpha}
                curve.append(point)
            self._write_predictions()  # once for the whole curve
        summary = result_record(
            found,
            headline_metric=self.headline_metric,
            parameters=parameters,
            world_size=self.world,
            gpus=self.gpus,
            wise_ft=curve,
            environment=environment,
            start=start,
        )
        write_json(self.store, self._key(records.RESULT), summary)
        self._result = summary
        if self.tracker is not None:
            self.tracker.send(self.epochs, summary)
            self.close()
        trained_images = self.config.epochs * self.images
        self.progress(  # writes the summary, result included
            "done",
            self.config.epochs,
            self.steps,
            trained_images / max(found.train_seconds, 1e-9),
            eta_s=0.0,
        )
