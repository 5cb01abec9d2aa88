"""Dataset registry of the training side: name -> code that builds the train and eval splits,
plus the image transforms of each model family (DESIGN section 5)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset, Subset
from torchvision.transforms import InterpolationMode, v2

from kbench.errors import ConfigError
from kbench.jobs import imagefolder, staging
from kbench.jobs.synthetic import SyntheticShapes
from kbench.registry import ModelInfo, prompts, readable
from kbench.spec import TrainConfig
from kbench.storage import Store

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI's, as open_clip.constants
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DATA_ROOT_ENV = "KBENCH_DATA_ROOT"


@dataclass
class Splits:
    train: Dataset
    eval: Dataset
    eval_split: str  # which split the eval numbers come from, for the records
    classes: list[str]  # readable names, in label order
    templates: list[str]


def build_transforms(info: ModelInfo) -> tuple[Callable, Callable]:
    """(train, eval) transforms of a model family; PIL image in, normalised tensor out."""
    size = info.image_size
    to_tensor = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    if info.family == "clip":
        # WiSE-FT: a mild random crop, no flip; bicubic like CLIP's own preprocessing.
        bicubic = InterpolationMode.BICUBIC
        normalize = v2.Normalize(CLIP_MEAN, CLIP_STD)
        train = [v2.RandomResizedCrop(size, scale=(0.9, 1.0), interpolation=bicubic)]
        evaluation = [v2.Resize(size, interpolation=bicubic), v2.CenterCrop(size)]
    else:
        # torchvision's IMAGENET1K_V2 preprocessing: resize 232, centre crop 224 (scaled for
        # small inputs); training gets the usual random crop and flip.
        normalize = v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)
        train = [v2.RandomResizedCrop(size), v2.RandomHorizontalFlip()]
        evaluation = [v2.Resize(round(size * 232 / 224)), v2.CenterCrop(size)]
    first = [v2.RGB()]
    return (
        v2.Compose(first + train + to_tensor + [normalize]),
        v2.Compose(first + evaluation + to_tensor + [normalize]),
    )


def build_splits(config: TrainConfig, info: ModelInfo, store: Store | None = None) -> Splits:
    """The dataset's splits with the model's transforms: from the store's staged shards when
    the dataset was staged there (`kbench data stage`), else from its loader."""
    train_tf, eval_tf = build_transforms(info)
    classes, templates = prompts(config.dataset)
    manifest = staging.staged_manifest(store, config.dataset) if store is not None else None
    if manifest is not None:
        train, evaluation, eval_split = staging.load(store, manifest, train_tf, eval_tf)
    else:
        train, evaluation, eval_split = raw_splits(config, info, train_tf, eval_tf)
    if config.dataset == "imagefolder":  # its classes are its folders
        classes = [readable(name) for name in train.classes]
    return Splits(
        train=_limit(train, config.train_limit, config.seed),
        eval=_limit(evaluation, config.eval_limit, config.seed),
        eval_split=eval_split,
        classes=classes,
        templates=config.templates or templates,
    )


def raw_splits(
    config: TrainConfig, info: ModelInfo | None, train_tf=None, eval_tf=None, download=False
):
    """(train, eval, eval split name) from the dataset's own loader; untransformed (PIL
    images) without transforms, as staging reads them."""
    build = BUILDERS.get(config.dataset)
    if build is None:
        raise ConfigError(
            f"dataset {config.dataset!r} has no loader in this version of kbench yet "
            f"(available: {', '.join(BUILDERS)})"
        )
    return build(config, info, train_tf, eval_tf, download=download)


def _limit(dataset: Dataset, limit: int | None, seed: int) -> Dataset:
    """A fixed random subset of `limit` samples (the same in every process and restart)."""
    if limit is None or limit >= len(dataset):
        return dataset
    generator = torch.Generator().manual_seed(seed)
    indices = torch.randperm(len(dataset), generator=generator)[:limit].sort().values
    return Subset(dataset, indices.tolist())


def _synthetic(config, info, train_tf, eval_tf, download=False):
    size, seed = info.image_size, config.seed
    return (
        SyntheticShapes("train", size, seed, train_tf),
        SyntheticShapes("test", size, seed, eval_tf),
        "test",
    )


def _imagefolder(config, info, train_tf, eval_tf, download=False):
    return imagefolder.load(config.data, train_tf, eval_tf)


def _torchvision(cls, train_kwargs: dict, eval_kwargs: dict, eval_split: str):
    """A torchvision dataset already on local disk, in torchvision's own layout under
    $KBENCH_DATA_ROOT (default ./data): cifar-10-batches-py/, dtd/dtd/, food-101/, ..."""

    def build(config, info, train_tf, eval_tf, download=False):
        root = os.environ.get(DATA_ROOT_ENV, "data")
        try:
            return (
                cls(root, transform=train_tf, download=download, **train_kwargs),
                cls(root, transform=eval_tf, download=download, **eval_kwargs),
                eval_split,
            )
        except RuntimeError as e:  # torchvision: "Dataset not found or corrupted ..."
            raise ConfigError(
                f"no local copy of {config.dataset} under {os.path.abspath(root)} ({e}): set "
                f"{DATA_ROOT_ENV} to the folder that holds it in torchvision's layout, or stage "
                "it with --download where its host is reachable"
            ) from None

    return build


def _torchvision_builders() -> dict:
    from torchvision import datasets as tv

    # Eval splits are those the reference study reports (the official test split where one
    # exists).
    return {
        "cifar10": _torchvision(tv.CIFAR10, {"train": True}, {"train": False}, "test"),
        "cifar100": _torchvision(tv.CIFAR100, {"train": True}, {"train": False}, "test"),
        "dtd": _torchvision(
            tv.DTD, {"split": "train", "partition": 1}, {"split": "test", "partition": 1}, "test"
        ),
        "fgvc-aircraft": _torchvision(
            tv.FGVCAircraft,
            {"split": "trainval", "annotation_level": "variant"},
            {"split": "test", "annotation_level": "variant"},
            "test",
        ),
        "flowers102": _torchvision(tv.Flowers102, {"split": "train"}, {"split": "test"}, "test"),
        "food101": _torchvision(tv.Food101, {"split": "train"}, {"split": "test"}, "test"),
        "stl10": _torchvision(tv.STL10, {"split": "train"}, {"split": "test"}, "test"),
    }


# fmow and iwildcam need the wilds loaders, which arrive with dataset staging.
BUILDERS: dict[str, Callable] = {
    "synthetic": _synthetic,
    "imagefolder": _imagefolder,
    **_torchvision_builders(),
}
