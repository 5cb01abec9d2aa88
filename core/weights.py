"""Pretrained weights in the store, as the client sees them: `kbench models stage` writes a
model's weights file once, with its checksum, and pods load it from there (through the node's
cache) with the internet off. Without it, a pod would download CLIP's ~600 MB from the Hugging
Face hub, or ResNet50's from PyTorch's host, every time it starts."""

from __future__ import annotations

import contextlib
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kbench import model_names, records
from kbench.errors import ConfigError
from kbench.registry import model_info
from kbench.spec import Pair
from kbench.staged import manifest_keys, missing_records
from kbench.storage import Store, read_json, write_json

# Where `kbench models stage NAME` downloads a built-in model's published weights from.
SOURCES = {
    "clip-vit-b32": "open_clip ViT-B-32-quickgelu, pretrained 'openai' (Hugging Face hub)",
    "resnet50": "torchvision ResNet50_Weights.IMAGENET1K_V2 (download.pytorch.org)",
}


def published_source(model: str) -> str | None:
    """Where a model's published weights come from; None: it has none (a file only)."""
    info = model_info(model)
    return SOURCES.get(model, info.description) if info.weights else None


def staged_weights(store: Store, model: str) -> dict[str, Any] | None:
    """The manifest of a model's staged weights, or None."""
    return read_json(store, records.weights_key(model), None)


def staged_models(store: Store) -> dict[str, dict[str, Any]]:
    """Every model whose weights the store holds (a manifest under its slug): its manifest."""
    found = {}
    for key in manifest_keys(store, "models"):
        manifest = read_json(store, key, None)
        model = manifest.get("model") if isinstance(manifest, dict) else None
        with contextlib.suppress(ConfigError):  # the store is shared: a name of no known form
            if isinstance(model, str) and records.weights_key(model) == key:
                found[model] = manifest
    return found


def unstaged_models(store: Store, pairs: list[Pair]) -> list[str]:
    """The pretrained models of these pairs whose weights are not in the store."""
    needed = sorted({p.config.model for p in pairs if p.config.pretrained})
    absent = set(missing_records(store, [records.weights_key(m) for m in needed]))
    return [m for m in needed if records.weights_key(m) in absent]


def require_a_start(store: Store, pairs: list[Pair]) -> None:
    """Refuse pretrained pairs of a model with no published weights and none staged: their
    pods would fail as they start."""
    nothing = sorted(
        {
            p.config.model
            for p in pairs
            if p.config.pretrained and not model_info(p.config.model).weights
        }
    )
    missing = [m for m in nothing if staged_weights(store, m) is None]
    if missing:
        raise ConfigError(
            f"{', '.join(missing)}: no published weights to start from: stage a file with "
            f"`kbench models stage NAME --from FILE --store {store.uri}`, or set pretrained: false"
        )


def require_weights(store: Store, pairs: list[Pair]) -> None:
    """Refuse pairs whose pods would have to download their pretrained weights."""
    missing = unstaged_models(store, pairs)
    if missing:
        raise ConfigError(
            f"pretrained weights not staged in {store.uri}: {', '.join(missing)}; pods load "
            f"them from the store: run `kbench models stage {' '.join(missing)} --store "
            f"{store.uri}` first (or set download_weights: true to let pods download them)"
        )


def stage(store: Store, model: str, file: Path | None = None) -> dict[str, Any]:
    """Write a model's weights file (`file`, else its published weights, downloaded here)
    and then its manifest (name, sha256, bytes) to the store; returns the manifest."""
    from kbench.jobs.node_cache import file_sha256  # the training stack: torch

    model_info(model)  # an unknown name is refused, with the close ones
    with tempfile.TemporaryDirectory() as tmp:
        if file is None:
            file, origin = download(model, Path(tmp)), published_source(model)
        else:
            if not file.is_file():
                raise ConfigError(f"--from {file}: no such file")
            origin = f"file {file.name}"
        manifest = {
            "model": model,
            "file": file.name,
            "sha256": file_sha256(file),
            "bytes": file.stat().st_size,
            "source": origin,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        store.put_file(records.weights_key(model, file.name), str(file))
    write_json(store, records.weights_key(model), manifest)  # last: the file is whole
    return manifest


def download(model: str, folder: Path) -> Path:
    """A model's published weights file, downloaded into `folder` by its library's code."""
    if published_source(model) is None:
        raise ConfigError(
            f"{model} has no published weights to download: stage a weights file of yours "
            f"with `kbench models stage {model} --from FILE`"
        )
    parsed = model_names.parse(model)  # None: a built-in name
    if model == "clip-vit-b32" or (parsed is not None and parsed.library == "open_clip"):
        from kbench.jobs.models import CLIP_ARCH

        arch, tag = (CLIP_ARCH, "openai") if parsed is None else (parsed.model, parsed.weights)
        open_clip = model_names.open_clip_module()
        config = open_clip.get_pretrained_cfg(arch, tag)
        return Path(open_clip.download_pretrained(config, cache_dir=str(folder)))
    from torch.hub import download_url_to_file
    from torchvision.models import ResNet50_Weights

    weights = model_names.torchvision_weights(parsed) if parsed else ResNet50_Weights.IMAGENET1K_V2
    path = folder / weights.url.rsplit("/", 1)[1]
    download_url_to_file(weights.url, str(path))
    return path
