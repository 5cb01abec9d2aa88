"""`kbench data`: datasets staged in the store, for pods to read."""

from __future__ import annotations

import sys

import click

from .options import store_option
from .output import table


@click.group()
def data() -> None:
    """Datasets in the store, for pods to read."""


@data.command("list")
@store_option
def data_list(store) -> None:
    """List the datasets staged in the store."""
    from kbench.staged import split_sizes, staged_datasets

    rows = [["NAME", "SPLITS", "FRAC", "SHORT SIDE", "SOURCE", "CREATED"]]
    for manifest in staged_datasets(store):
        splits = ", ".join(f"{split} {samples}" for split, samples in split_sizes(manifest))
        short_side = str(manifest.get("max_short_side") or "original")
        row = [manifest["name"], splits, f"{manifest['frac']:g}", short_side]
        rows.append([*row, manifest["source"], manifest["created"]])
    table(rows)


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
    help="Stage this fraction of each split (smoke runs).",
)
@click.option(
    "--max-short-side",
    type=click.IntRange(min=32),
    help="Store images whose shorter side is longer at this side (e.g. 448, twice the 224 "
    "crop): far less to decode for large JPEGs (iWildCam, FGVCAircraft); small random crops "
    "then see fewer pixels. Off: the original files.",
)
@click.option("--shard-samples", type=click.IntRange(min=1), default=1000)
@click.option(
    "--download",
    is_flag=True,
    help="Fetch the dataset from its original host into --root first (torchvision, WILDS).",
)
def stage(name, store, root, frac, max_short_side, shard_samples, download) -> None:
    """Write every split of a dataset (from its local copy) as tar shards + manifest to the
    store, with a progress bar.

    Re-running uploads only shards not already there with the same checksum. An imagefolder
    is staged from --root; runs whose `data` is that folder then read the staged copy."""
    import importlib.util

    from kbench.errors import ConfigError
    from kbench.records import dataset_key
    from kbench.registry import dataset_info

    dataset_info(name)  # an unknown name is refused before the training stack is loaded
    if importlib.util.find_spec("torch") is None:
        raise ConfigError("staging reads datasets with their loaders: pip install 'kbench[train]'")
    from kbench.staging.datasets import stage_dataset

    staged = stage_dataset(
        store,
        name,
        root=root,
        frac=frac,
        max_short_side=max_short_side,
        shard_samples=shard_samples,
        download=download,
        progress=sys.stderr.isatty(),
    )
    manifest = staged["manifest"]
    for split, entry in manifest["splits"].items():
        fresh = staged["uploaded"][split]
        click.echo(
            f"{split}: {entry['samples']} samples in {len(entry['shards'])} shard(s), "
            f"{fresh} uploaded, {len(entry['shards']) - fresh} already there"
        )
    data = staged["data"]
    for_runs = f"; runs with data: {data} read it" if data else ""
    click.echo(f"staged {name} under {store.uri}/{dataset_key(manifest['name'], '')}{for_runs}")
