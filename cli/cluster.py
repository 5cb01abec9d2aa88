"""`kbench setup` and `kbench doctor`: a cluster made ready for kbench, and checked."""

from __future__ import annotations

import click

from .options import cluster_flags, cluster_options, namespace_option, store_option
from .output import print_documents


@click.command()
@click.option("--grid", "grid_ref", help="Take cluster settings from this grid's cluster section.")
@store_option
@cluster_options
def doctor(grid_ref, store, profile, **flags) -> None:
    """Check the cluster, permissions, store and image before submitting."""
    from kbench.errors import BackendError
    from kbench.k8s.doctor import run_checks
    from kbench.k8s.settings import settings_for
    from kbench.spec import load_grid

    grid = load_grid(grid_ref) if grid_ref else None
    settings = settings_for(grid, profile, cluster_flags(flags))
    checks = run_checks(settings, store.uri, grid=grid)
    width = max(len(c.name) for c in checks)
    for c in checks:
        mark = {True: "ok  ", False: "FAIL", None: "??  "}[c.ok]
        click.echo(f"{mark} {c.name.ljust(width)}  {c.detail}")
        if c.fix:
            click.echo(f"     {' ' * width}  fix: {c.fix}")
    failed = [c.name for c in checks if c.ok is False]
    if failed:
        raise BackendError(f"{len(failed)} check(s) failed: {', '.join(failed)}")


@click.command()
@namespace_option
@click.option("--user", "users", multiple=True, help="Who may run kbench here (repeatable).")
@click.option("--group", "groups", multiple=True, help="A group that may run kbench (repeatable).")
@click.option(
    "--s3-secret",
    default="kbench-s3",
    help="Name of the S3 credentials Secret the pods read.",
)
@click.option(
    "--secret-template",
    is_flag=True,
    help="Print only a template of that Secret, to fill in and apply once (never part of the "
    "default stream, which is safe to re-apply: it would blank the keys).",
)
@click.option("--queue", help="Also print an example Kueue set-up for this LocalQueue.")
@click.option(
    "--network-policy",
    is_flag=True,
    help="Also print a NetworkPolicy that lets the pods reach each other, DNS and the store "
    "(for namespaces that deny traffic by default).",
)
@click.option(
    "--sweep-driver",
    is_flag=True,
    help="Also print the identity of the CronJob that drives a run's sweeps (a ServiceAccount "
    "with a token, and a Role of exactly what `kbench sweep` calls).",
)
@click.option("--s3-endpoint", help="The store's endpoint the pods use (its port is allowed).")
@click.option("-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml")
def setup(
    namespace,
    users,
    groups,
    s3_secret,
    secret_template,
    queue,
    network_policy,
    sweep_driver,
    s3_endpoint,
    output,
) -> None:
    """Print the cluster objects kbench needs, for `kubectl apply -f -` (safe to re-apply)."""
    from kbench.k8s.settings import DEFAULT_NAMESPACE, ClusterSettings, check_names
    from kbench.k8s.setup import secret_template as template
    from kbench.k8s.setup import setup_manifests

    settings = ClusterSettings(
        namespace=namespace or DEFAULT_NAMESPACE,
        s3_secret=s3_secret or None,
        queue=queue,
        s3_endpoint=s3_endpoint,
    )
    check_names(settings)
    if secret_template:
        print_documents(template(settings), output)
        return
    manifests = setup_manifests(
        settings,
        list(users),
        list(groups),
        kueue=bool(queue),
        network_policy=network_policy,
        sweep_driver=sweep_driver,
    )
    print_documents(manifests, output)
