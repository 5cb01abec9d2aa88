"""Which split plays which part in a run (trained on, chosen on, scored on), and the validation
split of a dataset that publishes none (CIFAR10/100, STL10, Food101, the synthetic shapes, an
ImageFolder without both val/ and test/): a stratified part of its training split, held out of
training, drawn once from a fixed seed, so that it is the same images for every model, seed and
run of the dataset, and the same again when the dataset is staged again.

    10% of each class, at least one image of every class, at most 5,000 images in all

`kbench data stage` records which images (their indices in the staged training split), how
many and the seed in the dataset's manifest; a job that reads a local copy draws the same ones.
Choices made on it (the epoch, WiSE-FT's alpha) never see the test split.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kbench.errors import ConfigError, StoreError
from kbench.registry import dataset_info
from kbench.spec import HOLDOUT, TrainConfig

FRACTION = 0.1  # of each class
CAP = 5_000  # images in all, at most: enough for a choice, little taken from training
SEED = 0  # the draw's, fixed: one hold-out per dataset, whatever the run's seed


@dataclass(frozen=True)
class Roles:
    train: str
    val: str | None  # a split's name, HOLDOUT (kept out of `train`), or None: no validation
    test: str


def choose_splits(config: TrainConfig, available: Sequence[str]) -> Roles:
    """The config's splits, else the dataset's defaults among those it has here: its first
    training split; its first published validation split that is not the test split, else a
    hold-out of the training split (an ImageFolder with val/ and test/ validates on val/, one
    with either is tested on it); the test split the study reports. No validation split but
    for a run that chooses on one."""
    info = dataset_info(config.dataset)
    wanted = [config.eval_split] if config.eval_split else list(info.eval_splits)
    test = next((split for split in wanted if split in available), None)
    train = config.train_split or info.train_splits[0]
    for split, key in ((test, "eval_split"), (train, "train_split")):
        if split is None or split not in available:
            named = " or ".join(wanted) if key == "eval_split" else train
            raise ConfigError(
                f"{config.dataset} has no {named} split here (it has {', '.join(available)}): "
                f"set {key} to one of them"
            )
    assert test is not None
    if config.select_on != "val":
        return Roles(train, None, test)
    published = [s for s in info.val_splits if s in available and s != test]
    val = config.val_split or (published[0] if published else HOLDOUT)
    if val != HOLDOUT and (val not in available or val == test):
        raise ConfigError(
            f"{config.dataset}: val_split {val} is not a split here other than the test "
            f"split {test}: set val_split to {', '.join([*published, HOLDOUT])}"
        )
    return Roles(train, val, test)


def holdout(
    labels: Sequence[int], where: str = "the training split", classes: Sequence[str] = ()
) -> list[int]:
    """The indices (ascending) of the training samples held out for validation, given every
    training sample's label in order. Refused, in one line naming the class (by its name in
    `classes` where given), where a class has one image only: it cannot be both trained on and
    validated."""
    by_class: dict[int, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        by_class[int(label)].append(index)
    lonely = sorted(c for c, members in by_class.items() if len(members) < 2)
    if lonely:
        name = classes[lonely[0]] if lonely[0] < len(classes) else lonely[0]
        raise ConfigError(lonely_class(f"{where}: class {name}"))
    scale = min(1.0, CAP / max(1.0, FRACTION * len(labels)))
    rng = np.random.default_rng(SEED)
    chosen: list[int] = []
    for label in sorted(by_class):
        members = by_class[label]
        take = min(len(members) - 1, max(1, int(FRACTION * scale * len(members))))
        chosen += rng.permutation(members)[:take].tolist()
    return sorted(chosen)


def recorded_holdout(recorded: Any, train_split: str, samples: int, where: str) -> list[int] | None:
    """The hold-out a staged dataset's manifest records for `train_split` (of `samples`
    images), checked, since a store is not trusted: ascending, distinct indices of its samples.
    None where it records none for that split (staged by an older kbench, or a class of one
    image): the job draws it then."""
    if recorded is None or (isinstance(recorded, dict) and recorded.get("split") != train_split):
        return None
    indices = recorded.get("indices") if isinstance(recorded, dict) else None
    if not (
        isinstance(indices, list)
        and indices
        and all(type(i) is int for i in indices)
        and all(a < b for a, b in itertools.pairwise(indices))
        and indices[0] >= 0
        and indices[-1] < samples
    ):
        raise StoreError(
            f"{where}: the manifest's hold-out is not a list of its training images: stage the "
            "dataset again"
        )
    return indices


def lonely_class(what: str) -> str:
    return (
        f"{what} has one image, and a validation split is held out of every class: add "
        "images, give a validation split (an ImageFolder: val/ beside test/), or set "
        "select_on: test"
    )


def described(indices: list[int]) -> dict:
    """A hold-out as a manifest records it: how it was drawn, how many, which."""
    return {
        "fraction": FRACTION,
        "cap": CAP,
        "seed": SEED,
        "samples": len(indices),
        "indices": indices,
    }
