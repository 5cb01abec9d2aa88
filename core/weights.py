"""Pretrained weights in the store, as the client sees them: `kbench models stage` writes a
model's weights file once, with its checksum, and pods load it from there (through the node's
cache) with the internet off. Without it, a pod would download CLIP's ~600 MB from the Hugging
Face hub, or ResNet50's from PyTorch's host, every time it starts."""

from __future__ import annotations

import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kbench import records
from kbench.errors import ConfigError
from kbench.registry import model_info
from kbench.spec import Pair
from kbench.staged import missing_records
from kbench.storage import Store, read_json, write_json

# Where `kbench models stage NAME` downloads each model's published weights from.
SOURCES = {
    "clip-vit-b32": "open_clip ViT-B-32-quickgelu, pretrained 'openai' (Hugging Face hub)",
    "resnet50": "torchvision ResNet50_Weights.IMAGENET1K_V2 (download.pytorch.org)",
}


def staged_weights(store: Store, model: str) -> dict[str, Any] | None:
    """The manifest of a model's staged weights, or None."""
    return read_json(store, records.weights_key(model), None)


def unstaged_models(store: Store, pairs: list[Pair]) -> list[str]:
    """The pretrained models of these pairs whose weights are not in the store."""
    needed = sorted({p.config.model for p in pairs if p.config.pretrained})
    absent = set(missing_records(store, [records.weights_key(m) for m in needed]))
    return [m for m in needed if records.weights_key(m) in absent]


def require_weights(store: Store, pairs: list[Pair]) -> None:
    """Refuse pairs whose pods would have to download their pretrained weights."""
    missing = unstaged_models(store, pairs)
    if missing:
        raise ConfigError(
            f"pretrained weights not staged in {store.uri}: {', '.join(missing)}; pods load "
            f"them from the store: run `kbench models stage {' '.join(missing)} --store "
            f"{store.uri}` first (or set download_weights: true to let pods download them)"
        )


def stage(store: Store, model: str, source: Path | None = None) -> dict[str, Any]:
    """Write a model's weights file (`source`, else its published weights, downloaded here)
    and then its manifest (name, sha256, bytes) to the store; returns the manifest."""
    from kbench.jobs.node_cache import file_sha256  # the training stack: torch

    model_info(model)  # an unknown name is refused with the known ones
    with tempfile.TemporaryDirectory() as tmp:
        if source is None:
            source, origin = download(model, Path(tmp)), SOURCES[model]
        else:
            if not source.is_file():
                raise ConfigError(f"--from {source}: no such file")
            origin = f"file {source.name}"
        manifest = {
            "model": model,
            "file": source.name,
            "sha256": file_sha256(source),
            "bytes": source.stat().st_size,
            "source": origin,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        store.put_file(records.weights_key(model, source.name), str(source))
    write_json(store, records.weights_key(model), manifest)  # last: the file is whole
    return manifest


def download(model: str, folder: Path) -> Path:
    """A model's published weights file, downloaded into `folder`."""
    if model not in SOURCES:
        raise ConfigError(
            f"{model} has no published weights to download: stage a weights file of yours "
            f"with `kbench models stage {model} --from FILE`"
        )
    if model == "clip-vit-b32":
        import open_clip

        from kbench.jobs.models import CLIP_ARCH

        config = open_clip.get_pretrained_cfg(CLIP_ARCH, "openai")
        return Path(open_clip.download_pretrained(config, cache_dir=str(folder)))
    from torch.hub import download_url_to_file
    from torchvision.models import ResNet50_Weights

    url = ResNet50_Weights.IMAGENET1K_V2.url
    path = folder / url.rsplit("/", 1)[1]
    download_url_to_file(url, str(path))
    return path
