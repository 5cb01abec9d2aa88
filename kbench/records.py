"""The storage contract between a training job and the client: which key holds what, and the
shape of the records. The job writes them, `status` and `collect` read them.

    runs/<run>/claim.json                the run id taken, first (a conditional create)
    runs/<run>/run.json                  the grid as submitted, kbench version, created
    runs/<run>/<pair>/config.json        the pair's resolved TrainConfig
    runs/<run>/<pair>/metrics.json       {"epochs": [epoch record, ...]}, rewritten each epoch
    runs/<run>/<pair>/summary.json       config, epochs, progress (where training is now,
                                         rewritten every few seconds) and result in one
    runs/<run>/<pair>/result.json        the final summary, written last
    runs/<run>/<pair>/predictions.npz    every evaluation's predicted class of every sample
                                         (int16 arrays `epoch_<n>`, `alpha_<a>` for WiSE-FT)
                                         and `labels` (and `groups`), rewritten each epoch
    runs/<run>/<pair>/local.json         the local backend's view of the process (local runs only)
    runs/<run>/<pair>/cancelled.json     `kbench cancel` stopped it (Kubernetes: its Job is gone)
    runs/<run>/local.json                the process that trains a local run (`resume` checks it)
    datasets/<name>/manifest.json        a staged dataset (kbench.staging.datasets)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import re
import zipfile

import numpy as np

from kbench.registry import model_slug
from kbench.spec import TrainConfig
from kbench.stats import Predictions
from kbench.storage import Store, read_json

RUN = "run.json"
CLAIM = "claim.json"
CONFIG = "config.json"
METRICS = "metrics.json"
PROGRESS = "progress.json"  # written by jobs before summary.json replaced it; still read
SUMMARY = "summary.json"  # config, epoch records, progress and result: what status reads
RESULT = "result.json"
LOCAL_STATE = "local.json"
CANCELLED = "cancelled.json"
MANIFEST = "manifest.json"
PREDICTIONS = "predictions.npz"
PREDICTION_NAME = re.compile(r"epoch_\d+|alpha_[01]\.\d+")


def encode_predictions(labels: np.ndarray, groups: np.ndarray | None, predicted: dict) -> bytes:
    """predictions.npz: `labels` (and `groups`) once, then one array per evaluation, the
    predicted class of each sample; int16 where the classes fit (every dataset of the study)."""
    arrays = {"labels": labels, **({"groups": groups} if groups is not None else {}), **predicted}
    small = max(int(a.max(initial=0)) for a in arrays.values()) < 2**15
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer, **{k: a.astype(np.int16 if small else np.int32) for k, a in arrays.items()}
    )
    return buffer.getvalue()


def decode_predictions(data: bytes) -> dict[str, Predictions]:
    """predictions.npz read back, checked (the store is untrusted: no pickles, integer arrays
    of one length, classes that are not negative): evaluation name -> Predictions. Raises
    ValueError on anything else."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"not a predictions file: {e}") from None
    labels, groups = arrays.pop("labels", None), arrays.pop("groups", None)
    if labels is None:
        raise ValueError("no labels")
    for name, array in {"labels": labels, "groups": groups, **arrays}.items():
        if array is None:
            continue
        if name not in ("labels", "groups") and not PREDICTION_NAME.fullmatch(name):
            raise ValueError(f"unexpected array {name!r}")
        if array.dtype.kind != "i" or array.shape != labels.shape or array.ndim != 1:
            raise ValueError(f"{name}: not {len(labels)} integers")
        if name != "groups" and array.min(initial=0) < 0:
            raise ValueError(f"{name}: a negative class")
    return {
        name: Predictions(labels.astype(np.int64), predicted.astype(np.int64), groups)
        for name, predicted in arrays.items()
    }


def utc_now() -> str:
    """A record's timestamp: ISO 8601, UTC, to the second."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def load_config(store: Store, run_id: str, pair: str) -> TrainConfig:
    """A pair's config.json, as its job reads it: every key and type checked."""
    key = pair_key(run_id, pair, CONFIG)
    return TrainConfig.from_dict(read_json(store, key), where=key)


def run_key(run_id: str, name: str = RUN) -> str:
    return f"runs/{run_id}/{name}"


def pair_key(run_id: str, pair: str, name: str) -> str:
    return f"runs/{run_id}/{pair}/{name}"


def dataset_key(name: str, file: str = MANIFEST) -> str:
    return f"datasets/{name}/{file}"


def weights_key(model: str, file: str = MANIFEST) -> str:
    return f"models/{model_slug(model)}/{file}"


def staged_name(dataset: str, data: str | None = None) -> str:
    """A staged dataset's folder under datasets/. A user's imagefolder is named by its source,
    so several can live in one store; a run finds it by its config's `data`."""
    if dataset != "imagefolder":
        return dataset
    return f"imagefolder-{hashlib.sha256(str(data).encode()).hexdigest()[:12]}"


_number = {"type": "number"}  # NaN is a number here: a diverged run still gets its record
_count = {"type": "integer", "minimum": 0}

# One evaluation of one epoch. Epoch 0 is the model before any training (CLIP's zero-shot head).
EPOCH_RECORD_SCHEMA = {
    "type": "object",
    "required": [
        "epoch",
        "split",
        "samples",
        "top1",
        "top5",
        "mean_per_class",
        "macro_f1",
        "headline_metric",
        "headline",
        "loss",
        "train_loss",
        "lr",
        "epoch_seconds",
        "images_per_s",
        "world_size",
        "gpus",
        "time",
    ],
    "additionalProperties": False,
    "properties": {
        "epoch": _count,
        "split": {"type": "string"},
        "samples": _count,  # evaluated samples: the whole split, each counted once
        "top1": _number,
        "top5": _number,
        "mean_per_class": _number,
        "macro_f1": _number,  # over the classes that occur as labels, as WILDS computes it
        # Datasets with groups (FMoW's regions) only: accuracy per group, and the worst of them
        # over the groups present in the split.
        "worst_region": _number,
        "per_group": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["samples", "top1"],
                "additionalProperties": False,
                "properties": {"samples": _count, "top1": {"type": ["number", "null"]}},
            },
        },
        "headline_metric": {"type": "string"},  # the dataset's metric, e.g. "mean_per_class"
        "headline": _number,  # its value
        "loss": _number,  # eval cross-entropy
        "train_loss": {"type": ["number", "null"]},  # mean over the epoch; null for epoch 0
        "lr": {"type": ["number", "null"]},  # backbone lr at the end of the epoch
        "epoch_seconds": _number,  # training time of the epoch (0 for epoch 0)
        "images_per_s": _number,  # training throughput over all processes
        "images_per_s_per_gpu": {"type": ["number", "null"]},  # null on a CPU
        "world_size": {"type": "integer", "minimum": 1},
        "gpus": _count,  # 0 on CPU
        "time": {"type": "string"},  # ISO 8601, UTC
        # Trained on a staged copy (kbench data stage): the fraction of each split it holds
        # and the short side its images were reduced to (null: as they came).
        "data": {
            "type": "object",
            "required": ["frac", "max_short_side"],
            "additionalProperties": False,
            "properties": {
                "frac": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                "max_short_side": {"type": ["integer", "null"], "minimum": 1},
            },
        },
    },
}

PROGRESS_SCHEMA = {
    "type": "object",
    "required": [
        "phase",
        "epoch",
        "epochs",
        "step",
        "steps",
        "images_per_s",
        "images_per_s_per_gpu",
        "eta_s",
        "time",
    ],
    "additionalProperties": False,
    "properties": {
        "phase": {"enum": ["starting", "eval", "train", "done"]},
        "epoch": _count,
        "epochs": _count,
        "step": _count,  # within the epoch
        "steps": _count,  # steps per epoch
        "images_per_s": _number,
        "images_per_s_per_gpu": {"type": ["number", "null"]},  # null on a CPU
        "eta_s": {"type": ["number", "null"]},
        "time": {"type": "string"},
    },
}

RESULT_SCHEMA = {
    "type": "object",
    "required": [
        "pair",
        "dataset",
        "model",
        "headline_metric",
        "best_epoch",
        "best",
        "final",
        "zero_shot",
        "wise_ft",
        "epochs",
        "train_seconds",
        "parameters",
        "world_size",
        "gpus",
        "environment",
    ],
    "properties": {
        "pair": {"type": "string"},
        "dataset": {"type": "string"},
        "model": {"type": "string"},
        "headline_metric": {"type": "string"},
        # The fine-tuned best (epochs >= 1, kbench.pairs.best_epoch); null if every one diverged
        "best_epoch": {"type": ["integer", "null"], "minimum": 1},
        "best": {"type": ["number", "null"]},
        "final": _number,
        "zero_shot": {"type": ["number", "null"]},  # CLIP's epoch 0; null for ResNet
        # CLIP: the WiSE-FT curve, one eval per alpha in 0, 0.1, ..., 1; null for ResNet
        "wise_ft": {
            "type": ["array", "null"],
            "items": {
                "type": "object",
                "required": ["alpha", "headline", "top1", "samples"],
                "properties": {"alpha": _number, "headline": _number, "top1": _number},
            },
        },
        "epochs": _count,
        "train_seconds": _number,
        "parameters": _count,
        "world_size": {"type": "integer", "minimum": 1},
        "gpus": _count,
        "environment": {  # what trained: device, library versions
            "type": "object",
            "required": ["device", "torch", "torchvision", "open_clip", "python"],
        },
        # the weights it started from (kbench.jobs.train.started_from); absent: an older kbench
        "start": {"type": ["string", "null"]},
    },
}
