"""`kbench models stage`, on the user's machine: a model's weights file (its published weights,
downloaded here by its library's own code, or a file of the user's) written to the store once,
with its checksum, so pods load it from there (through the node's cache) with the internet off.
Without it, a pod would download CLIP's ~600 MB from the Hugging Face hub, or ResNet50's from
PyTorch's host, every time it starts. Needs the training stack (open_clip, torchvision)."""

from __future__ import annotations

import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kbench import model_names, records
from kbench.errors import ConfigError
from kbench.registry import CLIP_ARCH, model_info
from kbench.staged import file_sha256
from kbench.storage import Store, write_json

# Where `kbench models stage NAME` downloads a built-in model's published weights from.
SOURCES = {
    "clip-vit-b32": "open_clip ViT-B-32-quickgelu, pretrained 'openai' (Hugging Face hub)",
    "resnet50": "torchvision ResNet50_Weights.IMAGENET1K_V2 (download.pytorch.org)",
}


def published_source(model: str) -> str | None:
    """Where a model's published weights come from; None: it has none (a file only)."""
    info = model_info(model)
    return SOURCES.get(model, info.description) if info.weights else None


def stage(store: Store, model: str, file: Path | None = None) -> dict[str, Any]:
    """Write a model's weights file (`file`, else its published weights, downloaded here)
    and then its manifest (name, sha256, bytes) to the store; returns the manifest."""
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
