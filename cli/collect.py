"""`kbench collect`: the comparison report of a run."""

from __future__ import annotations

import click

from .options import run_options
from .runs import open_run


@click.command()
@run_options
@click.option(
    "--out-dir",
    type=click.Path(file_okay=False),
    help="Folder for the report (default: kbench-reports/<run>).",
)
def collect(store, run_id, namespace, context, out_dir) -> None:
    """Build the comparison report of a run: HTML, Markdown, CSV and JSON."""
    from kbench.pairs import PairState
    from kbench.report.gather import gather
    from kbench.report.render import write_report

    run, backend = open_run(store, run_id, namespace, context)
    results = gather(store, run, backend.states(store, run))
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
