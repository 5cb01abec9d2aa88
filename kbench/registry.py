"""Every dataset and model kbench knows, by name, without importing torch.

The training side (`kbench.jobs.datasets`, `kbench.jobs.models`) maps the same names to the code
that builds them; a test checks both registries hold the same names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Final

from kbench import model_names
from kbench.errors import ConfigError

# Headline metrics, as keys of an epoch record.
TOP1: Final = "top1"
MEAN_PER_CLASS: Final = "mean_per_class"
MACRO_F1: Final = "macro_f1"
WORST_REGION: Final = "worst_region"


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    # The literature's metric for this dataset (the study's own table is top-1 throughout).
    headline: str
    source: str  # where the real loader comes from
    # Its splits by role. The splits a run may train on, the first by default (FGVC-Aircraft's
    # trainval is train + val, as the study trained it); its published validation splits, the
    # first by default (none: kbench.splits holds part of the training split out); the splits
    # a run may be scored on (its test split), the first the one the study reports.
    train_splits: tuple[str, ...] = ("train",)
    val_splits: tuple[str, ...] = ()
    eval_splits: tuple[str, ...] = ("test",)
    # Groups of the worst-group headline (FMoW's regions), in the order records list them.
    groups: tuple[str, ...] = ()
    # Images in its smallest training split (the datasets' published sizes); None: not known
    # before the data is read (a user's folder). A batch larger than this is refused at submit.
    train_size: int | None = None


@dataclass(frozen=True)
class ModelInfo:
    name: str
    family: str  # "clip" or "resnet": decides the head, the recipe and epoch 0
    image_size: int  # the square crop the model sees
    description: str
    augment: str  # the training augmentation of its recipe (AUGMENTATIONS)
    # Its evaluation preprocessing (kbench.jobs.datasets): resize the shorter side to `resize`
    # (`squash`: the whole image to a square of it), centre-crop `image_size`, normalise.
    resize: int
    interpolation: str  # bicubic | bilinear
    mean: tuple[float, ...]
    std: tuple[float, ...]
    squash: bool = False
    weights: str | None = None  # its published pretrained weights; None: none (a file only)


CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI's, as open_clip.constants
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _clip(name: str, size: int, description: str, weights: str | None) -> ModelInfo:
    """CLIP's own preprocessing: bicubic resize and centre crop, OpenAI's statistics."""
    return ModelInfo(
        name, "clip", size, description, "mild-crop", size, "bicubic", CLIP_MEAN, CLIP_STD,
        weights=weights,
    )  # fmt: skip


def _resnet(name: str, size: int, description: str, weights: str | None) -> ModelInfo:
    """torchvision's IMAGENET1K_V2 preprocessing: resize 232, centre crop 224 (scaled for
    small inputs), bilinear."""
    return ModelInfo(
        name, "resnet", size, description, "crop-flip", round(size * 232 / 224), "bilinear",
        IMAGENET_MEAN, IMAGENET_STD, weights=weights,
    )  # fmt: skip


# Training augmentations by name (kbench.jobs.datasets builds them); a config's `augment`.
AUGMENTATIONS = {
    "mild-crop": "random resized crop, scale 0.9-1, bicubic, no flip (WiSE-FT's for CLIP)",
    "crop-flip": "random resized crop, scale 0.08-1, and a horizontal flip (torchvision's)",
    "none": "the eval preprocessing (resize, centre crop), the weights' own: no augmentation",
}

# WILDS: out-of-distribution test and validation splits (later years, unseen camera traps), and
# in-distribution ones; the study reports the OOD test split.
WILDS_VAL_SPLITS = ("val", "id_val")
WILDS_EVAL_SPLITS = ("test", "id_test")

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
            val_splits=("val",),
            train_size=1_880,
        ),
        DatasetInfo(
            "fgvc-aircraft",
            100,
            MEAN_PER_CLASS,
            "torchvision FGVCAircraft (variant)",
            train_splits=("train", "trainval"),
            val_splits=("val",),
            train_size=3_334,
        ),
        DatasetInfo(
            "flowers102",
            102,
            MEAN_PER_CLASS,
            "torchvision Flowers102",
            val_splits=("val",),
            train_size=1_020,
        ),
        DatasetInfo("food101", 101, TOP1, "torchvision Food101", train_size=75_750),
        DatasetInfo("stl10", 10, TOP1, "torchvision STL10", train_size=5_000),
        DatasetInfo(
            "fmow",
            62,
            WORST_REGION,
            "wilds fmow (official split)",
            val_splits=WILDS_VAL_SPLITS,
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
            val_splits=WILDS_VAL_SPLITS,
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
        # Your own images: `data` holds train/<class>/<image> and test/ or val/ alike. With both,
        # val/ is the validation split and test/ the test split; with one, it is the test split
        # (kbench.splits.choose_splits).
        DatasetInfo(
            "imagefolder",
            0,
            TOP1,
            "a class/image folder tree, local or under s3://",
            val_splits=("val",),
            eval_splits=("test", "val"),
        ),
    ]
}

# open_clip's architecture for OpenAI's ViT-B/32 weights: they were trained with QuickGELU, and
# plain ViT-B-32 with them silently uses the wrong activation.
CLIP_ARCH = "ViT-B-32-quickgelu"

MODELS: dict[str, ModelInfo] = {
    m.name: m
    for m in [
        _clip("clip-vit-b32", 224, "open_clip ViT-B-32-quickgelu, OpenAI weights", "openai"),
        _resnet("resnet50", 224, "torchvision ResNet50, IMAGENET1K_V2 weights", "IMAGENET1K_V2"),
        _clip("clip-tiny", 32, "a 2-layer open_clip CLIP, random init (smoke, tests)", None),
        _resnet("resnet-tiny", 32, "a 4-block torchvision ResNet, random init", None),
    ]
}
# Any other model, by its library's name: open_clip:<architecture>[/<tag>],
# torchvision:<model>[/<weights>] (kbench.model_names).
MODEL_NAME_FORMS = " or ".join(model_names.FORMS.values())

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
    """A model by name: a built-in one, or one its library resolves (which imports it)."""
    if name in MODELS:
        return MODELS[name]
    return _library_model(name)


@cache
def _library_model(name: str) -> ModelInfo:
    parsed = _library_name(name)
    found = model_names.resolve(parsed)
    recipe = model_names.FAMILY_RECIPES[parsed.family]
    return ModelInfo(
        name=name,
        family=parsed.family,
        image_size=found.image_size,
        description=found.description,
        augment=MODELS[recipe].augment,
        resize=found.resize,
        interpolation=found.interpolation,
        mean=found.mean,
        std=found.std,
        squash=found.squash,
        weights=found.weights,
    )


def _library_name(name: str) -> model_names.LibraryName:
    """A name that is not a built-in one, parsed as a library's (imports nothing)."""
    parsed = model_names.parse(name)
    if parsed is None:
        guess = model_names.library_guess(name)
        hint = f"; did you mean {guess}?" if guess else ""
        hint = hint or model_names.close_names(name, list(MODELS), "built-in models")
        raise ConfigError(f"unknown model {name!r}{hint} (or name one as {MODEL_NAME_FORMS})")
    return parsed


def check_model_name(name: str) -> None:
    """That a config's model name is a built-in one or well formed (imports nothing: the
    installed libraries are asked at submit, by model_info)."""
    if name not in MODELS:
        _library_name(name)


def model_family(name: str) -> str:
    """A model's family, without importing its library."""
    return MODELS[name].family if name in MODELS else _library_name(name).family


def model_recipe(name: str) -> str:
    """The recipe a model trains by: a built-in's own, a library model's family's."""
    return name if name in MODELS else model_names.FAMILY_RECIPES[model_family(name)]


def model_slug(name: str) -> str:
    """The model's part of pair names, store keys and labels: a built-in's name as it is."""
    return name if name in MODELS else model_names.slug(name)


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
