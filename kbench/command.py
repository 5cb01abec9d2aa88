"""The training job's command line, built here for every backend: the local backend runs it as a
process, the Kubernetes backend writes it into each pod. The manifests and the trainer are held
to each other by tests/test_k8s_contract.py, which runs a rendered pod's command.

    python -m kbench.jobs.launch <torchrun options> -m kbench.jobs.train \\
        --store S --run-id R --pair P
"""

from __future__ import annotations

import argparse

LAUNCHER = "kbench.jobs.launch"  # torchrun, passing the job's bad-config exit code through
TRAINER = "kbench.jobs.train"


# The CPUs a pod was given, as the pod sets it for its processes: they size their DataLoader
# workers by it (a container's CPU limit is not what the OS reports as its CPUs).
CPUS_ENV = "KBENCH_CPUS"
# The GPUs a pod was given: a process that finds CUDA unusable then fails at once (exit 2)
# instead of holding them while it trains on the CPU.
GPUS_ENV = "KBENCH_GPUS"
# When a pair's time limit runs out (ISO 8601, UTC): its processes stop then, every attempt.
DEADLINE_ENV = "KBENCH_DEADLINE"
# The pod's own name (the downward API's metadata.name), one per attempt: its log's name.
POD_NAME_ENV = "KBENCH_POD_NAME"


def trainer_target(args: list[str]) -> tuple[str, str, str]:
    """The store, run and pair of the trainer's arguments, as `train_command` writes them."""
    parser = argparse.ArgumentParser(add_help=False)
    for flag in ("--store", "--run-id", "--pair"):
        parser.add_argument(flag, required=True)
    known, _ = parser.parse_known_args(args)
    return known.store, known.run_id, known.pair


def train_command(
    python: str,
    torchrun: list[str],
    store_uri: str,
    run_id: str,
    pair: str,
    until: int | None = None,
) -> list[str]:
    """`torchrun` holds the launcher's options (--standalone, --nnodes, --rdzv-*, ...);
    `until`: a sweep's trial, stopped at its rung's epoch."""
    return [
        python,
        "-m",
        LAUNCHER,
        *torchrun,
        "-m",
        TRAINER,
        "--store",
        store_uri,
        "--run-id",
        run_id,
        "--pair",
        pair,
        *([] if until is None else ["--until", str(until)]),
    ]
