"""The job's data loaders: this process's batches of each epoch (a shard of one shuffled order,
every sample, seeded so a resumed run augments as an uninterrupted one), the test and
validation splits in disjoint shards, DataLoader workers that die with their trainer, and
batches placed on the device as normalised floats."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import os
import signal
from dataclasses import dataclass

import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    DistributedSampler,
    Sampler,
    Subset,
)

from kbench.command import CPUS_ENV
from kbench.errors import ConfigError
from kbench.jobs.datasets import Splits, size
from kbench.jobs.distributed import Job
from kbench.spec import TrainConfig

PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies


class Placement:
    """Where batches go: uint8 images from the workers, to the device, in the memory format the
    model wants, then as normalised floats (x / 255 - mean) / std, computed there."""

    def __init__(
        self,
        device: torch.device,
        channels_last: bool,  # convolutional models on GPUs
        mean: tuple[float, ...],
        std: tuple[float, ...],
    ) -> None:
        self.device, self.channels_last = device, channels_last
        std_255 = torch.tensor(std, device=device).view(-1, 1, 1) * 255
        self.shift = torch.tensor(mean, device=device).view(-1, 1, 1) * 255
        self.scale = 1 / std_255

    def __call__(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        images = images.to(self.device, non_blocking=True)
        if self.channels_last:  # on uint8: a quarter of the bytes to move
            images = images.contiguous(memory_format=torch.channels_last)
        images = (images.float() - self.shift) * self.scale  # keeps the memory format
        return images, labels.to(self.device, non_blocking=True)


class EpochBatches(Sampler[list[int]]):
    """This process's batches of one epoch: its shard of a shuffled order (the same order in
    every process, from the seed and the epoch), every sample of it, the last batch partial;
    a last batch of one sample joins the one before (BatchNorm cannot train on one sample).

    It also seeds `generator`, which the DataLoader draws its workers' seeds from when an
    epoch starts: seeded by epoch and rank, a resumed run augments exactly as an
    uninterrupted one, whatever the number of workers."""

    def __init__(self, sampler: DistributedSampler, batch_size: int, seed: int, rank: int):
        self.sampler, self.batch_size, self.seed, self.rank = sampler, batch_size, seed, rank
        self.generator = torch.Generator()

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)
        self.generator.manual_seed(hash((self.seed, epoch, self.rank)) % 2**63)

    def __iter__(self):
        batches = list(BatchSampler(self.sampler, self.batch_size, drop_last=False))
        if len(batches) > 1 and len(batches[-1]) == 1 < self.batch_size:
            last = batches.pop()
            batches[-1] = batches[-1] + last
        return iter(batches)

    def __len__(self) -> int:
        samples = len(self.sampler)
        steps = math.ceil(samples / self.batch_size)
        folded = steps > 1 and samples % self.batch_size == 1 and self.batch_size > 1
        return steps - 1 if folded else steps


@dataclass(frozen=True)
class Loaders:
    train: DataLoader
    batches: EpochBatches  # the training loader's, set to each epoch
    test: DataLoader
    val: DataLoader | None  # None where the run has no validation split


def build_loaders(config: TrainConfig, splits: Splits, job: Job) -> Loaders:
    """The training loader and the evaluation loaders of the test and validation splits."""
    world, rank = job.world, job.rank
    if config.batch_size % world:
        raise ConfigError(
            f"batch_size {config.batch_size} does not split evenly over {world} processes"
        )
    per_process = config.batch_size // world
    if config.batch_size > size(splits.train):  # every epoch one partial step: a mistake
        raise ConfigError(
            f"batch_size {config.batch_size} is larger than the {size(splits.train)} training "
            "samples: lower batch_size or train_limit"
        )
    workers = config.workers if config.workers is not None else loader_workers()
    pin_memory = job.device.type == "cuda"
    worker_init_fn = functools.partial(start_worker, trainer=os.getpid())
    # Training: every image every epoch, as the study (WiSE-FT) trains. DistributedSampler
    # gives each process ceil(samples / world) indices (repeating a few when they do not
    # divide), so every process takes the same number of steps without dropping any.
    sampler: DistributedSampler = DistributedSampler(
        splits.train, num_replicas=world, rank=rank, shuffle=True, seed=config.seed
    )
    batches = EpochBatches(sampler, per_process, config.seed, rank)
    # Workers are started each epoch (not persistent) so that each epoch seeds them anew.
    train = DataLoader(
        splits.train,
        batch_sampler=batches,
        generator=batches.generator,
        num_workers=workers,
        pin_memory=pin_memory,
        worker_init_fn=worker_init_fn,
    )

    def evaluation(split: Dataset) -> DataLoader:
        # Disjoint strided shards without padding, so each sample is counted exactly once.
        return DataLoader(
            Subset(split, range(rank, size(split), world)),
            batch_size=2 * per_process,  # no gradients or optimizer state: room for twice
            shuffle=False,
            # Its own generator: a pass must not draw from the training RNG (each DataLoader
            # pass draws a seed), or evaluations kept in memory would change the training.
            generator=torch.Generator().manual_seed(config.seed),
            persistent_workers=workers > 0,
            num_workers=workers,
            pin_memory=pin_memory,
            worker_init_fn=worker_init_fn,
        )

    val = evaluation(splits.val) if splits.val is not None else None
    return Loaders(train, batches, evaluation(splits.eval), val)


def loader_workers() -> int:
    """DataLoader workers per process when the config leaves it open: the CPUs this pod (or
    machine) gives the node's processes, less one each for the process itself. A pod says
    how many CPUs it was given in KBENCH_CPUS (its cgroup limit is not what the OS reports)."""
    given = os.environ.get(CPUS_ENV)
    cpus = float(given) if given else len(os.sched_getaffinity(0))
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(0, int(cpus // processes) - 1)


def start_worker(worker_id: int, trainer: int) -> None:
    """In each DataLoader worker, first. A preemption's SIGTERM may reach the whole process
    group: only the training process handles it (it stops between two writes), since a
    worker that died of it first would turn that stop into a DataLoader error. Instead a
    worker dies with its trainer: workers start every epoch, and one forked just as the
    trainer stopped would otherwise outlive it (its watchdog would watch init)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(OSError, AttributeError):  # Linux only; elsewhere the watchdog
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != trainer:  # the trainer was already gone
        os._exit(0)


def own_words(error: BaseException) -> str:
    """An error's own message. One raised in a DataLoader worker reaches the trainer raised
    again with the worker's whole traceback in its text ("Caught UnreadableImage in DataLoader
    worker process 0. Original Traceback ..."), whose last line is "<module>.<Type>: <message>"."""
    text = str(error)
    if "Original Traceback" not in text:
        return text
    last = text.strip().splitlines()[-1]
    return last.split(": ", 1)[1] if ": " in last else last
