"""Options shared by several commands, defined once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from kbench.storage import DEFAULT_STORE, STORE_ENV, Store, open_store


def _open_store(ctx: click.Context, param: click.Parameter, value: str) -> Store:
    return open_store(value)


store_option = click.option(
    "--store",
    envvar=STORE_ENV,
    default=DEFAULT_STORE,
    callback=_open_store,
    help="Where runs keep their records: s3://bucket/prefix or a local directory "
    "[env: KBENCH_STORE]. S3 settings come from the standard AWS variables.",
)
run_option = click.option("--run", "run_id", help="Run id (default: the newest run in the store).")
grid_option = click.option(
    "--grid",
    "grid_ref",
    required=True,
    help="A built-in grid (all, study, smoke) or the path of a grid YAML file.",
)
parallel_option = click.option(
    "--parallel",
    type=click.IntRange(min=1),
    default=1,
    help="local: pairs to train at the same time.",
)
run_id_option = click.option("--run-id", help="Name the run (default: <grid>-<date>-<time>).")
namespace_option = click.option(
    "-n", "--namespace", help="kubernetes: namespace (default: the grid's, else kbench)."
)
context_option = click.option(
    "--context", help="kubernetes: kubeconfig context (default: current)."
)


def run_options(f: Callable) -> Callable:
    """A run in a store, and where its backend is: --store, --run, -n/--namespace, --context."""
    for option in reversed([store_option, run_option, namespace_option, context_option]):
        f = option(f)
    return f


# Cluster settings a flag may give; they win over a --profile file, which wins over the grid's.
CLUSTER_FLAGS = ("image", "namespace", "context", "nodes", "gpus_per_node", "gpu_type")


def cluster_options(f: Callable) -> Callable:
    """Kubernetes settings; flags win over a --profile file, which wins over the grid's."""
    options = [
        click.option("--image", help="kubernetes: the training image."),
        namespace_option,
        context_option,
        click.option(
            "--profile",
            type=click.Path(dir_okay=False),
            help="kubernetes: a YAML file of cluster settings.",
        ),
        click.option("--nodes", type=click.IntRange(min=1), help="kubernetes: pods per pair."),
        click.option(
            "--gpus-per-node",
            type=click.IntRange(min=1),
            help="kubernetes: GPUs (training processes) per pod.",
        ),
        click.option(
            "--gpu-type",
            help="The GPUs' type, for the budget --dry-run and render print (nvidia-h100).",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def cluster_flags(options: dict[str, Any]) -> dict[str, Any]:
    """The cluster settings given as flags, out of a command's keyword arguments."""
    return {key: options.pop(key) for key in CLUSTER_FLAGS if key in options}
