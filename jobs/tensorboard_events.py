"""TensorBoard event files of a pair, kept in the store beside its records:

    runs/<run>/<pair>/tensorboard/events.out.tfevents.kbench

rewritten by rank 0 from the pair's records after every epoch (a resumed job writes them all
again: no step twice), one scalar per metric and epoch, the epoch as its step: the metrics
kbench.tracking sends MLflow. `tensorboard --logdir` of a copy of the run's folder shows each
pair as a run."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

from kbench import records
from kbench.records import EpochRecord
from kbench.storage import Store
from kbench.tracking import metric_values

EVENTS = "tensorboard/events.out.tfevents.kbench"


def write_events(store: Store, run_id: str, pair: str, epochs: list[EpochRecord]) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with tempfile.TemporaryDirectory(prefix="kbench-tensorboard-") as folder:
        writer = SummaryWriter(folder)
        for record in epochs:
            when = dt.datetime.fromisoformat(record["time"]).timestamp()
            for name, value in metric_values(record).items():
                writer.add_scalar(name, value, global_step=record["epoch"], walltime=when)
        writer.close()
        (path,) = Path(folder).glob("events.out.tfevents.*")
        store.write(records.pair_key(run_id, pair, EVENTS), path.read_bytes())
