"""`kbench runs`, `status`, `logs` and `cancel`: runs in the store and where their pairs are."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from .options import run_options, store_option
from .output import duration, num, pct, print_value, table


def open_run(store: Any, run_id: str | None, namespace: str | None, context: str | None):
    """The run (the newest by default) and the backend that ran it, pointed where it went."""
    from kbench.backends import Options, backend_of
    from kbench.runs import load_run

    run = load_run(store, run_id)
    flags = {"namespace": namespace, "context": context}
    return run, backend_of(run, Options(cluster={k: v for k, v in flags.items() if v}))


@click.command()
@store_option
def runs(store) -> None:
    """List the runs in the store, oldest first."""
    from kbench.runs import list_runs

    rows = [["RUN", "GRID", "BACKEND", "PAIRS", "CREATED"]]
    for run in list_runs(store):
        rows.append([run.run_id, run.grid, run.backend, str(len(run.pairs)), run.created])
    table(rows)


@click.command()
@run_options
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.option("-w", "--watch", is_flag=True, help="Refresh until every pair has finished.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0),
    default=10.0,
    help="Seconds between refreshes with --watch.",
)
def status(store, run_id, namespace, context, output, watch, interval) -> None:
    """Where every pair of a run stands: state, epoch, latest headline metric, and what
    blocks it. Exits 3 when a pair failed, was cancelled or is gone; --watch returns once
    every pair has finished."""
    from kbench.errors import PairsUnsuccessful
    from kbench.halving import with_trials
    from kbench.runs import load_run, pair_statuses

    run, backend = open_run(store, run_id, namespace, context)
    while True:
        # The same few requests every refresh: list calls (cluster) and the pairs' records.
        if run.sweeps:  # a sweep's driver adds the chosen settings' seeds as it goes
            run = load_run(store, run.run_id)
        rows = pair_statuses(store, run, with_trials(store, run, backend.states(store, run)))
        if output == "json":
            print_value({"run_id": run.run_id, "pairs": [r.to_dict() for r in rows]}, "json")
        else:
            _status_table(run, rows, clear=watch)
        if not watch or all(r.state.finished for r in rows):
            break
        try:
            time.sleep(interval)
        except KeyboardInterrupt:
            return
    unsuccessful = [r.pair for r in rows if r.state.unsuccessful]
    if unsuccessful:  # exit 3: scripts can wait on a run with `status --watch`
        raise PairsUnsuccessful(
            f"{len(unsuccessful)} pair(s) did not succeed: {', '.join(unsuccessful)}"
        )


def _status_table(run: Any, rows: list, clear: bool) -> None:
    if clear and sys.stdout.isatty():
        click.clear()
    click.echo(f"run {run.run_id} (grid {run.grid}, {run.backend}, created {run.created})")
    lines = [["PAIR", "STATE", "EPOCH", "METRIC", "VALUE", "IMG/S", "ETA", "DETAIL"]]
    for r in rows:
        epoch = f"{'-' if r.epoch is None else r.epoch}/{r.epochs}"
        lines.append(
            [
                r.pair,
                r.state.value,
                epoch,
                r.headline_metric,
                pct(r.headline),
                num(r.images_per_s),
                duration(r.eta_s),
                r.detail,
            ]
        )
    table(lines)


def _node(ctx: click.Context, param: click.Parameter, value: str) -> int | None:
    if value == "all":
        return None
    if value.isdigit():
        return int(value)
    raise click.BadParameter("a node index (0, 1, ...) or all")


@click.command()
@click.argument("pair")
@run_options
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until the pair stops.")
@click.option(
    "--node",
    default="0",
    callback=_node,
    help="kubernetes: which pod (completion index) of a multi-node pair, or all (each line "
    "prefixed [node N]).",
)
@click.option(
    "-p", "--previous", is_flag=True, help="The last failed attempt's log, not the newest."
)
@click.option("--tail", type=click.IntRange(min=1), help="Only the last N lines.")
def logs(pair, store, run_id, namespace, context, follow, node, previous, tail) -> None:
    """Print a pair's training log."""
    from kbench.errors import ConfigError
    from kbench.runs import check_pairs

    if follow and (previous or node is None):
        raise ConfigError("--follow streams one running pod: leave out --previous and --node all")
    run, backend = open_run(store, run_id, namespace, context)
    check_pairs(run, [pair])
    text = backend.logs(store, run, pair, follow=follow, node=node, previous=previous, tail=tail)
    for chunk in [text] if isinstance(text, str) else text:
        click.echo(chunk, nl=False)


@click.command()
@click.argument("pairs", nargs=-1)
@run_options
@click.option("--all", "all_pairs", is_flag=True, help="Stop every pair of the run.")
def cancel(pairs, store, run_id, namespace, context, all_pairs) -> None:
    """Stop the named pairs of a run (every pair with --all)."""
    from kbench.errors import ConfigError
    from kbench.runs import check_pairs

    if bool(pairs) == all_pairs:
        raise ConfigError("name the pairs to stop, or --all for every pair of the run")
    run, backend = open_run(store, run_id, namespace, context)
    stopped = backend.cancel(store, run, check_pairs(run, list(pairs)) if pairs else run.pairs)
    click.echo(f"run {run.run_id}: stopped {', '.join(stopped) if stopped else 'nothing running'}")
