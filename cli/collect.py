"""`kbench collect`: the comparison report of a run; `kbench compare`: runs side by side."""

from __future__ import annotations

import click

from .options import run_options, store_option
from .output import table
from .runs import open_run


@click.command()
@run_options
@click.option(
    "--out-dir",
    type=click.Path(file_okay=False),
    help="Folder for the report (default: kbench-reports/<run>).",
)
@click.option(
    "--track",
    is_flag=True,
    help="Also send MLflow (MLFLOW_TRACKING_URI) whatever of the run's records it lacks: "
    "epochs a pair's job could not send while the tracker was away.",
)
def collect(store, run_id, namespace, context, out_dir, track) -> None:
    """Build the comparison report of a run: HTML, Markdown, CSV and JSON."""
    from kbench.halving import with_trials
    from kbench.pairs import PairState
    from kbench.report.gather import gather
    from kbench.report.render import write_report

    run, backend = open_run(store, run_id, namespace, context)
    results = gather(store, run, with_trials(store, run, backend.states(store, run)))
    paths = write_report(results, out_dir or f"kbench-reports/{run.run_id}")
    complete = sum(1 for p in results["pairs"] if p["state"] == PairState.SUCCEEDED.value)
    t = results["overall"]["top1"]
    adjusted = f" (Holm-adjusted for {t['tests']} datasets)" if t["tests"] > 1 else ""
    click.echo(
        f"run {run.run_id}: {complete} of {len(results['pairs'])} pairs complete; "
        f"in top-1 CLIP wins {t['clip_wins']}, ResNet wins {t['resnet_wins']}{adjusted}, "
        f"{t['unclear'] + t['undecided']} without a clear winner or undecided"
    )
    for dataset in results["datasets"]:
        if dataset["verdict"]:
            click.echo(f"  {dataset['verdict']}")
    for path in paths:
        click.echo(f"wrote {path}")
    if track:
        _track(store, run)


def _track(store, run) -> None:
    from kbench import tracking
    from kbench.errors import BackendError, ConfigError
    from kbench.runs import read_pairs

    uri = tracking.tracking_uri()
    if uri is None:
        raise ConfigError(f"--track: set {tracking.TRACKING_URI} to the MLflow server")
    client = tracking.client(uri)
    sent = 0
    try:
        for found in read_pairs(store, run):
            config = found.config.to_dict()
            sent += tracking.sync_pair(
                client, run.run_id, found.pair, config, found.epochs, found.result
            )
    except Exception as e:  # the tracker's own error, in one line
        raise BackendError(f"MLflow at {uri}: {str(e).strip().splitlines()[0][:300]}") from None
    click.echo(f"run {run.run_id}: MLflow at {uri} has every epoch; {sent} sent now")


@click.command()
@click.argument("run_ids", metavar="RUN RUN...", nargs=-1, required=True)
@store_option
@click.option("-o", "--output", type=click.Choice(["table", "json", "md"]), default="table")
def compare(run_ids, store, output) -> None:
    """The same pairs across runs, side by side: each run's top-1 at the epoch it chose, each
    later run's difference to the first (with a paired interval where both scored the same
    test samples), and the settings that differ."""
    import json

    from kbench.report.across_runs import as_markdown, cells, compare_runs
    from kbench.runs import load_run

    if len(run_ids) < 2:
        raise click.UsageError("compare needs two runs or more: kbench compare RUN RUN...")
    compared = compare_runs(store, [load_run(store, run_id) for run_id in run_ids])
    if output == "json":
        click.echo(json.dumps(compared, indent=2))
    elif output == "md":
        click.echo(as_markdown(compared), nl=False)
    else:
        first, later = run_ids[0], run_ids[1:]
        header = ["PAIR", *run_ids, *(f"{r} - {first}" for r in later), "SETTINGS THAT DIFFER"]
        table([header, *(cells(row) for row in compared["pairs"])])


@click.command()
@click.argument("pair")
@store_option
@click.option("--run", "run_id", help="The run (default: the newest in the store).")
@click.option(
    "--out-dir",
    type=click.Path(file_okay=False),
    default="kbench-export",
    show_default=True,
    help="Where the .safetensors file and its card go.",
)
def export(pair, store, run_id, out_dir) -> None:
    """A finished pair's model at the epoch its run chose: a safetensors file and a card (the
    preprocessing, the classes in order, the metrics, the lines that load it)."""
    from pathlib import Path

    from kbench.export import export_pair
    from kbench.runs import check_pairs, load_run

    run = load_run(store, run_id)
    check_pairs(run, [pair])
    for path in export_pair(store, run, pair, Path(out_dir)):
        click.echo(f"wrote {path}")
