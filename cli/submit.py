"""`kbench submit`, `resume` and `render`: a grid becomes a plan, the plan is printed or sent;
a local run that stopped part-way goes on."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .options import (
    cluster_flags,
    cluster_options,
    grid_option,
    parallel_option,
    run_id_option,
    run_option,
    store_option,
)
from .output import print_documents, table, to_yaml


@click.command()
@grid_option
@click.option(
    "--backend",
    "backend_name",
    type=click.Choice(["local", "kubernetes"]),
    default="local",
    help="local: every pair on this machine under torchrun; kubernetes: a Job a pair.",
)
@store_option
@run_id_option
@parallel_option
@click.option(
    "--nproc-per-node",
    type=click.IntRange(min=1),
    default=1,
    help="local: training processes per pair (one per GPU; gloo on a CPU).",
)
@cluster_options
@click.option(
    "--replace", is_flag=True, help="kubernetes: recreate pairs of this run already on the cluster."
)
@click.option(
    "--dry-run",
    type=click.Choice(["client", "server"]),
    is_flag=False,
    flag_value="client",
    default=None,
    help="Print the plan (each pair's config and command; for kubernetes the manifests) and "
    "stop. --dry-run=server first makes every check a submit makes, for kubernetes the API "
    "server's own dry run of every manifest; nothing is created or recorded.",
)
@click.option(
    "-o",
    "--output",
    type=click.Choice(["yaml", "json"]),
    default="yaml",
    help="Format of --dry-run.",
)
def submit(grid_ref, backend_name, store, run_id, dry_run, output, **options) -> None:
    """Train every dataset x model pair of a grid and record the results in the store."""
    from kbench.backends import Options, open_backend, send, verify
    from kbench.runs import Run, new_run_id
    from kbench.spec import load_grid

    grid = load_grid(grid_ref)
    run = Run.new(run_id or new_run_id(grid.name), grid, backend_name)
    flags = cluster_flags(options)
    backend = open_backend(backend_name, grid, Options(cluster=flags, **options))
    plan = backend.plan(run, grid.pairs, store.uri)
    if dry_run:
        _print_budget(grid, backend, flags)
    if dry_run == "server":
        for warning in verify(backend, plan, store):
            click.echo(f"warning: {warning}", err=True)
        click.echo(f"run {run.run_id}: every check passed; nothing was created", err=True)
    if dry_run:
        print_documents(plan.documents, output)
        return

    _sent(run.run_id, send(backend, plan, store, click.echo), backend.finishes)


def _print_budget(grid, backend, flags: dict) -> None:
    """The run's estimated GPU-hours, on stderr beside the plan."""
    from kbench.budget import budget_lines, grid_budget

    settings = getattr(backend, "settings", None)  # kubernetes: the resolved cluster settings
    gpu_type = flags.get("gpu_type") or getattr(settings, "gpu_type", None)
    for line in budget_lines(grid_budget(grid.pairs, grid.sweeps, gpu_type)):
        click.echo(line, err=True)


@click.command()
@store_option
@run_option
@parallel_option
def resume(store, run_id, parallel) -> None:
    """Train again every pair of a local run that has not succeeded (after a crash, a reboot
    or a cancel), each from its last checkpoint; finished pairs stay as they are."""
    from kbench.backends import Options, backend_of
    from kbench.errors import ConfigError
    from kbench.runs import load_run

    run = load_run(store, run_id)
    if run.backend != "local":
        raise ConfigError(
            f"run {run.run_id} went to {run.backend}, whose Jobs retry failed pods themselves; "
            f"`kbench submit --backend kubernetes --run-id {run.run_id} --grid ...` recreates "
            "deleted ones"
        )
    from kbench.backends.local import LocalBackend

    backend = backend_of(run, Options(parallel=parallel))
    assert isinstance(backend, LocalBackend)  # the only backend that resumes a run itself
    _sent(run.run_id, backend.resume(store, run, click.echo), finished=True)


def _sent(run_id: str, outcomes: dict, finished: bool) -> None:
    """What became of a submission's pairs, and what to run next."""
    from kbench.errors import BackendError, PairsUnsuccessful

    failed = [pair for pair, outcome in outcomes.items() if outcome.state.unsuccessful]
    done = f"run {run_id}: {len(outcomes) - len(failed)} of {len(outcomes)} pairs"
    if finished:  # the pairs have trained: the report is next
        click.echo(f"{done} succeeded; `kbench collect --run {run_id}` builds the report")
    else:  # the pairs are on their way: status is next
        table([["PAIR", "SUBMITTED"]] + [[p, o.text()] for p, o in outcomes.items()])
        click.echo(f"{done} on the cluster; `kbench status --run {run_id}` follows them")
    if failed:
        # Trained and failed: 3, as `status` says of such a run; not even sent: the command
        # failed (1).
        error = PairsUnsuccessful if finished else BackendError
        raise error(f"{len(failed)} pair(s) did not succeed: {', '.join(failed)}")


@click.command()
@grid_option
@store_option
@run_id_option
@cluster_options
@click.option("-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml")
@click.option("--out-dir", type=click.Path(file_okay=False), help="One file per manifest here.")
@click.option(
    "--dry-run", is_flag=True, help="Print the manifests without recording the run in the store."
)
def render(grid_ref, store, run_id, output, out_dir, dry_run, **options) -> None:
    """Write a grid's Kubernetes manifests (strictly validated) and record the run in the store
    as `submit` does, without sending anything: `kubectl apply` of the output then trains, and
    a later `kbench submit` of the same run id creates only what is missing."""
    from kbench.backends import Options, open_backend
    from kbench.runs import Run, create_run, new_run_id
    from kbench.spec import load_grid

    grid = load_grid(grid_ref)
    run = Run.new(run_id or new_run_id(grid.name), grid, "kubernetes")
    flags = cluster_flags(options)
    backend = open_backend("kubernetes", grid, Options(cluster=flags, **options))
    plan = backend.plan(run, grid.pairs, store.uri)
    _print_budget(grid, backend, flags)
    if not dry_run:  # the pods read their configs from the store: they must be there
        create_run(store, plan.run, plan.pairs, resubmit=True)
    if out_dir is None:
        print_documents(plan.documents, output)
    else:
        folder = Path(out_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for m in plan.documents:
            text = json.dumps(m, indent=2) + "\n" if output == "json" else to_yaml(m)
            (folder / f"{m['metadata']['name']}.{m['kind'].lower()}.{output}").write_text(text)
    recorded = "" if dry_run else f"; run {run.run_id} recorded in {store.uri}"
    where = f"wrote {len(plan.documents)} manifests to {out_dir}" if out_dir else ""
    if where or recorded:
        click.echo((where or f"{len(plan.documents)} manifests") + recorded, err=out_dir is None)
