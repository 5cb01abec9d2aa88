"""The storage contract between a training job and the client: which key holds what, and the
shape of every record, typed once here. The job writes them (kbench.jobs.recorder); `status`,
`collect` and both backends read them. The store may be shared by a team, so what is read back
is checked against its type where it is read (`parse`: one line naming the key and the field
on anything else), not trusted because kbench once wrote it.

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
    runs/<run>/sweep/<cell>/rung-<k>.json  successive halving's decision at a sweep's rung k
                                         (kbench.halving), created once
    datasets/<name>/manifest.json        a staged dataset (kbench.staging.datasets)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import re
import typing
import zipfile
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
from annotated_types import Ge, Gt, Le

# pydantic, which checks records as they are read, needs typing_extensions' TypedDict before
# Python 3.12.
from typing_extensions import NotRequired, TypedDict

from kbench.errors import StoreError
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
LOGS = "logs"  # logs/node-<index>/<started>-<pod>.log: each pod's output, kept as it runs
PEER_LOST = "peer-lost-node-{node}.json"  # per node: a pod that lost a peer, at which epoch
MANIFEST = "manifest.json"
PREDICTIONS = "predictions.npz"
PREDICTION_NAME = re.compile(r"epoch_\d+|alpha_[01]\.\d+")

Count = Annotated[int, Ge(0)]
Positive = Annotated[int, Ge(1)]
# A float may be NaN: a diverged epoch still gets its record (the report flags it).


class GroupAccuracy(TypedDict):
    samples: Count
    top1: float | None  # None: no sample of the group in the split


class EvalMetrics(TypedDict):
    """One evaluation of a split (kbench.jobs.metrics; the formulas are kbench.stats')."""

    samples: Count  # evaluated samples: the whole split, each counted once
    top1: float
    top5: float
    mean_per_class: float
    macro_f1: float  # over the classes that occur as labels, as WILDS computes it
    loss: float  # eval cross-entropy
    # Datasets with groups (FMoW's regions) only: accuracy per group, and the worst of them
    # over the groups present in the split.
    worst_region: NotRequired[float]
    per_group: NotRequired[dict[str, GroupAccuracy]]


EVAL_KEYS = frozenset(EvalMetrics.__required_keys__ | EvalMetrics.__optional_keys__)


def metrics_of(record: EvalMetrics) -> EvalMetrics:
    """An evaluation's metrics alone, from any record that holds them (an epoch's, a
    validation split's, a WiSE-FT point's)."""
    return typing.cast(EvalMetrics, {k: v for k, v in record.items() if k in EVAL_KEYS})


class ValRecord(EvalMetrics):
    """The validation split's evaluation, beside an epoch's (or a WiSE-FT point's) on the test
    split: what `select_on: val` chooses by."""

    split: str  # a published split's name, or "holdout": held out of the training split
    headline: float


class StagedCopy(TypedDict):
    """Trained on a staged copy (kbench data stage): the fraction of each split it holds and
    the short side its images were reduced to (None: as they came)."""

    frac: Annotated[float, Gt(0), Le(1)]
    max_short_side: Positive | None


class EpochRecord(EvalMetrics):
    """One evaluated epoch in metrics.json and summary.json. Epoch 0 is the model before any
    training (CLIP's zero-shot head)."""

    epoch: Count
    split: str  # the split evaluated
    headline_metric: str  # the dataset's metric, e.g. "mean_per_class"
    headline: float  # its value
    train_loss: float | None  # mean over the epoch; None for epoch 0
    lr: float | None  # backbone lr at the end of the epoch
    epoch_seconds: float  # training time of the epoch (0 for epoch 0)
    images_per_s: float  # training throughput over all processes
    images_per_s_per_gpu: NotRequired[float | None]  # None on a CPU
    world_size: Positive
    gpus: Count  # 0 on a CPU
    time: str  # ISO 8601, UTC
    data: NotRequired[StagedCopy]
    eval_seconds: NotRequired[float]  # evaluating the test and validation splits
    val: NotRequired[ValRecord]  # the validation split's evaluation (select_on: val)


class ProgressRecord(TypedDict):
    """Where training is now, rewritten every few seconds (in summary.json)."""

    phase: Literal["starting", "eval", "train", "done"]
    epoch: Count
    epochs: Count
    step: Count  # within the epoch
    steps: Count  # steps per epoch
    images_per_s: float
    images_per_s_per_gpu: float | None  # None on a CPU
    eta_s: float | None
    time: str


class WiseFtPoint(EvalMetrics):
    """CLIP's weights (1 - alpha) * zero_shot + alpha * fine_tuned, evaluated."""

    alpha: float
    headline: float
    val: NotRequired[ValRecord]


class Selection(TypedDict):
    """What chose what, in result.json: the split the pair chose on and its choices. The
    values a result reports (best, the report's numbers) are the test split's at them."""

    select_on: Literal["val", "test", "last"]
    split: str | None  # the split chosen on: its name, "holdout", or None (last: no choice)
    metric: str  # the dataset's headline metric
    epoch: Positive | None  # the chosen epoch (None: every trained epoch diverged)
    alpha: float | None  # WiSE-FT's chosen alpha (CLIP; None for ResNet)


class Environment(TypedDict):
    """What trained: the device and library versions."""

    device: str
    torch: str
    torchvision: str
    open_clip: str
    python: str
    cuda: NotRequired[str | None]


class ResultRecord(TypedDict):
    """result.json, written last: the pair's outcome (kbench.pairs.result_record)."""

    pair: str
    dataset: str
    model: str
    headline_metric: str
    # The fine-tuned best (epochs >= 1, kbench.pairs.best_epoch); None if every one diverged
    best_epoch: Positive | None
    best: float | None
    final: float
    zero_shot: float | None  # CLIP's epoch 0; None for ResNet
    wise_ft: list[WiseFtPoint] | None  # CLIP: one eval per alpha in 0, 0.1, ..., 1
    epochs: Count
    train_seconds: float
    parameters: Count
    world_size: Positive
    gpus: Count
    environment: Environment
    start: NotRequired[str | None]  # the weights it started from; absent: an older kbench
    selection: NotRequired[Selection]  # absent: an older kbench, which chose on the test split


class SummaryRecord(TypedDict):
    """summary.json: everything status and collect read of a pair, in one object."""

    config: dict[str, Any]  # config.json's TrainConfig (checked by TrainConfig.from_dict)
    epochs: list[EpochRecord]
    progress: ProgressRecord | None
    result: ResultRecord | None
    predictions: NotRequired[list[str]]  # the evaluations predictions.npz holds


class PeerLostMark(TypedDict):
    """peer-lost-node-N.json: node N's processes lost a peer `count` times since checkpoint
    `epoch` (a restart is free only while training moves on)."""

    epoch: Count
    count: Positive


class CancelMark(TypedDict):
    """cancelled.json: `kbench cancel` stopped the pair (on Kubernetes its Job is then gone)."""

    cancelled: str  # when


class MetricsRecord(TypedDict):
    """metrics.json: every epoch so far."""

    epochs: list[EpochRecord]


class ProcessIdentity(TypedDict):
    """What identifies a process beyond its id, which the system reuses."""

    pid: Positive
    host: str
    since_boot: float  # when it started, in seconds after the machine booted
    command: list[str]


class LocalProcess(ProcessIdentity):
    """local.json: the local backend's view of a process (a pair's, or the one training a
    run): enough to know it again before signalling it (kbench.backends.processes)."""

    state: Literal["running", "cancelling", "succeeded", "failed", "cancelled", "done"]
    started: str
    returncode: NotRequired[int | None]
    reason: NotRequired[str | None]  # the job's own one-line error
    finished: NotRequired[str]


# What each record is called in a refusal.
class RankedTrial(TypedDict):
    pair: str
    value: float | None  # its best validation headline up to the rung; None: never reached it
    epoch: int | None  # the epoch that value is of


class RungDecision(TypedDict):
    """Which of a sweep's trials went on after a rung, and why (kbench.halving)."""

    cell: str
    rung: Positive  # 1, 2, ...; the one after the ladder's last is the end of training
    epoch: Positive | None  # the rung's epoch; None: each trial's last (the end of training)
    metric: str  # what ranked them: the validation split's headline metric
    keep: Count  # how many could go on
    ranked: list[RankedTrial]  # best first (ties: the earlier trial first)
    continued: list[str]
    pruned: dict[str, str]  # pair -> why
    winner: str | None  # the one left, whose setting the seeds train
    decided: str


NAMES: dict[Any, str] = {
    RungDecision: "sweep decision",
    PeerLostMark: "peer-lost mark",
    SummaryRecord: "pair summary",
    MetricsRecord: "metrics record",
    ResultRecord: "result record",
    ProgressRecord: "progress record",
    LocalProcess: "process record",
}
Record = TypeVar("Record")


def parse(kind: type[Record], data: Any, where: str) -> Record:
    """`data` as read from `where`, checked against its type: keys and types, no coercion
    (a "1" is not a 1), keys of a newer kbench left out. Raises StoreError in one line."""
    from pydantic import ValidationError

    try:
        checked: Record = _adapter(kind).validate_python(data, strict=True)
        return checked
    except ValidationError as e:
        error = e.errors(include_url=False)[0]
        field = ".".join(str(part) for part in error["loc"])
        why = f"{field}: {error['msg']}" if field else error["msg"]
        raise StoreError(
            f"{where} is not a kbench {NAMES.get(kind, 'record')} ({why.lower()})"
        ) from None


_ADAPTERS: dict[Any, Any] = {}  # record type -> its pydantic TypeAdapter, built once


def _adapter(kind: Any) -> Any:
    if kind not in _ADAPTERS:
        from pydantic import TypeAdapter  # paid for by the commands that read records only

        _ADAPTERS[kind] = TypeAdapter(kind)
    return _ADAPTERS[kind]


def check_prediction_names(names: list[str], where: str) -> tuple[str, ...]:
    """A summary's list of the evaluations predictions.npz holds, each a name kbench writes."""
    for name in names:
        if not PREDICTION_NAME.fullmatch(name):
            raise StoreError(f"{where} is not a kbench pair summary (predictions: {name!r})")
    return tuple(names)


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


def log_key(run_id: str, pair: str, node: int | str, started: str, pod: str) -> str:
    """A pod's output in the store; sorted by name, a node's logs are in attempt order."""
    return pair_key(run_id, pair, f"{LOGS}/node-{node}/{started}-{pod}.log")


def rung_key(run_id: str, cell: str, rung: int) -> str:
    return f"runs/{run_id}/sweep/{cell}/rung-{rung}.json"


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
