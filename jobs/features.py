"""A frozen model's features of a pair's splits, computed once per (model, weights, dataset,
preprocessing, splits) and kept in the store beside the staged data, for every probe and seed
that asks again:

    features/<dataset>/<model>/<key>.npz    train_x, train_y, val_x, val_y, test_x, test_y
                                            (test_g: groups, where the dataset has them)
    features/<dataset>/<model>/<key>.json   what produced them (the key's fields) and the
                                            file's SHA-256; written last

The key is a hash of what produced them, so changed weights, preprocessing or splits are never
served the old features; a file whose checksum is not the one recorded is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from kbench.errors import StoreError
from kbench.jobs.datasets import Splits, build_splits, build_transforms, normalization
from kbench.jobs.loaders import Placement
from kbench.jobs.models import ImageClassifier
from kbench.jobs.step import autocast
from kbench.registry import ModelInfo, model_slug
from kbench.spec import TrainConfig
from kbench.storage import Store, read_json, write_json

SPLITS = ("train", "val", "test")


def feature_splits(config: TrainConfig, info: ModelInfo, store: Store) -> Splits:
    """The pair's splits, the training split too with the evaluation preprocessing (resize and
    centre crop): a probe sees each image as evaluation does, with no augmentation."""
    return build_splits(dataclasses.replace(config, augment="none"), info, store)


def produced_by(
    config: TrainConfig, info: ModelInfo, splits: Splits, weights: Path | None
) -> dict[str, Any]:
    """What the features depend on: the cache's key is a hash of it."""
    return {
        "model": config.model,
        # A staged file's name leads with its SHA-256; random weights depend on the seed.
        "weights": weights.name if weights else "library download" if config.pretrained else None,
        "seed": None if config.pretrained else config.seed,
        "preprocessing": [repr(build_transforms(info, "none")[1]), normalization(info)],
        "dataset": config.dataset,
        "data": config.data,
        "staging": splits.staging,
        "splits": [splits.eval_split, splits.val_split],
        "train_limit": config.train_limit,
        "eval_limit": config.eval_limit,
        "precision": config.precision,
    }


def cache_key(fields: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:20]


def cached_features(
    store: Store,
    config: TrainConfig,
    model: ImageClassifier,
    info: ModelInfo,
    splits: Splits,
    place: Placement,
    weights: Path | None,
    log: Any = print,
) -> dict[str, np.ndarray]:
    """The features of the pair's splits: read from the store where they are (checked), else
    computed here and written there."""
    fields = json.loads(json.dumps(produced_by(config, info, splits, weights)))  # as stored
    folder = f"features/{config.dataset}/{model_slug(config.model)}/{cache_key(fields)}"
    recorded = read_json(store, f"{folder}.json", default=None)
    if recorded is not None:
        data = store.read(f"{folder}.npz")
        if not isinstance(recorded, dict) or recorded.get("fields") != fields:
            raise StoreError(f"{folder}.json is not the record of these features")
        if hashlib.sha256(data).hexdigest() != recorded.get("sha256"):
            raise StoreError(
                f"{folder}.npz does not match its recorded SHA-256 (changed or partly "
                "written): delete it and its .json, and the next pair computes it again"
            )
        log(f"features read from the store ({folder}.npz)")
        with np.load(io.BytesIO(data)) as found:
            return dict(found)
    started = time.perf_counter()
    features = extract_all(config, model, splits, place)
    buffer = io.BytesIO()
    np.savez(buffer, **features)  # type: ignore[arg-type]  # numpy stubs: allow_pickle
    data = buffer.getvalue()
    store.write(f"{folder}.npz", data)
    write_json(
        store,
        f"{folder}.json",
        {"fields": fields, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)},
    )
    log(f"features computed in {time.perf_counter() - started:.1f}s and kept in {folder}.npz")
    return features


def extract_all(
    config: TrainConfig, model: ImageClassifier, splits: Splits, place: Placement
) -> dict[str, np.ndarray]:
    found: dict[str, np.ndarray] = {}
    for name, split in (("train", splits.train), ("val", splits.val), ("test", splits.eval)):
        if split is None:
            continue
        x, y, g = extract(config, model, split, place)
        found[f"{name}_x"], found[f"{name}_y"] = x, y
        if g is not None:
            found[f"{name}_g"] = g
    return found


@torch.inference_mode()
def extract(
    config: TrainConfig, model: ImageClassifier, split: Dataset, place: Placement
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """What the head sees of every sample, in the split's order: the encoder's output (unit
    length where the model normalises it, as CLIP's head expects), in fp32."""
    model.eval()
    loader = DataLoader(split, batch_size=2 * config.batch_size, num_workers=config.workers or 0)
    xs, ys, gs = [], [], []
    for images, labels, *groups in loader:
        images, labels = place(images, labels)
        with autocast(config, place.device):
            features = model.encoder(images)
        features = features.float()
        if model.normalize:
            features = torch.nn.functional.normalize(features, dim=-1)
        xs.append(features.cpu().numpy())
        ys.append(labels.cpu().numpy())
        if groups:
            gs.append(groups[0].numpy())
    return (
        np.concatenate(xs).astype(np.float32),
        np.concatenate(ys).astype(np.int64),
        np.concatenate(gs) if gs else None,
    )
