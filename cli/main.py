"""The `kbench` command line: parse options, call the library, print.

Expected failures (`KbenchError`) become one line on stderr and an exit code (2 for bad input,
1 otherwise) here and nowhere else; anything unexpected keeps its traceback.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
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


# ------------------------------------------------------------------- options defined once

store_option = click.option(
    "--store",
    envvar="KBENCH_STORE",
    default="./kbench-runs",
    show_default=True,
    help="Where runs keep their records: s3://bucket/prefix or a local directory "
    "[env: KBENCH_STORE]. S3 settings come from the standard AWS variables.",
)
run_option = click.option("--run", "run_id", help="Run id (default: the newest run in the store).")
grid_option = click.option(
    "--grid",
    "grid_ref",
    required=True,
    help="A built-in grid (all, smoke) or the path of a grid YAML file.",
)
run_id_option = click.option("--run-id", help="Name the run (default: <grid>-<date>-<time>).")
namespace_option = click.option(
    "-n", "--namespace", help="kubernetes: namespace (default: the grid's, else default)."
)
context_option = click.option(
    "--context", help="kubernetes: kubeconfig context (default: current)."
)


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
    ]
    for option in reversed(options):
        f = option(f)
    return f


@click.group(cls=KbenchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kbench")
def cli() -> None:
    """Fine-tune CLIP ViT-B/32 and ResNet50 on the same datasets and compare them.

    \b
      kbench submit --grid smoke    # train every dataset x model pair of a grid
      kbench status                 # where every pair stands
      kbench collect                # the comparison report
    """


# ---------------------------------------------------------------------------------- commands


@cli.command()
@grid_option
@click.option(
    "--backend",
    type=click.Choice(["local", "kubernetes"]),
    default="local",
    show_default=True,
    help="local: every pair on this machine under torchrun; kubernetes: a Job a pair.",
)
@store_option
@run_id_option
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
@cluster_options
@click.option(
    "--replace", is_flag=True, help="kubernetes: recreate pairs of this run already on the cluster."
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print what would run (configs; for kubernetes the manifests) and stop.",
)
@click.option(
    "-o",
    "--output",
    type=click.Choice(["yaml", "json"]),
    default="yaml",
    show_default=True,
    help="Format of --dry-run.",
)
def submit(
    grid_ref,
    backend,
    store,
    run_id,
    parallel,
    nproc_per_node,
    image,
    namespace,
    context,
    profile,
    nodes,
    gpus_per_node,
    replace,
    dry_run,
    output,
) -> None:
    """Train every dataset x model pair of a grid and record the results in the store."""
    from kbench.backends import get_backend
    from kbench.errors import BackendError, ConfigError
    from kbench.runs import check_run_id, create_run, new_run_id, unstaged_datasets
    from kbench.spec import load_grid
    from kbench.storage import open_store

    grid = load_grid(grid_ref)
    run_id = check_run_id(run_id) if run_id else new_run_id(grid.name)
    extra = {}
    if backend == "kubernetes":
        settings = _cluster_settings(grid, profile, image, namespace, context, nodes, gpus_per_node)
        manifests = _rendered(run_id, grid.pairs, settings, store)
        if dry_run:
            _print_manifests(manifests, output)
            return
        chosen = get_backend(backend, settings=settings, replace=replace)
        extra = {"cluster": {"namespace": settings.namespace, "context": settings.context}}
    else:
        chosen = get_backend(backend, parallel=parallel, nproc_per_node=nproc_per_node)
        if dry_run:
            pairs = [{"pair": p.name, "config": p.config.to_dict()} for p in grid.pairs]
            _print(
                {"run_id": run_id, "grid": grid.name, "backend": backend, "pairs": pairs}, output
            )
            return
    chosen.check()
    the_store = open_store(store)
    if backend == "kubernetes":  # pods read data from the store only: check before any Job
        missing = unstaged_datasets(the_store, grid)
        if missing:
            raise ConfigError(
                f"not staged in {the_store.uri}: {', '.join(missing)}; pods read datasets "
                f"from the store: run `kbench data stage NAME --store {the_store.uri}` "
                "(an imagefolder: --root DIR) first"
            )
    run = create_run(
        the_store, run_id, grid, backend, extra=extra, exist_ok=backend == "kubernetes"
    )
    outcomes = chosen.submit(the_store, run, grid.pairs, click.echo)
    failed = [p for p, o in outcomes.items() if o.split(":")[0] in ("failed", "cancelled")]
    if backend == "local":
        click.echo(
            f"run {run_id}: {len(outcomes) - len(failed)} of {len(outcomes)} pairs "
            f"succeeded; `kbench collect --run {run_id}` builds the report"
        )
    else:
        _table([["PAIR", "SUBMITTED"]] + [[p, o] for p, o in outcomes.items()])
        click.echo(
            f"run {run_id}: {len(outcomes) - len(failed)} of {len(outcomes)} pairs on the "
            f"cluster; `kbench status --run {run_id}` follows them"
        )
    if failed:
        raise BackendError(f"{len(failed)} pair(s) did not succeed: {', '.join(failed)}")


@cli.command()
@grid_option
@store_option
@run_id_option
@cluster_options
@click.option(
    "-o",
    "--output",
    "out",
    default="-",
    show_default=True,
    help="A folder for one file per manifest, or - for standard output.",
)
@click.option(
    "--format", "fmt", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True
)
def render(
    grid_ref, store, run_id, image, namespace, context, profile, nodes, gpus_per_node, out, fmt
) -> None:
    """Write a grid's Kubernetes manifests (strictly validated); send nothing."""
    from kbench.runs import check_run_id, new_run_id
    from kbench.spec import load_grid

    grid = load_grid(grid_ref)
    run_id = check_run_id(run_id) if run_id else new_run_id(grid.name)
    settings = _cluster_settings(grid, profile, image, namespace, context, nodes, gpus_per_node)
    manifests = _rendered(run_id, grid.pairs, settings, store)
    if out == "-":
        _print_manifests(manifests, fmt)
        return
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    for m in manifests:
        text = json.dumps(m, indent=2) + "\n" if fmt == "json" else _yaml(m)
        (folder / f"{m['metadata']['name']}.{m['kind'].lower()}.{fmt}").write_text(text)
    click.echo(f"wrote {len(manifests)} manifests to {folder}")


FINISHED = ("succeeded", "failed", "cancelled")


@cli.command()
@store_option
@run_option
@click.option(
    "-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@click.option("-w", "--watch", is_flag=True, help="Refresh until every pair has finished.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Seconds between refreshes with --watch.",
)
@namespace_option
@context_option
def status(store, run_id, output, watch, interval, namespace, context) -> None:
    """Where every pair of a run stands: state, epoch, latest headline metric."""
    import time

    from kbench.runs import load_run, pair_statuses
    from kbench.storage import open_store

    the_store = open_store(store)
    run = load_run(the_store, run_id)
    backend = _backend_of(run, namespace, context)
    while True:
        # The same few requests every refresh: list calls (cluster) and the pairs' records.
        rows = pair_statuses(the_store, run, backend.states(the_store, run))
        if output == "json":
            _print({"run_id": run["run_id"], "pairs": [r.to_dict() for r in rows]}, "json")
        else:
            _status_table(run, rows, clear=watch)
        if not watch or all(r.state in FINISHED for r in rows):
            return
        try:
            time.sleep(interval)
        except KeyboardInterrupt:
            return


def _status_table(run: dict[str, Any], rows: list, clear: bool) -> None:
    if clear and sys.stdout.isatty():
        click.clear()
    click.echo(
        f"run {run['run_id']} (grid {run['grid']}, {run['backend']}, created {run['created']})"
    )
    table = [["PAIR", "STATE", "EPOCH", "METRIC", "VALUE", "IMG/S", "ETA", "DETAIL"]]
    for r in rows:
        epoch = f"{'-' if r.epoch is None else r.epoch}/{r.epochs}"
        table.append(
            [
                r.pair,
                r.state,
                epoch,
                r.headline_metric,
                _pct(r.headline),
                _num(r.images_per_s),
                _duration(r.eta_s),
                r.detail,
            ]
        )
    _table(table)


@cli.group()
def data() -> None:
    """Datasets in the store, for pods to read."""


@data.command("list")
@store_option
def data_list(store) -> None:
    """List the datasets staged in the store."""
    from kbench.storage import open_store, read_json

    the_store = open_store(store)
    table = [["NAME", "SPLITS", "FRAC", "SOURCE", "CREATED"]]
    for key in the_store.list("datasets"):
        if key.count("/") == 2 and key.endswith("/manifest.json"):
            manifest = read_json(the_store, key)
            first = manifest["train_split"]
            order = [first, *sorted(set(manifest["splits"]) - {first})]
            splits = ", ".join(f"{s} {manifest['splits'][s]['samples']}" for s in order)
            row = [manifest["name"], splits, f"{manifest['frac']:g}"]
            table.append([*row, manifest["source"], manifest["created"]])
    _table(table)


@data.command("stage")
@click.argument("name")
@store_option
@click.option(
    "--root",
    type=click.Path(file_okay=False),
    help="The local copy, in torchvision's layout [default: $KBENCH_DATA_ROOT or ./data]; "
    "for imagefolder the tree itself.",
)
@click.option(
    "--frac",
    type=click.FloatRange(min=0, min_open=True, max=1),
    default=1.0,
    show_default=True,
    help="Stage this fraction of each split (smoke runs).",
)
@click.option("--shard-samples", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option(
    "--download",
    is_flag=True,
    help="Fetch the dataset from its original host into --root first (torchvision, WILDS).",
)
def stage(name, store, root, frac, shard_samples, download) -> None:
    """Write every split of a dataset (from its local copy) as tar shards + manifest to the
    store, with a progress bar.

    Re-running uploads only shards not already there with the same checksum. An imagefolder
    is staged from --root; runs whose `data` is that folder then read the staged copy."""
    import importlib.util
    import os
    import sys

    from kbench.errors import ConfigError
    from kbench.registry import dataset_info
    from kbench.storage import open_store

    info = dataset_info(name)
    if name == "synthetic":
        raise ConfigError("synthetic is drawn on the fly from a seed: there is nothing to stage")
    if name == "imagefolder" and not root:
        raise ConfigError("imagefolder: give the tree to stage with --root DIR")
    if importlib.util.find_spec("torch") is None:
        raise ConfigError("staging reads datasets with their loaders: pip install 'kbench[train]'")
    from kbench.jobs import staging
    from kbench.jobs.datasets import DATA_ROOT_ENV, class_names, data_root, raw_splits
    from kbench.records import dataset_key, staged_name
    from kbench.registry import prompts
    from kbench.spec import TrainConfig, local_data_path

    if root and name != "imagefolder":
        os.environ[DATA_ROOT_ENV] = root
    data = local_data_path(root) if name == "imagefolder" else None
    # Only the dataset part of a config matters to the loaders.
    config = TrainConfig(
        dataset=name,
        model="resnet-tiny",
        epochs=1,
        batch_size=1,
        optimizer="sgd",
        lr=0.1,
        data=data,
    )
    splits = raw_splits(config, download=download)
    where = data or os.path.abspath(data_root())
    staged = staging.stage(
        open_store(store),
        staged_name(name, data),
        splits,
        classes=class_names(config, splits),
        templates=prompts(name)[1],
        train_split=info.train_split,
        groups=info.groups,
        source=f"{info.source} from {where}",
        frac=frac,
        shard_samples=shard_samples,
        progress=sys.stderr.isatty(),
    )
    manifest = staged["manifest"]
    for split, entry in manifest["splits"].items():
        fresh = staged["uploaded"][split]
        click.echo(
            f"{split}: {entry['samples']} samples in {len(entry['shards'])} shard(s), "
            f"{fresh} uploaded, {len(entry['shards']) - fresh} already there"
        )
    for_runs = f"; runs with data: {data} read it" if data else ""
    click.echo(f"staged {name} under {store}/{dataset_key(manifest['name'], '')}{for_runs}")


@cli.command()
@click.option("--grid", "grid_ref", help="Take cluster settings from this grid's cluster section.")
@store_option
@cluster_options
def doctor(grid_ref, store, image, namespace, context, profile, nodes, gpus_per_node) -> None:
    """Check the cluster, permissions, store and image before submitting."""
    from kbench.errors import BackendError
    from kbench.k8s.doctor import run_checks
    from kbench.spec import load_grid

    grid = load_grid(grid_ref) if grid_ref else None
    settings = _cluster_settings(grid, profile, image, namespace, context, nodes, gpus_per_node)
    checks = run_checks(settings, store, grid=grid)
    width = max(len(c.name) for c in checks)
    for c in checks:
        mark = {True: "ok  ", False: "FAIL", None: "??  "}[c.ok]
        click.echo(f"{mark} {c.name.ljust(width)}  {c.detail}")
        if c.fix:
            click.echo(f"     {' ' * width}  fix: {c.fix}")
    failed = [c.name for c in checks if c.ok is False]
    if failed:
        raise BackendError(f"{len(failed)} check(s) failed: {', '.join(failed)}")


@cli.command()
@namespace_option
@click.option("--user", "users", multiple=True, help="Who may run kbench here (repeatable).")
@click.option("--group", "groups", multiple=True, help="A group that may run kbench (repeatable).")
@click.option(
    "--s3-secret",
    default="kbench-s3",
    show_default=True,
    help="Name of the S3 credentials Secret template ('' for none: IRSA).",
)
@click.option("--queue", help="Also print an example Kueue ClusterQueue and this LocalQueue.")
@click.option(
    "-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True
)
def setup(namespace, users, groups, s3_secret, queue, output) -> None:
    """Print the cluster objects kbench needs, for `kubectl apply -f -`."""
    from kbench.k8s.settings import ClusterSettings
    from kbench.k8s.setup import setup_manifests

    settings = ClusterSettings(
        namespace=namespace or "kbench", s3_secret=s3_secret or None, queue=queue
    )
    manifests = setup_manifests(settings, list(users), list(groups), kueue=bool(queue))
    _print_manifests(manifests, output)


@cli.command()
@store_option
@run_option
@click.option(
    "-o",
    "--output-dir",
    type=click.Path(file_okay=False),
    help="Folder for the report (default: kbench-reports/<run>).",
)
@namespace_option
@context_option
def collect(store, run_id, output_dir, namespace, context) -> None:
    """Build the comparison report of a run: HTML, Markdown, CSV and JSON."""
    from kbench.report import gather, write_report
    from kbench.runs import load_run
    from kbench.storage import open_store

    the_store = open_store(store)
    run = load_run(the_store, run_id)
    states = _backend_of(run, namespace, context).states(the_store, run)
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
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until the pair stops.")
@click.option(
    "--node",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="kubernetes: which pod (completion index) of a multi-node pair.",
)
@namespace_option
@context_option
def logs(pair, store, run_id, follow, node, namespace, context) -> None:
    """Print a pair's training log."""
    from kbench.runs import load_run
    from kbench.storage import open_store

    the_store = open_store(store)
    run = _with_pairs(load_run(the_store, run_id), [pair])
    text = _backend_of(run, namespace, context).logs(the_store, run, pair, follow=follow, node=node)
    for chunk in [text] if isinstance(text, str) else text:
        click.echo(chunk, nl=False)


@cli.command()
@click.argument("pairs", nargs=-1)
@store_option
@run_option
@namespace_option
@context_option
def cancel(pairs, store, run_id, namespace, context) -> None:
    """Stop the given pairs of a run (all of its pairs when none is named)."""
    from kbench.runs import load_run
    from kbench.storage import open_store

    the_store = open_store(store)
    run = _with_pairs(load_run(the_store, run_id), list(pairs))
    backend = _backend_of(run, namespace, context)
    stopped = backend.cancel(the_store, run, list(pairs) or run["pairs"])
    click.echo(
        f"run {run['run_id']}: stopped {', '.join(stopped) if stopped else 'nothing running'}"
    )


# --------------------------------------------------------------------------------- helpers


def _cluster_settings(grid, profile, image, namespace, context, nodes, gpus_per_node):
    from kbench.k8s.settings import load_profile, resolve

    flags = {
        "image": image,
        "namespace": namespace,
        "context": context,
        "nodes": nodes,
        "gpus_per_node": gpus_per_node,
    }
    given = {k: v for k, v in flags.items() if v is not None}
    return resolve(
        [
            (grid.document.get("cluster") if grid else None, f"{grid and grid.source}: cluster"),
            (load_profile(profile), str(profile)),
            (given, "command line"),
        ]
    )


def _rendered(run_id, pairs, settings, store):
    """Rendered and strictly validated manifests; one invalid manifest stops everything."""
    from kbench.errors import ConfigError
    from kbench.k8s.render import render_run, validate
    from kbench.storage import open_store

    manifests = render_run(run_id, pairs, settings, open_store(store).uri)
    problems = validate(manifests, settings.kubernetes_version)
    if problems:
        version, first = settings.kubernetes_version, problems[0]
        raise ConfigError(
            f"{len(problems)} manifest(s) fail the Kubernetes {version} schema; first: {first}"
        )
    return manifests


def _backend_of(run: dict[str, Any], namespace: str | None = None, context: str | None = None):
    """The backend that ran a run, pointed where the run went (flags may redirect it)."""
    from kbench.backends import get_backend

    if run["backend"] != "kubernetes":
        return get_backend(run["backend"])
    from kbench.k8s.settings import ClusterSettings

    recorded = run.get("cluster", {})
    settings = ClusterSettings(
        namespace=namespace or recorded.get("namespace", "default"),
        context=context or recorded.get("context"),
    )
    return get_backend("kubernetes", settings=settings)


def _with_pairs(run: dict[str, Any], pairs: list[str]) -> dict[str, Any]:
    from kbench.errors import ConfigError

    for pair in pairs:
        if pair not in run["pairs"]:
            known = ", ".join(run["pairs"])
            raise ConfigError(f"run {run['run_id']} has no pair {pair!r}; pairs: {known}")
    return run


def _print_manifests(manifests: list[dict], output: str) -> None:
    if output == "json":
        click.echo(json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}, indent=2))
    else:
        from kbench.k8s.render import to_yaml

        click.echo(to_yaml(manifests), nl=False)


def _print(value: Any, output: str) -> None:
    click.echo(json.dumps(value, indent=2) + "\n" if output == "json" else _yaml(value), nl=False)


def _yaml(value: Any) -> str:
    import yaml

    return yaml.safe_dump(value, sort_keys=False)


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
