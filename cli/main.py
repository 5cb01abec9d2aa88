"""The `kbench` command line: parse options, call the library, print.

Expected failures (`KbenchError`) become one line on stderr and an exit code (2 for bad input,
1 otherwise) here and nowhere else; anything unexpected keeps its traceback.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from typing import Any

import click

from kbench import __version__
from kbench.errors import KbenchError


class KbenchCliError(click.ClickException):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class KbenchGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KbenchError as e:
            raise KbenchCliError(str(e), e.exit_code) from None


store_option = click.option(
    "--store",
    envvar="KBENCH_STORE",
    default="./kbench-runs",
    show_default=True,
    help="Where runs keep their records: s3://bucket/prefix or a local directory "
    "[env: KBENCH_STORE]. S3 settings come from the standard AWS variables.",
)
run_option = click.option("--run", "run_id", help="Run id (default: the newest run in the store).")


@click.group(cls=KbenchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kbench")
def cli() -> None:
    """Fine-tune CLIP ViT-B/32 and ResNet50 on the same datasets and compare them.

    \b
      kbench submit --grid smoke    # train every dataset x model pair of a grid
      kbench status                 # where every pair stands
      kbench collect                # the comparison report
    """


@cli.command()
@click.option(
    "--grid",
    "grid_ref",
    required=True,
    help="A built-in grid (all, smoke) or the path of a grid YAML file.",
)
@click.option(
    "--backend",
    type=click.Choice(["local"]),
    default="local",
    show_default=True,
    help="Where to train: local runs every pair on this machine under torchrun.",
)
@store_option
@click.option("--run-id", help="Name the run (default: <grid>-<date>-<time>).")
@click.option(
    "--parallel",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="local: pairs to train at the same time.",
)
@click.option(
    "--nproc-per-node",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="local: training processes per pair (one per GPU; gloo on a CPU).",
)
@click.option("--dry-run", is_flag=True, help="Print every pair's resolved config; run nothing.")
@click.option(
    "-o",
    "--output",
    type=click.Choice(["yaml", "json"]),
    default="yaml",
    show_default=True,
    help="Format of --dry-run.",
)
def submit(grid_ref, backend, store, run_id, parallel, nproc_per_node, dry_run, output) -> None:
    """Train every dataset x model pair of a grid and record the results in the store."""
    from kbench.backends import get_backend
    from kbench.errors import BackendError
    from kbench.runs import check_run_id, create_run, new_run_id
    from kbench.spec import load_grid
    from kbench.storage import open_store

    grid = load_grid(grid_ref)
    run_id = check_run_id(run_id) if run_id else new_run_id(grid.name)
    chosen = get_backend(backend, parallel=parallel, nproc_per_node=nproc_per_node)
    if dry_run:
        pairs = [{"pair": p.name, "config": p.config.to_dict()} for p in grid.pairs]
        _print({"run_id": run_id, "grid": grid.name, "backend": backend, "pairs": pairs}, output)
        return
    chosen.check()
    the_store = open_store(store)
    run = create_run(the_store, run_id, grid, backend)
    states = chosen.submit(the_store, run, click.echo)
    failed = [pair for pair, state in states.items() if state != "succeeded"]
    click.echo(
        f"run {run_id}: {len(states) - len(failed)} of {len(states)} pairs succeeded; "
        f"`kbench collect --run {run_id}` builds the report"
    )
    if failed:
        raise BackendError(f"{len(failed)} pair(s) did not succeed: {', '.join(failed)}")


@cli.command()
@store_option
@run_option
@click.option(
    "-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True
)
def status(store, run_id, output) -> None:
    """Where every pair of a run stands: state, epoch, latest headline metric."""
    from kbench.backends import get_backend
    from kbench.runs import load_run, pair_statuses
    from kbench.storage import open_store

    the_store = open_store(store)
    run = load_run(the_store, run_id)
    states = get_backend(run["backend"]).states(the_store, run)
    rows = pair_statuses(the_store, run, states)
    if output == "json":
        _print({"run_id": run["run_id"], "pairs": [r.to_dict() for r in rows]}, "json")
        return
    click.echo(
        f"run {run['run_id']} (grid {run['grid']}, {run['backend']}, created {run['created']})"
    )
    table = [["PAIR", "STATE", "EPOCH", "METRIC", "VALUE", "IMG/S", "ETA", "DETAIL"]]
    for r in rows:
        table.append(
            [
                r.pair,
                r.state,
                f"{'-' if r.epoch is None else r.epoch}/{r.epochs}",
                r.headline_metric,
                _pct(r.headline),
                _num(r.images_per_s),
                _duration(r.eta_s),
                r.detail,
            ]
        )
    _table(table)


@cli.command()
@store_option
@run_option
@click.option(
    "-o",
    "--output-dir",
    type=click.Path(file_okay=False),
    help="Folder for the report (default: kbench-reports/<run>).",
)
def collect(store, run_id, output_dir) -> None:
    """Build the comparison report of a run: HTML, Markdown, CSV and JSON."""
    from kbench.backends import get_backend
    from kbench.report import gather, write_report
    from kbench.runs import load_run
    from kbench.storage import open_store

    the_store = open_store(store)
    run = load_run(the_store, run_id)
    states = get_backend(run["backend"]).states(the_store, run)
    results = gather(the_store, run, states)
    paths = write_report(results, output_dir or f"kbench-reports/{run['run_id']}")
    complete = sum(1 for p in results["pairs"] if p["state"] == "complete")
    o = results["overall"]
    click.echo(
        f"run {run['run_id']}: {complete} of {len(results['pairs'])} pairs complete; "
        f"CLIP wins {o['clip_wins']}, ResNet wins {o['resnet_wins']}, "
        f"{o['ties'] + o['undecided']} tied or undecided"
    )
    for path in paths:
        click.echo(f"wrote {path}")


@cli.command()
@store_option
def runs(store) -> None:
    """List the runs in the store, oldest first."""
    from kbench.runs import list_runs
    from kbench.storage import open_store

    table = [["RUN", "GRID", "BACKEND", "PAIRS", "CREATED"]]
    for run in list_runs(open_store(store)):
        table.append(
            [run["run_id"], run["grid"], run["backend"], str(len(run["pairs"])), run["created"]]
        )
    _table(table)


@cli.command()
@click.argument("pair")
@store_option
@run_option
def logs(pair, store, run_id) -> None:
    """Print a pair's training log."""
    from kbench.backends import get_backend
    from kbench.runs import load_run
    from kbench.storage import open_store

    the_store = open_store(store)
    run = _with_pairs(load_run(the_store, run_id), [pair])
    click.echo(get_backend(run["backend"]).logs(the_store, run, pair), nl=False)


@cli.command()
@click.argument("pairs", nargs=-1)
@store_option
@run_option
def cancel(pairs, store, run_id) -> None:
    """Stop the given pairs of a run (all of its pairs when none is named)."""
    from kbench.backends import get_backend
    from kbench.runs import load_run
    from kbench.storage import open_store

    the_store = open_store(store)
    run = _with_pairs(load_run(the_store, run_id), list(pairs))
    stopped = get_backend(run["backend"]).cancel(the_store, run, list(pairs) or run["pairs"])
    click.echo(
        f"run {run['run_id']}: stopped {', '.join(stopped) if stopped else 'nothing running'}"
    )


def _with_pairs(run: dict[str, Any], pairs: list[str]) -> dict[str, Any]:
    from kbench.errors import ConfigError

    for pair in pairs:
        if pair not in run["pairs"]:
            raise ConfigError(
                f"run {run['run_id']} has no pair {pair!r}; pairs: {', '.join(run['pairs'])}"
            )
    return run


def _print(value: Any, output: str) -> None:
    if output == "json":
        click.echo(json.dumps(value, indent=2))
    else:
        import yaml

        click.echo(yaml.safe_dump(value, sort_keys=False), nl=False)


def _table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _fmt(value: float | None, render: Callable[[float], str]) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return render(value)


def _pct(value: float | None) -> str:
    return _fmt(value, lambda v: f"{100 * v:.1f}%")


def _num(value: float | None) -> str:
    return _fmt(value, lambda v: f"{v:.0f}")


def _duration(seconds: float | None) -> str:
    return _fmt(seconds, lambda s: f"{int(s) // 60}m{int(s) % 60:02d}s")


def main() -> None:
    cli(prog_name="kbench")


if __name__ == "__main__":
    sys.exit(main())
