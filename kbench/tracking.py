"""Experiment tracking in MLflow, opt-in by its standard variable MLFLOW_TRACKING_URI (and its
own MLFLOW_TRACKING_TOKEN / _USERNAME / _PASSWORD for credentials): an experiment per kbench
run, named by the run id; an MLflow run per pair, named by the pair, with its resolved config
as parameters, each epoch's metrics with the epoch as their step, and at the end its state and
result.json. One function sends what the tracker lacks of a pair's records, so the training
job (after every epoch, off its training thread: kbench.jobs.tracker) and `kbench collect
--track` (afterwards, from the store) send each epoch once, whoever sends it first.
"""

from __future__ import annotations

import os
import time
from typing import Any

from kbench.records import EpochRecord, ResultRecord

TRACKING_URI = "MLFLOW_TRACKING_URI"
PAIR_TAG, RUN_TAG, STATE_TAG = "kbench.pair", "kbench.run", "kbench.state"
STEP_METRIC = "top1"  # every epoch record has it: the steps it holds are the epochs sent
VALUES = ("top1", "top5", "mean_per_class", "macro_f1", "loss", "headline", "worst_region")
TRAINING = ("train_loss", "lr", "epoch_seconds", "images_per_s", "eval_seconds")


def tracking_uri() -> str | None:
    return os.environ.get(TRACKING_URI) or None


def client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def sync_pair(
    tracker: Any,
    run_id: str,
    pair: str,
    config: dict[str, Any],
    epochs: list[EpochRecord],
    result: ResultRecord | None = None,
) -> int:
    """Send what the tracker lacks of a pair's records; the number of epochs sent."""
    from mlflow.entities import Metric, Param

    mlflow_run = _find_or_create_run(tracker, run_id, pair)
    if not mlflow_run.data.params:  # params once: MLflow refuses a changed value
        params = [Param(k, str(v)[:6000]) for k, v in sorted(config.items())]
        tracker.log_batch(mlflow_run.info.run_id, params=params)
    sent = {m.step for m in tracker.get_metric_history(mlflow_run.info.run_id, STEP_METRIC)}
    missing = [e for e in epochs if e["epoch"] not in sent]
    now = int(time.time() * 1000)
    for record in missing:
        metrics = [
            Metric(name, float(value), now, record["epoch"])
            for name, value in metric_values(record).items()
        ]
        # The step metric last: an epoch counts as sent once all of it is.
        metrics.sort(key=lambda m: m.key == STEP_METRIC)
        tracker.log_batch(mlflow_run.info.run_id, metrics=metrics)
    if result is not None and mlflow_run.data.tags.get(STATE_TAG) != "succeeded":
        tracker.log_dict(mlflow_run.info.run_id, dict(result), "result.json")
        tracker.set_tag(mlflow_run.info.run_id, STATE_TAG, "succeeded")
        tracker.set_terminated(mlflow_run.info.run_id, "FINISHED")
    return len(missing)


def metric_values(record: EpochRecord) -> dict[str, float]:
    """An epoch record's numbers as trackers take them: the test split's metrics, the
    validation split's as val_<metric>, the training loss, learning rate and timings."""
    found: dict[str, Any] = {k: record.get(k) for k in (*VALUES, *TRAINING)}
    val = record.get("val")
    if val:
        found.update({f"val_{k}": val.get(k) for k in VALUES})
    return {k: v for k, v in found.items() if isinstance(v, (int, float)) and v == v}


def _find_or_create_run(tracker: Any, run_id: str, pair: str) -> Any:
    from mlflow.exceptions import MlflowException

    experiment = tracker.get_experiment_by_name(run_id)
    if experiment is not None:
        experiment_id = experiment.experiment_id
    else:
        try:
            experiment_id = tracker.create_experiment(run_id)
        except MlflowException:  # another pair of the run created it first
            experiment_id = tracker.get_experiment_by_name(run_id).experiment_id
    found = tracker.search_runs(
        [experiment_id], filter_string=f"tags.`{PAIR_TAG}` = '{pair}'", max_results=1
    )
    if found:
        return found[0]
    return tracker.create_run(experiment_id, run_name=pair, tags={PAIR_TAG: pair, RUN_TAG: run_id})
