"""Models named by their library, beside the four built-in names:

    open_clip:<architecture>[/<pretrained tag>]   e.g. open_clip:ViT-B-16/laion2b_s34b_b88k
    torchvision:<model>[/<weights>]               e.g. torchvision:convnext_tiny

An open_clip model trains as CLIP does (its family's recipe, its own preprocessing, a zero-shot
head from its own text tower); a torchvision classifier as ResNet50 does (a new linear head in
place of its last one). Without a tag an open_clip architecture has no published weights (train
it from scratch, or stage a file: `kbench models stage NAME --from FILE`); a torchvision model
without weights named gets torchvision's DEFAULT ones, as `weights="DEFAULT"` would.

Parsing a name imports nothing (`status` and `collect` read configs where torch may be absent);
resolving one (`resolve`, at submit and in the pod) asks the installed libraries, which decide
what exists. A name becomes part of pair names, store keys and Kubernetes labels through its
`slug`.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from kbench.errors import ConfigError

LIBRARIES = {"open_clip": "clip", "torchvision": "resnet"}  # library -> family
FORMS = {
    "open_clip": "open_clip:<architecture>[/<tag>]",
    "torchvision": "torchvision:<model>[/<weights>]",
}
# Each family's recipe (recipes/<name>.yaml): the reference study's model of that family.
FAMILY_RECIPES = {"clip": "clip-vit-b32", "resnet": "resnet50"}
SLUG_LIMIT = 40  # "fgvc-aircraft_<slug>_seed9999" stays a Kubernetes label value (63)
# torchvision classifiers whose training forward is not one tensor of logits from a last
# Linear layer.
UNSUPPORTED = {
    "googlenet": "its training forward returns auxiliary outputs",
    "inception_v3": "its training forward returns auxiliary outputs",
    "squeezenet1_0": "its classifier is a convolution, not a linear layer",
    "squeezenet1_1": "its classifier is a convolution, not a linear layer",
}
# open_clip architectures kbench ships (kbench/data/open_clip/): a 2-layer CLIP for smoke runs
# and tests, registered with open_clip so it resolves and builds like any other.
SHIPPED_CONFIGS = "open_clip"
TINY_CLIP = "kbench-tiny-clip"  # clip-tiny's architecture
# Keys of an open_clip config whose tower needs another library.
OTHER_LIBRARIES = {
    "timm": ("timm_model_name",),
    "transformers": ("hf_model_name", "hf_tokenizer_name"),
}


@dataclass(frozen=True)
class LibraryName:
    library: str  # open_clip | torchvision
    model: str  # the architecture (open_clip) or model builder (torchvision)
    weights: str | None  # the pretrained tag or weights enum member, as written

    @property
    def family(self) -> str:
        return LIBRARIES[self.library]

    @property
    def name(self) -> str:
        return f"{self.library}:{self.model}" + (f"/{self.weights}" if self.weights else "")


def parse(name: str) -> LibraryName | None:
    """The parts of a library model name; None for a name without a library prefix."""
    library, colon, rest = name.partition(":")
    if not colon:
        return None
    if library not in LIBRARIES:
        forms = " or ".join(FORMS.values())
        raise ConfigError(f"model {name!r}: unknown library {library!r}; name a model as {forms}")
    model, slash, weights = rest.partition("/")
    part = r"[A-Za-z0-9][A-Za-z0-9_.@-]*"
    if not re.fullmatch(part, model) or (slash and not re.fullmatch(part, weights)):
        raise ConfigError(
            f"model {name!r}: expected {FORMS[library]} of letters, digits, '-', '_', '.'"
        )
    return LibraryName(library, model, weights or None)


def slug(name: str) -> str:
    """A library model's name as pair names, store keys and label values carry it: lower case,
    ':' and '/' as '-', at most SLUG_LIMIT characters (a longer one ends in a hash)."""
    text = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-._")
    if len(text) <= SLUG_LIMIT:
        return text
    digest = hashlib.sha256(name.encode()).hexdigest()[:6]
    return f"{text[: SLUG_LIMIT - 7].rstrip('-._')}-{digest}"


def close_names(word: str, choices: list[str], what: str) -> str:
    """'; did you mean a, b?' with the closest of `choices` (case aside; a name that starts
    with `word` is close), or a few of them when none is."""
    lower = {c.lower(): c for c in choices}
    key = word.lower()
    close = [c for c in choices if c.lower().startswith(key)][:3]
    close += [lower[c] for c in difflib.get_close_matches(key, list(lower), n=3)]
    close = list(dict.fromkeys(close))[:3]
    if close:
        return f"; did you mean {', '.join(close)}?"
    shown = ", ".join(sorted(choices)[:8])
    return f"; {len(choices)} {what}, e.g. {shown}" if choices else f"; it has no {what}"


# ------------------------------------------------------------------------ resolving (imports)


def library_guess(name: str) -> str | None:
    """`torchvision:<name>` or `open_clip:<name>` when a bare name is one of theirs (and the
    library is installed): what a user who wrote `convnext_tiny` meant."""
    if importlib.util.find_spec("torchvision") is not None:
        from torchvision import models

        if name in models.list_models(module=models):
            return f"torchvision:{name}"
    found = importlib.util.find_spec("open_clip") is not None
    if found and name in open_clip_module().list_models():
        return f"open_clip:{name}/<tag>"
    return None


@dataclass(frozen=True)
class Resolved:
    """What the installed library says of a name: the model's preprocessing and weights."""

    image_size: int  # the crop the model sees
    resize: int  # the eval resize before the crop (the shorter side; squash: both sides)
    interpolation: str  # bicubic | bilinear
    mean: tuple[float, ...]
    std: tuple[float, ...]
    squash: bool  # resize to a square, no crop (e.g. SigLIP)
    weights: str | None  # the published weights resolved (tag, enum member); None: none
    description: str


def resolve(name: LibraryName) -> Resolved:
    """The name checked against the installed library; a ConfigError that names close
    alternatives when it does not hold."""
    if importlib.util.find_spec(name.library) is None:
        package = {"open_clip": "open_clip_torch"}.get(name.library, name.library)
        raise ConfigError(
            f"model {name.name}: checking it needs {package} installed here: "
            "pip install 'kbench[train]'"
        )
    return _open_clip(name) if name.library == "open_clip" else _torchvision(name)


@cache
def open_clip_module() -> Any:
    """open_clip, with the architectures kbench ships registered."""
    import open_clip

    folder = resources.files("kbench").joinpath(f"data/{SHIPPED_CONFIGS}")
    open_clip.add_model_config(Path(str(folder)))
    return open_clip


def open_clip_quick_gelu(name: LibraryName) -> bool:
    """Whether the tag's weights were trained with QuickGELU while the architecture's config
    says GELU (OpenAI's weights on `ViT-B-16`): open_clip only warns; kbench builds QuickGELU."""
    open_clip = open_clip_module()
    tag = open_clip.get_pretrained_cfg(name.model, name.weights) if name.weights else {}
    config = open_clip.get_model_config(name.model) or {}
    return bool(tag.get("quick_gelu")) and not config.get("quick_gelu")


def _open_clip(name: LibraryName) -> Resolved:
    open_clip = open_clip_module()
    architectures = open_clip.list_models()
    if name.model not in architectures:
        hint = close_names(name.model, architectures, "architectures")
        raise ConfigError(f"model {name.name}: open_clip has no architecture {name.model!r}{hint}")
    tags = open_clip.list_pretrained_tags_by_model(name.model)
    if name.weights is not None and name.weights not in tags:
        hint = close_names(name.weights, tags, "pretrained tags")
        raise ConfigError(
            f"model {name.name}: {name.model} has no pretrained tag {name.weights!r}{hint}"
        )
    config = open_clip.get_model_config(name.model)
    # Towers built on other libraries: timm's image towers, Hugging Face's text towers.
    towers = {**config["vision_cfg"], **config["text_cfg"]}
    needs = [
        package
        for package, keys in OTHER_LIBRARIES.items()
        if any(key in towers for key in keys) and importlib.util.find_spec(package) is None
    ]
    if needs:
        raise ConfigError(
            f"model {name.name}: this architecture is built on {' and '.join(needs)}, which "
            f"kbench does not install: pip install {' '.join(needs)} here and in the image"
        )
    size = config["vision_cfg"]["image_size"]
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            raise ConfigError(f"model {name.name}: non-square inputs ({size}) are not supported")
        size = size[0]
    cfg = open_clip.get_pretrained_cfg(name.model, name.weights) if name.weights else {}
    mode = cfg.get("resize_mode", "shortest")
    if mode not in ("shortest", "squash"):
        raise ConfigError(f"model {name.name}: its resize mode {mode!r} is not supported")
    weights = f"pretrained {name.weights!r}" if name.weights else "no published weights"
    gelu = ", QuickGELU as its weights were trained" if open_clip_quick_gelu(name) else ""
    return Resolved(
        image_size=size,
        resize=size,
        interpolation=cfg.get("interpolation", "bicubic"),
        mean=tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)),  # open_clip's defaults
        std=tuple(cfg.get("std", open_clip.OPENAI_DATASET_STD)),
        squash=mode == "squash",
        weights=name.weights,
        description=f"open_clip {name.model}, {weights}{gelu}",
    )


def torchvision_weights(name: LibraryName) -> Any:
    """The weights enum member the name means (None: the model has none)."""
    from torchvision import models

    choices = models.get_model_weights(name.model)
    members = list(choices.__members__)
    if name.weights is None:
        return choices.DEFAULT if "DEFAULT" in members else None
    if name.weights not in members:
        hint = close_names(name.weights, members, "weights")
        raise ConfigError(f"model {name.name}: {name.model} has no weights {name.weights!r}{hint}")
    return choices[name.weights]


def _torchvision(name: LibraryName) -> Resolved:
    from torchvision import models

    classifiers = models.list_models(module=models)
    if name.model not in classifiers:
        hint = close_names(name.model, classifiers, "classification models")
        raise ConfigError(
            f"model {name.name}: torchvision has no classification model {name.model!r}{hint}"
        )
    if name.model in UNSUPPORTED:
        raise ConfigError(f"model {name.name}: not supported: {UNSUPPORTED[name.model]}")
    weights = torchvision_weights(name)
    if weights is None:  # every classifier torchvision ships has some
        raise ConfigError(f"model {name.name}: torchvision publishes no weights for it")
    preset = weights.transforms()  # the weights' own eval preprocessing
    (crop,), (resize,) = preset.crop_size, preset.resize_size
    return Resolved(
        image_size=crop,
        resize=resize,
        interpolation=preset.interpolation.value,
        mean=tuple(preset.mean),
        std=tuple(preset.std),
        squash=False,
        weights=weights.name,
        description=f"torchvision {name.model}, {type(weights).__name__}.{weights.name}",
    )
