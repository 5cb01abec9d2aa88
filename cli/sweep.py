"""`kbench sweep`: the driver of a run's sweeps. Each step reads the records, makes the
successive-halving decisions whose rungs every trial has reached (each written once), and sends
what they call for: the next rung's trials, then the chosen settings' seeds. A step that finds
nothing new sends nothing, so it may run as often, and from wherever, one likes: a laptop with
--watch, or a CronJob beside the run; killed, it is simply run again."""

from __future__ import annotations

import time

import click

from .options import run_options


@click.command()
@run_options
@click.option("-w", "--watch", is_flag=True, help="Step until every sweep has its seeds trained.")
@click.option(
    "--interval",
    type=click.FloatRange(min=1),
    default=60.0,
    help="Seconds between steps with --watch.",
)
def sweep(store, run_id, namespace, context, watch, interval) -> None:
    """Take a run's sweeps one step on (Kubernetes: the next rung's Jobs once the previous
    rung's records are in; locally: train every rung left and the seeds, as `submit` does)."""
    from kbench.errors import ConfigError
    from kbench.halving import advance, decision_line

    from .runs import open_run

    run, backend = open_run(store, run_id, namespace, context)
    if not run.sweeps:
        raise ConfigError(f"run {run.run_id} has no sweep: nothing to drive")
    if backend.finishes:  # local: the sweep trains here, to its end
        from kbench.backends.local import LocalBackend

        assert isinstance(backend, LocalBackend)
        backend.resume(store, run, click.echo)
        return
    from kbench.k8s.backend import KubernetesBackend

    assert isinstance(backend, KubernetesBackend)
    while True:
        step = advance(store, run, backend.states(store, run))
        run = step.run
        for decision in step.decided:
            click.echo(decision_line(decision))
        if step.work:
            from kbench.backends import send_more

            send_more(backend, run, step.work, store, click.echo)
        else:
            click.echo(f"run {run.run_id}: every sweep has chosen and its seeds have ended")
            if backend.end_driver(run.run_id):  # its work is done
                click.echo(f"run {run.run_id}: the sweep's driver (a CronJob) deleted")
        if not watch or not step.work:
            return
        time.sleep(interval)
