"""`kbench models`: pretrained weights staged in the store, for pods without internet."""

from __future__ import annotations

from pathlib import Path

import click

from .options import store_option
from .output import table


@click.group()
def models() -> None:
    """Pretrained weights in the store, for pods to load without internet."""


@models.command("list")
@store_option
def models_list(store) -> None:
    """The built-in models and every model staged in the store, with their weights."""
    from kbench.registry import MODELS
    from kbench.staged import staged_models, staged_weights
    from kbench.staging.weights import SOURCES

    rows = [["MODEL", "STAGED", "FILE", "MB", "SOURCE"]]
    staged = staged_models(store)
    for name in [*MODELS, *sorted(set(staged) - set(MODELS))]:
        manifest = staged_weights(store, name) if name in MODELS else staged[name]
        if manifest is None:
            rows.append([name, "no", "-", "-", SOURCES.get(name, "none published: --from FILE")])
        else:
            size = f"{manifest['bytes'] / 1e6:.1f}"
            rows.append([name, manifest["created"], manifest["file"], size, manifest["source"]])
    table(rows)


@models.command("stage")
@click.argument("names", nargs=-1, required=True)
@store_option
@click.option(
    "--from",
    "source",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Stage this weights file instead of downloading the published one (one model).",
)
def stage(names, store, source) -> None:
    """Download each model's published pretrained weights here, once, and write them to the
    store with their checksum; pods then load them from there, with no internet. A model is
    a built-in name or open_clip:<architecture>/<tag>, torchvision:<model>[/<weights>].

    Models without published weights (the tiny ones), or your own fine-tuned start, take a
    weights file with --from: a state dict as the model's library saves it."""
    import importlib.util

    from kbench.errors import ConfigError
    from kbench.records import weights_key
    from kbench.registry import model_info

    for name in names:
        model_info(name)  # every name checked before anything is downloaded
    if source is not None and len(names) > 1:
        raise ConfigError("--from stages one file: name one model")
    if importlib.util.find_spec("torch") is None:
        raise ConfigError("staging weights needs the training stack: pip install 'kbench[train]'")
    from kbench.staging.weights import stage as stage_weights

    for name in names:
        manifest = stage_weights(store, name, source)
        click.echo(
            f"staged {name}: {manifest['file']} ({manifest['bytes'] / 1e6:.1f} MB, sha256 "
            f"{manifest['sha256'][:12]}...) under {store.uri}/{weights_key(name, '')}"
        )
