"""Every dataset and model kbench knows, by name, without importing torch.

The training side (`kbench.jobs.datasets`, `kbench.jobs.models`) maps the same names to the code
that builds them; a test checks both registries hold the same names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

from kbench.errors import ConfigError

# Headline metrics, as keys of an epoch record.
TOP1 = "top1"
MEAN_PER_CLASS = "mean_per_class"
MACRO_F1 = "macro_f1"
WORST_REGION = "worst_region"


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    # The literature's metric for this dataset (the study's own table is top-1 throughout).
    headline: str
    source: str  # where the real loader comes from
    train_split: str = "train"
    # Splits a run may evaluate on; the first is the one the study reports.
    eval_splits: tuple[str, ...] = ("test",)
    # Groups of the worst-group headline (FMoW's regions), in the order records list them.
    groups: tuple[str, ...] = ()
    # Images in the full training split (the datasets' published sizes); None: not known
    # before the data is read (a user's folder). A batch larger than this is refused at submit.
    train_size: int | None = None


@dataclass(frozen=True)
class ModelInfo:
    name: str
    family: str  # "clip" or "resnet": decides the head, the transforms and epoch 0
    image_size: int
    description: str
    augment: str  # the training augmentation of its recipe (AUGMENTATIONS)


# Training augmentations by name (kbench.jobs.datasets builds them); a config's `augment`.
AUGMENTATIONS = {
    "mild-crop": "random resized crop, scale 0.9-1, bicubic, no flip (WiSE-FT's for CLIP)",
    "crop-flip": "random resized crop, scale 0.08-1, and a horizontal flip (torchvision's)",
    "none": "the eval preprocessing (resize, centre crop), the weights' own: no augmentation",
}

WILDS_EVAL_SPLITS = ("test", "val", "id_test", "id_val")

DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in [
        DatasetInfo("cifar10", 10, TOP1, "torchvision CIFAR10", train_size=50_000),
        DatasetInfo("cifar100", 100, TOP1, "torchvision CIFAR100", train_size=50_000),
        DatasetInfo(
            "dtd",
            47,
            TOP1,
            "torchvision DTD (partition 1)",
            eval_splits=("test", "val"),
            train_size=1_880,
        ),
        DatasetInfo(
            "fgvc-aircraft",
            100,
            MEAN_PER_CLASS,
            "torchvision FGVCAircraft (variant)",
            train_split="trainval",
            train_size=6_667,
        ),
        DatasetInfo(
            "flowers102",
            102,
            MEAN_PER_CLASS,
            "torchvision Flowers102",
            eval_splits=("test", "val"),
            train_size=1_020,
        ),
        DatasetInfo("food101", 101, TOP1, "torchvision Food101", train_size=75_750),
        DatasetInfo("stl10", 10, TOP1, "torchvision STL10", train_size=5_000),
        # WILDS: "test" and "val" are out-of-distribution (later years, unseen camera traps),
        # "id_test" and "id_val" in-distribution; the study reports the OOD test split.
        DatasetInfo(
            "fmow",
            62,
            WORST_REGION,
            "wilds fmow (official split)",
            eval_splits=WILDS_EVAL_SPLITS,
            # WILDS' regions; worst-region accuracy leaves out the region "Other", as WILDS does.
            groups=("Africa", "Americas", "Asia", "Europe", "Oceania"),
            train_size=76_863,
        ),
        DatasetInfo(
            "iwildcam",
            182,
            MACRO_F1,
            "wilds iwildcam",
            eval_splits=WILDS_EVAL_SPLITS,
            train_size=129_809,
        ),
        DatasetInfo(
            "synthetic",
            10,
            TOP1,
            "coloured shapes drawn from a seed (smoke runs, tests)",
            train_size=5_000,
        ),
        # Your own images: `data` holds train/<class>/<image> and val/ (or test/) alike.
        DatasetInfo(
            "imagefolder",
            0,
            TOP1,
            "a class/image folder tree, local or under s3://",
            eval_splits=("val", "test"),
        ),
    ]
}

MODELS: dict[str, ModelInfo] = {
    m.name: m
    for m in [
        ModelInfo(
            "clip-vit-b32",
            "clip",
            224,
            "open_clip ViT-B-32-quickgelu, OpenAI weights",
            augment="mild-crop",
        ),
        ModelInfo(
            "resnet50",
            "resnet",
            224,
            "torchvision ResNet50, IMAGENET1K_V2 weights",
            augment="crop-flip",
        ),
        ModelInfo(
            "clip-tiny",
            "clip",
            32,
            "a 2-layer open_clip CLIP, random init (smoke, tests)",
            augment="mild-crop",
        ),
        ModelInfo(
            "resnet-tiny",
            "resnet",
            32,
            "a 4-block torchvision ResNet, random init",
            augment="crop-flip",
        ),
    ]
}

# The synthetic dataset: a coloured shape on a noisy background; the class is colour + shape.
SYNTHETIC_COLOURS = ["red", "green", "blue", "yellow", "purple"]
SYNTHETIC_SHAPES = ["circle", "square"]
SYNTHETIC_TEMPLATES = ["a photo of a {}.", "a drawing of a {}.", "a {} on a grey background."]
IMAGEFOLDER_TEMPLATES = ["a photo of a {}.", "a photo of the {}.", "an image of a {}."]
# Prompt sets a grid names in `templates` instead of listing prompts.
PROMPT_SETS = {"simple": ["a photo of a {}."]}  # the reference study's caption


def dataset_info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None


def model_info(name: str) -> ModelInfo:
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; known: {', '.join(MODELS)}") from None


@cache
def _prompt_data() -> dict:
    text = resources.files("kbench").joinpath("data/clip_prompts.json").read_text("utf-8")
    return json.loads(text)["datasets"]


def readable(name: str) -> str:
    """A class name as it reads in a sentence."""
    return name.replace("_", " ")


def prompts(dataset: str) -> tuple[list[str], list[str]]:
    """Class names (in label order) and prompt templates of a dataset, spelled as the
    evaluator they come from spelled them: FMoW's keep WiSE-FT's underscores. An imagefolder's
    class names come from its folders, when it is loaded."""
    if dataset == "imagefolder":
        return [], list(IMAGEFOLDER_TEMPLATES)
    if dataset == "synthetic":
        classes = [f"{c} {s}" for c in SYNTHETIC_COLOURS for s in SYNTHETIC_SHAPES]
        return classes, list(SYNTHETIC_TEMPLATES)
    entry = _prompt_data()[dataset]
    return list(entry["classes"]), list(entry["templates"])


def fill_template(template: str, classname: str) -> str:
    """One prompt. Plain replace, not str.format: class names may hold braces. As WiSE-FT
    does, only a template with an article reads the name as a sentence (underscores to
    spaces); every other one uses the name as spelled."""
    if "{article}" in template:
        classname = readable(classname)
        article = "an" if classname[:1].lower() in "aeiou" else "a"
        template = template.replace("{article}", article)
    return template.replace("{}", classname)
