"""Dataset registry of the training side: name -> code that builds the train and eval splits,
plus the image transforms of each model family (DESIGN section 5)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset, Subset
from torchvision.datasets import ImageFolder
from torchvision.transforms import InterpolationMode, v2

from kbench.errors import ConfigError, unreadable
from kbench.jobs import imagefolder, shards, wilds_datasets
from kbench.jobs.synthetic import SyntheticShapes
from kbench.jobs.wilds_datasets import FileList
from kbench.records import StagedCopy
from kbench.registry import ModelInfo, dataset_info, prompts, readable
from kbench.spec import HOLDOUT, TrainConfig
from kbench.splits import choose_splits, holdout, recorded_holdout
from kbench.storage import Store

DATA_ROOT_ENV = "KBENCH_DATA_ROOT"
LIMIT_SEED = 0  # train_limit's and eval_limit's subsets: fixed, whatever the run's seed


@dataclass(frozen=True)
class Source:
    """What a dataset's loader needs to find its splits, and nothing more."""

    dataset: str
    data: str | None = None  # imagefolder: its tree, a local folder or s3://bucket/prefix
    root: str | None = None  # the nine: the folder of their local copies (default data_root())
    image_size: int = 32  # synthetic: the size it is drawn at
    seed: int = 0  # synthetic: the seed it is drawn from (not the run's)

    @classmethod
    def of(cls, config: TrainConfig, info: ModelInfo | None = None) -> Source:
        size = info.image_size if info else cls.image_size
        # The data does not depend on the run's seed: a grid's `seeds` vary the training
        # (initialisation, order, augmentation), and every seed is scored on the same samples.
        return cls(config.dataset, data=config.data, image_size=size)

    @property
    def local_root(self) -> str:
        return self.root or data_root()


@dataclass
class Splits:
    train: Dataset
    eval: Dataset  # the test split: samples (image, label) or, with groups, (image, label, group)
    eval_split: str  # which split the eval numbers come from, for the records
    classes: list[str]  # in label order, as the prompts spell them
    templates: list[str]
    groups: tuple[str, ...]  # the worst-group metric's groups (FMoW's regions), or none
    staging: StagedCopy | None = None  # how the staged copy was prepared
    # The validation split (select_on: val), and its name: a published split's, or "holdout"
    val: Dataset | None = None
    val_split: str | None = None


# What decoding a broken image raises: PIL's OSError (truncated, unidentified), SyntaxError (some
# broken headers), ValueError (libjpeg-turbo's, through simplejpeg), DecompressionBombError.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class Transformed(Dataset):
    """(image, label[, group]) samples with a transform applied to the image."""

    def __init__(self, dataset: Dataset, transform: Callable) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return size(self.dataset)

    def __getitem__(self, index: int):
        try:
            image, *rest = self.dataset[index]
            return (self.transform(image), *rest)
        except DECODE_ERRORS as e:  # a file that does not decode: say which
            found = source_file(self.dataset, index)
            raise unreadable(str(found[0]) if found else f"sample {index}", e) from None


def build_transforms(info: ModelInfo, augment: str | None = None) -> tuple[Callable, Callable]:
    """(train, eval) transforms of a model: an image (PIL, or a uint8 tensor as the shards
    decode it) in, a uint8 3xHxW tensor out. Workers hand uint8 over, a quarter of float32's
    bytes; the trainer converts and normalises on its device (`normalization`, Placement).
    `augment` (registry.AUGMENTATIONS) picks the training augmentation; None: the model's."""
    size, interpolation = info.image_size, InterpolationMode(info.interpolation)
    # The model's own eval preprocessing (registry.ModelInfo): CLIP's bicubic resize to the
    # crop; torchvision's resize 232 (256 for most weights), crop 224; SigLIP's squash.
    resize = (info.resize, info.resize) if info.squash else info.resize
    evaluation = [v2.Resize(resize, interpolation=interpolation), v2.CenterCrop(size)]
    train = {
        # WiSE-FT: a mild random crop, no flip.
        "mild-crop": [v2.RandomResizedCrop(size, scale=(0.9, 1.0), interpolation=interpolation)],
        # torchvision's ImageNet recipe.
        "crop-flip": [
            v2.RandomResizedCrop(size, interpolation=interpolation),
            v2.RandomHorizontalFlip(),
        ],
        # The weights' own preprocessing, as the reference study trained ResNet50.
        "none": evaluation,
    }[augment or info.augment]
    # To a tensor first: crops and resizes then run on uint8 tensors (torch's kernels give
    # PIL's pixels, within 2 levels, in less CPU time: bench/input_pipeline.py). ToDtype: a
    # 16-bit PNG.
    first = [v2.ToImage(), v2.RGB()]
    last = [v2.ToDtype(torch.uint8, scale=True), v2.ToPureTensor()]
    return v2.Compose(first + train + last), v2.Compose(first + evaluation + last)


def size(dataset: Dataset) -> int:
    """Its number of samples: every dataset here has one, which torch's Dataset type does not
    declare."""
    return len(dataset)  # type: ignore[arg-type]


def normalization(info: ModelInfo) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel, of images scaled to [0, 1], that the model expects."""
    return info.mean, info.std


def build_splits(config: TrainConfig, info: ModelInfo, store: Store | None = None) -> Splits:
    """The dataset's splits with the model's transforms, in their roles (`choose_splits`): from
    the store's staged shards when the dataset was staged there (`kbench data stage`), else
    from its loader. A hold-out validation split leaves the training split here, the same
    images whichever model or seed (the manifest's, else drawn as staging draws it)."""
    train_tf, eval_tf = build_transforms(info, config.augment)
    dataset = dataset_info(config.dataset)
    manifest = shards.staged_manifest(store, config) if store is not None else None
    if store is not None and manifest is not None:
        roles = choose_splits(config, list(manifest["splits"]))
        needed = [s for s in (roles.train, roles.test, roles.val) if s not in (None, HOLDOUT)]
        loaded: Mapping[str, Dataset] = shards.load(store, manifest, needed)
        classes, templates = manifest["classes"], manifest["templates"]
        staging: StagedCopy | None = {
            "frac": manifest["frac"],
            "max_short_side": manifest.get("max_short_side"),
        }
        recorded = manifest.get("holdout")
    else:
        staging, recorded = None, None
        loaded = raw_splits(Source.of(config, info))
        roles = choose_splits(config, list(loaded))
        classes, templates = class_names(config.dataset, loaded), prompts(config.dataset)[1]
    train: Dataset = loaded[roles.train]
    val: Dataset | None = None
    if roles.val == HOLDOUT:
        where = f"{config.dataset} {roles.train}"
        held = recorded_holdout(recorded, roles.train, size(train), where)
        if held is None:
            held = holdout(labels_of(train), where, classes)
        kept = sorted(set(range(size(train))) - set(held))
        train, val = Subset(train, kept), Subset(train, held)
    elif roles.val is not None:
        val = loaded[roles.val]
    return Splits(
        train=_limit(Transformed(train, train_tf), config.train_limit),
        eval=_limit(Transformed(loaded[roles.test], eval_tf), config.eval_limit),
        eval_split=roles.test,
        classes=classes,
        templates=config.templates or templates,
        groups=dataset.groups,
        staging=staging,
        val=None if val is None else _limit(Transformed(val, eval_tf), config.eval_limit),
        val_split=roles.val,
    )


def labels_of(dataset: Dataset) -> list[int]:
    """Every sample's label in order, without reading an image where the dataset keeps its
    labels (torchvision's datasets, ImageFolder, WILDS' files, the shards, the shapes)."""
    for name in ("targets", "labels", "_labels"):
        found = getattr(dataset, name, None)
        if found is not None:
            return [int(label) for label in found]
    return [int(dataset[i][1]) for i in range(size(dataset))]


def raw_splits(source: Source, download: bool = False) -> Mapping[str, Dataset]:
    """Every split of the dataset from its own loader, untransformed (PIL images): split name
    -> dataset of (image, label[, group])."""
    return BUILDERS[source.dataset](source, download=download)


def class_names(dataset: str, splits: Mapping[str, Dataset]) -> list[str]:
    """Class names in label order: an imagefolder's folders (readable), else the prompt
    file's."""
    if dataset == "imagefolder":
        train = splits["train"]
        assert isinstance(train, ImageFolder)  # kbench.jobs.imagefolder's
        return [readable(name) for name in train.classes]
    return prompts(dataset)[0]


def _limit(dataset: Dataset, limit: int | None) -> Dataset:
    """A fixed random subset of `limit` samples: the same in every process, restart and seed
    of a grid's `seeds` (so every seed is scored on the same samples)."""
    if limit is None or limit >= size(dataset):
        return dataset
    generator = torch.Generator().manual_seed(LIMIT_SEED)
    indices = torch.randperm(size(dataset), generator=generator)[:limit].sort().values
    return Subset(dataset, indices.tolist())


def _synthetic(source: Source, download: bool = False) -> Mapping[str, Dataset]:
    size, seed = source.image_size, source.seed
    return {
        "train": SyntheticShapes("train", size, seed),
        "test": SyntheticShapes("test", size, seed),
    }


def _imagefolder(source: Source, download: bool = False) -> Mapping[str, Dataset]:
    assert source.data is not None  # TrainConfig.validate: an imagefolder has its data
    return imagefolder.load(source.data)


def _wilds(source: Source, download: bool = False) -> Mapping[str, Dataset]:
    return wilds_datasets.load(source.dataset, source.local_root, download)


def data_root() -> str:
    return os.environ.get(DATA_ROOT_ENV, "data")


def _torchvision(cls, arguments: Callable[[str], dict] = lambda split: {"split": split}):
    """A torchvision dataset already on local disk, in torchvision's own layout under
    $KBENCH_DATA_ROOT (default ./data): cifar-10-batches-py/, dtd/dtd/, food-101/, ...
    Its splits are the registry's; `arguments`: the loader's keyword arguments for a split."""

    def build(source: Source, download: bool = False) -> Mapping[str, Dataset]:
        root, dataset = source.local_root, dataset_info(source.dataset)
        splits = dict.fromkeys((*dataset.train_splits, *dataset.val_splits, *dataset.eval_splits))
        try:
            return {split: cls(root, download=download, **arguments(split)) for split in splits}
        except RuntimeError as e:  # torchvision: "Dataset not found or corrupted ..."
            raise ConfigError(
                f"no local copy of {source.dataset} under {os.path.abspath(root)} ({e}): set "
                f"{DATA_ROOT_ENV} to the folder that holds it in torchvision's layout, or stage "
                "it with --download where its host is reachable"
            ) from None

    return build


def _torchvision_builders() -> dict:
    from torchvision import datasets as tv

    def cifar(split: str) -> dict:
        return {"train": split == "train"}

    return {
        "cifar10": _torchvision(tv.CIFAR10, cifar),
        "cifar100": _torchvision(tv.CIFAR100, cifar),
        "dtd": _torchvision(tv.DTD, lambda split: {"split": split, "partition": 1}),
        "fgvc-aircraft": _torchvision(
            tv.FGVCAircraft, lambda split: {"split": split, "annotation_level": "variant"}
        ),
        "flowers102": _torchvision(tv.Flowers102),
        "food101": _torchvision(tv.Food101),
        "stl10": _torchvision(tv.STL10),
    }


# Split names are the registry's (kbench.registry: train_splits, val_splits, eval_splits); the
# splits a run uses in which role are `choose_splits`'.
BUILDERS: dict[str, Callable] = {
    "synthetic": _synthetic,
    "imagefolder": _imagefolder,
    "fmow": _wilds,
    "iwildcam": _wilds,
    **_torchvision_builders(),
}


def source_file(dataset: Dataset, index: int) -> tuple[Path, int, int | None] | None:
    """The file sample `index` is read from, with its label and group (None: no group); None
    for a dataset that holds its images in memory (CIFAR's, STL10's arrays)."""
    if isinstance(dataset, Subset):  # a training split less its hold-out, or the hold-out
        return source_file(dataset.dataset, dataset.indices[index])
    if isinstance(dataset, FileList):  # WILDS
        group = dataset.groups[index] if dataset.groups is not None else None
        return dataset.files[index], dataset.labels[index], group
    # torchvision's DTD, FGVCAircraft, Flowers102 and Food101 keep their files (privately);
    # ImageFolder keeps (path, label) samples.
    files, labels = getattr(dataset, "_image_files", None), getattr(dataset, "_labels", None)
    if files is not None and labels is not None:
        return Path(files[index]), labels[index], None
    if isinstance(dataset, ImageFolder):
        path, label = dataset.samples[index]
        return Path(path), label, None
    return None  # CIFAR, STL10: arrays in memory
