"""Fine-tune one dataset x model pair and write its records to storage.

The pair's resolved config is read from the store (`runs/<run>/<pair>/config.json`, written at
submit time), so the pod, the local backend and a hand-run process all train the same thing:

    torchrun --standalone --nproc-per-node 2 -m kbench.jobs.train --store S --run-id R --pair P
    python -m kbench.jobs.train --store S --run-id R --pair P        # one process

Epoch 0 evaluates the model before training (for CLIP: its zero-shot head); then every epoch
trains, evaluates and checkpoints. A restarted job resumes after its last checkpoint. After the
last epoch, CLIP gets its WiSE-FT curve. Only rank 0 writes; SIGTERM (preemption) stops the job
between two writes with exit code 143.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from kbench.errors import (
    JOB_ERROR_EXIT_CODE,
    JOB_ERROR_PREFIX,
    PEER_LOST_EXIT_CODE,
    PREEMPTED_EXIT_CODE,
    ConfigError,
    KbenchError,
)
from kbench.jobs import checkpoint
from kbench.jobs.datasets import Splits, build_splits, normalization, size
from kbench.jobs.deadline import watch_deadline
from kbench.jobs.distributed import Job, mean_across_processes, setup_distributed
from kbench.jobs.eval_cache import Budget, EvalBatches, default_budget
from kbench.jobs.loaders import EpochBatches, Placement, build_loaders, own_words
from kbench.jobs.metrics import EvalAccumulator, Evaluation
from kbench.jobs.models import ImageClassifier, build_model
from kbench.jobs.optim import build_optimizer, build_scheduler
from kbench.jobs.peers import lost_peer
from kbench.jobs.probe import run_probe, start_from_probe
from kbench.jobs.recorder import Recorder
from kbench.jobs.step import autocast, setup_device, train_step, uses_channels_last
from kbench.jobs.weights import local_weights
from kbench.jobs.wiseft import wise_ft_curve
from kbench.methods import FINE_TUNE, LINEAR_PROBE, LP_FT
from kbench.pairs import chosen_epoch
from kbench.records import Environment, load_config
from kbench.registry import ModelInfo, model_info
from kbench.spec import TrainConfig
from kbench.storage import job_retry_s, open_store


class Preempted(BaseException):
    """Raised by the SIGTERM handler; a BaseException so no `except Exception` swallows it."""


# Set by the SIGTERM handler. Python drops an exception raised by a signal handler while it runs
# certain callbacks (os.fork's, when DataLoader workers start), so the loop also checks this
# after every step.
sigterm = {"received": False}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    watch_deadline()
    rank, world, device = setup_distributed()
    try:
        # A store that stops answering for a while (a restart, a network blip) is waited for:
        # a failed write would cost the pod a retry and a fresh download of its data.
        store = open_store(args.store, retry_s=job_retry_s())
        train(Job(store, args.run_id, args.pair, rank, world, device, args.until))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def train(job: Job) -> None:
    setup_device(job.device)
    config = load_config(job.store, job.run_id, job.pair)
    info = model_info(config.model)
    family = info.family
    splits = build_splits(config, info, job.store)
    if job.until is not None:
        splits = trial_splits(splits)
    weights = local_weights(job.store, config)  # staged pretrained weights, if any
    model = build_model(config, splits.classes, splits.templates, job.device, weights)
    channels_last = uses_channels_last(config, family, job.device)
    place = Placement(job.device, channels_last, *normalization(info))
    if place.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # CLIP's starting weights: WiSE-FT interpolates between them and the fine-tuned ones.
    zero_shot = copy_weights(model) if family == "clip" and config.method == FINE_TUNE else None
    torch.manual_seed(config.seed + job.rank)  # after building: each process augments differently

    loaders = build_loaders(config, splits, job)
    batches = loaders.batches
    steps = len(loaders.train)
    optimizer = build_optimizer(config, model, job.device)
    scheduler = build_scheduler(config, optimizer, total_steps=config.epochs * steps)
    # The same weights, wrapped for training: DDP averages gradients, compile fuses kernels.
    wrapped: torch.nn.Module = DistributedDataParallel(model) if job.world > 1 else model
    if config.compile:
        wrapped = torch.compile(wrapped)  # type: ignore[assignment]  # a Module, when given one
    gpus = job.world if job.device.type == "cuda" else 0
    recorder = Recorder(
        job.store,
        job.run_id,
        job.pair,
        config,
        eval_split=splits.eval_split,
        val_split=splits.val_split,
        staging=splits.staging,
        steps=steps,
        images=len(batches.sampler) * job.world,
        rank=job.rank,
        world=job.world,
        gpus=gpus,
    )
    # Each decoded once, then kept on the device when it fits: 20 evaluations of the same images.
    budget = Budget(default_budget(job.device))  # the two splits' together
    evaluate_model = functools.partial(
        evaluate,
        test=EvalBatches(loaders.test, job.device, budget),
        val=EvalBatches(loaders.val, job.device, budget) if loaders.val is not None else None,
        splits=splits,
        config=config,
        place=place,
    )

    say = functools.partial(log, job.rank)
    if config.method == LINEAR_PROBE:  # frozen features and a fitted head: no training
        run_probe(
            job, config, info, model, place, weights, recorder, splits.groups, say,
            splits.classes, environment=environment(), start=started_from(config, info, weights),
        )  # fmt: skip
        return
    uploader = checkpoint.Uploader()  # the next epoch trains while one uploads
    first_epoch = resume_or_start(job, model, optimizer, scheduler, recorder)
    probe_seconds = 0.0  # LP-FT's features and probe: counted in its cost, as epoch 0's time
    if first_epoch == 1 and config.method == LP_FT:  # LP-FT: from the probe's head
        started = time.perf_counter()
        start_from_probe(job, config, info, model, place, weights, say)
        probe_seconds = time.perf_counter() - started
    # Epoch 0, the model before training: CLIP's zero-shot head, or LP-FT's probe head.
    if first_epoch == 1 and (zero_shot is not None or config.method == LP_FT):
        recorder.progress("eval", epoch=0)
        recorder.epoch(0, evaluate_model(model), seconds=probe_seconds)
    last_epoch = config.epochs if job.until is None else min(job.until, config.epochs)
    for epoch in range(first_epoch, last_epoch + 1):
        seconds, train_loss = train_one_epoch(
            wrapped, loaders.train, batches, optimizer, scheduler, config, epoch, recorder, place
        )
        recorder.progress("eval", epoch, steps, images_per_s=recorder.images_per_s(seconds))
        recorder.epoch(
            epoch,
            evaluate_model(model),
            train_loss=train_loss,
            lr=optimizer.param_groups[0]["lr"],
            seconds=seconds,
        )
        save_checkpoint(job, epoch, model, optimizer, scheduler, recorder, uploader)
        chosen = chosen_epoch(recorder.epochs, config.select_on)
        if job.rank == 0 and job.until is None and chosen is not None and chosen["epoch"] == epoch:
            record = {"epoch": epoch, "classes": splits.classes, "select_on": config.select_on}
            uploader.keep_chosen(job.store, job.run_id, job.pair, model, record)
    uploader.wait()  # the last checkpoint is in the store before the result says done
    if job.until is not None:  # a trial's rung: the driver decides whether it goes on
        recorder.close()
        log(job.rank, f"stopped at epoch {last_epoch}, its rung; checkpoint kept")
        return

    wise_ft = None
    if zero_shot is not None:
        recorder.progress("eval", config.epochs, steps)
        ends = {0.0: recorder.evaluation(0), 1.0: recorder.evaluation(config.epochs)}
        wise_ft = wise_ft_curve(model, zero_shot, evaluate_model, ends)
    parameters = sum(p.numel() for p in model.parameters())
    recorder.finish(
        parameters=parameters,
        wise_ft=wise_ft,
        environment=environment(),
        start=started_from(config, info, weights),
    )


def trial_splits(splits: Splits) -> Splits:
    """A sweep's trial is scored on the validation split alone, as its records' split: the
    test split is for the chosen setting's runs."""
    if splits.val is None or splits.val_split is None:
        raise ConfigError("a sweep's trial needs a validation split: set select_on: val")
    return dataclasses.replace(
        splits, eval=splits.val, eval_split=splits.val_split, val=None, val_split=None
    )


def resume_or_start(job: Job, model, optimizer, scheduler, recorder: Recorder) -> int:
    """Restore the newest checkpoint, if any, and return the first epoch left to train."""
    # Not a folder named `kbench`: a python started in the temporary folder would import it.
    cache = os.path.join(tempfile.gettempdir(), "kbench-checkpoints", job.run_id, job.pair)
    state = checkpoint.load_latest(job.store, job.run_id, job.pair, cache)
    if state is None:
        return 1
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if len(state["rng"]) == job.world:  # the same processes as before: each its own RNG
        checkpoint.set_rng_state(state["rng"][job.rank])
    recorder.restore(state["epochs"])
    log(job.rank, f"resumed after epoch {state['epoch']} from the store's checkpoint")
    return state["epoch"] + 1


def train_one_epoch(
    wrapped,
    loader: DataLoader,
    batches: EpochBatches,
    optimizer,
    scheduler,
    config,
    epoch,
    recorder,
    place: Placement,
) -> tuple[float, float]:
    """One pass over this process's shard of the training split: (seconds, mean loss over
    every process)."""
    batches.set_epoch(epoch)
    wrapped.train()
    started, loss_sum = time.perf_counter(), torch.zeros((), device=place.device)
    for step, (images, labels, *_) in enumerate(loader, start=1):
        images, labels = place(images, labels)
        # The loss stays on the device: no host sync per step.
        loss_sum += train_step(wrapped, images, labels, optimizer, scheduler, config, place.device)
        recorder.step(epoch, step, time.perf_counter() - started)
        if sigterm["received"]:
            raise Preempted
    seconds = time.perf_counter() - started
    return seconds, mean_across_processes(loss_sum / len(loader))


def evaluate(
    model: ImageClassifier,
    *,
    test: Iterable,
    val: Iterable | None,
    splits: Splits,
    config: TrainConfig,
    place: Placement,
) -> Evaluation:
    """The model on the test split (its metrics and every sample's predicted class) and on the
    validation split where the run has one (its metrics), each process its shard, summed over
    all."""
    started = time.perf_counter()
    found = evaluate_split(model, test, splits, config, place)
    chosen_on = evaluate_split(model, val, splits, config, place) if val is not None else None
    return Evaluation(
        found.compute(),
        found.predictions(size(splits.eval)),
        chosen_on.compute() if chosen_on else None,
        seconds=time.perf_counter() - started,
    )


@torch.inference_mode()
def evaluate_split(
    model: ImageClassifier, loader: Iterable, splits: Splits, config: TrainConfig, place: Placement
) -> EvalAccumulator:
    """One split's counts, summed over the processes."""
    model.eval()
    accumulator = EvalAccumulator(len(splits.classes), place.device, splits.groups)
    for images, labels, *groups in loader:  # a group per sample where the dataset has groups
        images, labels = place(images, labels)
        with autocast(config, place.device):
            logits = model(images)
        accumulator.update(logits, labels, groups[0].to(place.device) if groups else None)
    accumulator.all_reduce()
    return accumulator


def save_checkpoint(
    job: Job, epoch: int, model, optimizer, scheduler, recorder, uploader: checkpoint.Uploader
) -> None:
    """Everything needed to continue bit for bit; rank 0 writes it, and uploads it in the
    background."""
    rng = checkpoint.gather_rng_states(job.world)  # a collective: every process takes part
    if job.rank == 0:
        state = {
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng,
            "epochs": recorder.epochs,
            "config": recorder.config.to_dict(),
        }
        uploader.save(job.store, job.run_id, job.pair, state)


# ---------------------------------------------------------------------------------- set-up


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m kbench.jobs.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--store", required=True, help="storage URI: s3://bucket/prefix or a dir")
    parser.add_argument("--run-id", required=True, help="run id")
    parser.add_argument("--pair", required=True, help="pair name, <dataset>_<model>")
    parser.add_argument(
        "--until",
        type=int,
        help="a sweep's trial: train to this epoch (its rung), score the validation split "
        "only, keep the checkpoint and write no result",
    )
    return parser.parse_args(argv)


def log(rank: int, message: str) -> None:
    if rank == 0:
        print(f"kbench.jobs.train: {message}", flush=True)


def copy_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def started_from(config: TrainConfig, info: ModelInfo, weights: Path | None) -> str:
    """The weights a pair started from, in words: what `torchvision:convnext_tiny` resolved
    to, or which staged file (its name leads with its SHA-256)."""
    if not config.pretrained:
        return "random init"
    if weights is not None:
        return f"staged file {weights.name}"
    return f"{info.description}, downloaded"


def environment() -> Environment:
    """What trained: for the report's run metadata."""
    import open_clip
    import torchvision

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {
        "device": gpu or f"CPU ({os.cpu_count()} cores)",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "open_clip": open_clip.__version__,
        "python": sys.version.split()[0],
        "cuda": torch.version.cuda if gpu else None,
    }


def _on_sigterm(signum, frame) -> None:
    sigterm["received"] = True
    raise Preempted


def exit_code() -> int:
    """Run the job and say how it ended: 0, or each failure in one line on stderr (an error
    nobody named with its traceback) and its exit code."""
    try:
        main()
        return 0
    except ConfigError as e:  # a bad config will not get better on retry: say so and exit 2
        print(f"{JOB_ERROR_PREFIX} {own_words(e)}", file=sys.stderr, flush=True)
        return JOB_ERROR_EXIT_CODE
    except Preempted:
        return _stopped()
    except KbenchError as e:  # e.g. the store stayed away past the retry window: may pass
        if sigterm["received"]:
            return _stopped()
        print(f"kbench.jobs.train: {own_words(e)}", file=sys.stderr, flush=True)
        return 1
    except Exception as e:
        # After a SIGTERM, a peer that stopped first breaks this process's next collective
        # (gloo: "connection closed by peer"): that is the preemption too, not a failure.
        if sigterm["received"]:
            return _stopped()
        if lost_peer(e):  # not this process's fault: see kbench.jobs.peers
            print(f"kbench.jobs.train: lost a peer: {own_words(e)}", file=sys.stderr, flush=True)
            return PEER_LOST_EXIT_CODE
        traceback.print_exc()
        return 1


def _stopped() -> int:
    # Every write replaces a whole object, so stopping here corrupts nothing; the next start
    # resumes after the last checkpoint.
    print(
        "kbench.jobs.train: SIGTERM: stopped; a restart resumes from the last checkpoint",
        file=sys.stderr,
        flush=True,
    )
    return PREEMPTED_EXIT_CODE


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_sigterm)
    code = exit_code()
    if code:
        # A job that stops ends here, at once. Its DataLoader workers ignore SIGTERM (see
        # loaders.start_worker), so multiprocessing's exit handler, which stops them with one
        # and then waits, would wait forever on the ones the failure left running; they die
        # with this process instead (PR_SET_PDEATHSIG).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
