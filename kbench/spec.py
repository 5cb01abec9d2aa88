"""Grids and the resolved training config of each pair. Pure: files in, dataclasses out.

A grid file names datasets and models; every dataset x model combination is a *pair*. A pair's
config is resolved in layers, later ones winning:

    recipes/<model>.yaml  <  grid `defaults`  <  grid `models.<model>`  <  grid `overrides.<pair>`
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from kbench.errors import ConfigError
from kbench.layers import Layer, load_yaml, merge_layers, missing_fields, read_text
from kbench.methods import FINE_TUNE, LINEAR_PROBE, METHODS, suffix, take_methods
from kbench.registry import (
    AUGMENTATIONS,
    DATASETS,
    MODEL_NAME_FORMS,
    MODELS,
    PROMPT_SETS,
    check_model_name,
    model_info,
    model_recipe,
    model_slug,
)
from kbench.sweep_grid import (
    DEFAULT_SWEEP_SEEDS,
    SweepCell,
    halving_of,
    plan_trials,
    take_sweep,
)

OPTIMIZERS = ("adamw", "sgd")
# The split that chooses the best epoch and WiSE-FT's alpha: the validation split, the test split
# (the reference study's way: optimistic), or none (the last epoch, the fine-tuned end).
SELECT_ON = ("val", "test", "last")
HOLDOUT = "holdout"  # a val_split held out of the training split (kbench.splits)
SCHEDULES = ("cosine", "constant")
PRECISIONS = ("bf16", "fp32")


@dataclass
class TrainConfig:
    """Everything one training run needs; stored as the pair's config.json."""

    dataset: str
    model: str
    epochs: int
    batch_size: int  # global: split evenly across all processes
    optimizer: str  # adamw | sgd
    lr: float  # learning rate of the backbone (image tower)
    head_lr: float | None = None  # of the classification head; None: same as lr
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    grad_clip: float | None = None  # max global gradient norm; None: no clipping
    schedule: str = "cosine"  # cosine | constant, after warmup
    warmup: float = 0.0  # linear warmup as a fraction of all training steps
    warmup_steps: int | None = None  # an absolute count instead; clamped to the run's length
    # Training augmentation, by name (registry.AUGMENTATIONS); None: the model's recipe's.
    augment: str | None = None
    pretrained: bool = True
    seed: int = 0
    workers: int | None = None  # DataLoader workers per process; None: the CPUs' share less 1
    train_limit: int | None = None  # use at most this many training samples (smoke runs)
    eval_limit: int | None = None
    data: str | None = None  # imagefolder: a local folder or s3://bucket/prefix
    # Which split chooses (SELECT_ON), and the splits by role; None: the dataset's own default
    # (kbench.registry: its first training split, its first published validation split or else
    # a hold-out of the training split, the test split the study reports).
    select_on: str = "val"
    train_split: str | None = None
    val_split: str | None = None
    eval_split: str | None = None
    # CLIP prompts, "{}" for the class; None: the dataset's own set. In a grid also the name of
    # a built-in set (registry.PROMPT_SETS: `simple`) or a file, one prompt per line.
    templates: list[str] | None = None
    # Speed only; none of these changes the recipe. They apply on GPUs (a CPU trains in fp32).
    precision: str = "bf16"  # bf16 | fp32: autocast dtype of forward and backward
    channels_last: bool = True  # memory format of convolutional models
    compile: bool = False  # torch.compile the model (slow to start, faster per step)
    # TensorBoard event files of every epoch's metrics, kept in the store beside the records.
    tensorboard: bool = False
    # How the model is adapted (kbench.methods): fine-tune, linear-probe or lp-ft.
    method: str = FINE_TUNE

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> TrainConfig:
        return cls.from_layers([(data, where)], where)

    @classmethod
    def from_layers(cls, layers: list[Layer], where: str) -> TrainConfig:
        """Layers merged (later ones win, each key and type checked once), then validated as
        a whole; `where` names the result in messages."""
        data = merge_layers(cls, layers, "config keys")
        missing = missing_fields(cls, data)
        if missing:
            raise ConfigError(f"{where}: missing {', '.join(missing)}")
        if data.get("augment") is None:  # a config.json names it; a grid takes its recipe's
            data["augment"] = MODELS[_checked(model_recipe, data["model"], where)].augment
        config = cls(**data)
        config.validate(where)
        return config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self, where: str) -> None:
        if self.dataset not in DATASETS:
            raise ConfigError(
                f"{where}: unknown dataset {self.dataset!r}; known: {_names(DATASETS)}"
            )
        _checked(check_model_name, self.model, where)
        if (self.dataset == "imagefolder") != (self.data is not None):
            need = "needs `data`: a folder or s3://bucket/prefix with train/ and val/ (or test/)"
            raise ConfigError(
                f"{where}: data: "
                + (need if self.data is None else "only the imagefolder dataset reads `data`")
            )
        self._validate_splits(where)
        if self.templates is not None and not all("{}" in t for t in self.templates):
            raise ConfigError(f"{where}: templates: every template needs {{}} for the class name")
        checks = [
            ("select_on", self.select_on in SELECT_ON, f"one of {', '.join(SELECT_ON)}"),
            ("method", self.method in METHODS, f"one of {', '.join(METHODS)}"),
            ("optimizer", self.optimizer in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"),
            ("schedule", self.schedule in SCHEDULES, f"one of {', '.join(SCHEDULES)}"),
            ("precision", self.precision in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
            ("augment", self.augment in AUGMENTATIONS, f"one of {', '.join(AUGMENTATIONS)}"),
            ("epochs", self.epochs >= 1, "at least 1"),
            ("batch_size", self.batch_size >= 1, "at least 1"),
            ("lr", self.lr > 0, "positive"),
            ("head_lr", self.head_lr is None or self.head_lr > 0, "positive"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("momentum", 0 <= self.momentum < 1, "in [0, 1)"),
            ("grad_clip", self.grad_clip is None or self.grad_clip > 0, "positive"),
            ("warmup", 0 <= self.warmup < 1, "a fraction in [0, 1)"),
            ("warmup_steps", self.warmup_steps is None or self.warmup_steps >= 0, ">= 0"),
            ("workers", self.workers is None or self.workers >= 0, ">= 0"),
            ("train_limit", self.train_limit is None or self.train_limit >= 1, "at least 1"),
            ("eval_limit", self.eval_limit is None or self.eval_limit >= 1, "at least 1"),
        ]
        for key, ok, allowed in checks:
            if not ok:
                raise ConfigError(f"{where}: {key}: must be {allowed}, got {getattr(self, key)!r}")
        # The images an epoch has, where known before any data is read.
        sizes = [n for n in (DATASETS[self.dataset].train_size, self.train_limit) if n]
        if sizes and self.batch_size > min(sizes):
            limit = " (train_limit)" if min(sizes) == self.train_limit else ""
            raise ConfigError(
                f"{where}: batch_size: {self.batch_size} is larger than the {min(sizes)}"
                f"{limit} training images of {self.dataset}: every epoch would be one partial step"
            )

    def _validate_splits(self, where: str) -> None:
        """Each split one the dataset has, in its role; the validation split never trained on."""
        info = DATASETS[self.dataset]
        roles = [
            ("train_split", self.train_split, info.train_splits),
            ("val_split", self.val_split, (*info.val_splits, HOLDOUT)),
            ("eval_split", self.eval_split, info.eval_splits),
        ]
        for key, split, known in roles:
            if split is not None and split not in known:
                raise ConfigError(
                    f"{where}: {key}: {self.dataset} has {', '.join(known)}, got {split!r}"
                )
        train = self.train_split or info.train_splits[0]
        val = self.val_split or (info.val_splits[0] if info.val_splits else HOLDOUT)
        if self.select_on == "val" and train == "trainval" and val == "val":
            raise ConfigError(
                f"{where}: train_split: {self.dataset}'s trainval holds val, the validation "
                "split: train on train, or set select_on: test (as the study) or last"
            )


@dataclass
class Pair:
    name: str  # "<dataset>_<model>": the report's column, the storage folder
    config: TrainConfig
    # A sweep's trial (kbench.sweep_grid): trained to this epoch, its rung's, then stopped with
    # its checkpoint kept; `rung` counts from 1. None: trained to the end, as every other pair.
    until: int | None = None
    rung: int = 0


@dataclass
class Grid:
    name: str
    source: str  # the file it came from
    pairs: list[Pair] = field(default_factory=list)
    document: dict[str, Any] = field(default_factory=dict)  # the file as written
    sweeps: list[SweepCell] = field(default_factory=list)  # each swept (dataset, model)

    def pair(self, name: str) -> Pair:
        for p in self.pairs:
            if p.name == name:
                return p
        raise ConfigError(f"grid {self.name!r} has no pair {name!r}; pairs: {self.pair_names()}")

    def pair_names(self) -> str:
        return ", ".join(p.name for p in self.pairs)


def pair_name(dataset: str, model: str, seed: int | None = None, method: str = FINE_TUNE) -> str:
    """ "<dataset>_<model>" (a library model's slug), its method's suffix ("_lp", "_lpft";
    none for fine-tuning), and "_seed<seed>" after it for one of a grid's `seeds`."""
    name = f"{dataset}_{model_slug(model)}{suffix(method)}"
    return name + ("" if seed is None else f"_seed{seed}")


# A pair name is also a Kubernetes label value: at most 63 characters of these.
PAIR_NAME = re.compile(r"(?P<dataset>[a-z0-9-]+)_[a-z0-9]([a-z0-9._-]*[a-z0-9])?")
MAX_PAIR_NAME = 63


def is_pair_name(name: Any) -> bool:
    """Whether `name` is a pair name: a dataset kbench knows and a model's slug (with a seed
    or not), fit for a store key and a label value."""
    found = PAIR_NAME.fullmatch(name) if isinstance(name, str) else None
    return found is not None and found["dataset"] in DATASETS and len(name) <= MAX_PAIR_NAME


GRID_KEYS = {
    "name": "the grid's name (default: the file's stem)",
    "description": "free text",
    "datasets": "a list of dataset names",
    "models": "a list of model names, or a mapping of model name to config keys; a name is a "
    f"built-in one ({', '.join(MODELS)}) or {MODEL_NAME_FORMS}",
    "defaults": "config keys for every pair",
    "overrides": "a mapping of pair name (<dataset>_<model>) to config keys",
    "seeds": "train every pair this many times, seeds counted from its `seed` (3), or with "
    "these seeds ([0, 7]); pairs are then named <dataset>_<model>_seed<seed>. With a sweep: "
    "the seeds of the chosen setting (default 3)",
    "methods": "how every model is adapted: a list of fine-tune (default), linear-probe, "
    "lp-ft; a model's own `methods` wins",
    "halving": "successive halving of a sweep's trials: {eta: 3, rungs: [1, 3]} (default: eta "
    "3 and a ladder from the epochs), or false to train every trial to its end",
    "cluster": "Kubernetes settings (image, namespace, nodes, gpus_per_node, ...)",
}


def builtin_grids() -> list[str]:
    folder = resources.files("kbench").joinpath("grids")
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def load_grid(ref: str) -> Grid:
    """A grid by built-in name (`all`, `smoke`) or by path to a YAML file."""
    if ref in builtin_grids():
        text = resources.files("kbench").joinpath(f"grids/{ref}.yaml").read_text("utf-8")
        return parse_grid(text, source=f"grids/{ref}.yaml", default_name=ref)
    path = Path(ref)
    if not path.is_file():
        raise ConfigError(
            f"no grid {ref!r}: give a built-in name ({', '.join(builtin_grids())}) "
            "or the path of a YAML file"
        )
    return parse_grid(
        read_text(path, "grid"), source=str(path), default_name=path.stem, base=path.parent
    )


def parse_grid(text: str, source: str, default_name: str, base: Path | None = None) -> Grid:
    """`base`: the folder that relative paths in the grid (`data`, a `templates` file) start
    from: the grid file's own; the working directory without one."""
    doc = load_yaml(text, source)
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: expected a mapping with keys {', '.join(GRID_KEYS)}")
    unknown = sorted(set(doc) - set(GRID_KEYS))
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r}; allowed: {', '.join(GRID_KEYS)}")

    datasets = _name_list(doc.get("datasets"), "datasets", DATASETS, source)
    models_doc = doc.get("models")
    if isinstance(models_doc, dict):
        model_overrides = {k: v or {} for k, v in models_doc.items()}
    else:
        model_overrides = {name: {} for name in _name_list(models_doc, "models", None, source)}
    for model in _name_list(list(model_overrides), "models", None, source):
        _checked(model_info, model, f"{source}: models")  # asks the library of a library name

    defaults = _mapping(doc.get("defaults"), f"{source}: defaults")
    overrides = _mapping(doc.get("overrides"), f"{source}: overrides")
    if len({model_slug(m) for m in model_overrides}) != len(model_overrides):
        raise ConfigError(f"{source}: models: two names give the same pair names")
    names = {pair_name(d, m) for d in datasets for m in model_overrides}
    for key in overrides:
        if key not in names:
            known = ", ".join(sorted(names))
            raise ConfigError(f"{source}: overrides.{key}: not a pair of this grid; pairs: {known}")

    seeds = _seeds(doc.get("seeds"), source)
    halving = halving_of(doc.get("halving"), source)
    pairs, sweeps = [], []
    for dataset in datasets:
        for model, model_keys in model_overrides.items():
            name = pair_name(dataset, model)
            recipe = model_recipe(model)
            layers = [
                ({"dataset": dataset, "model": model}, f"{source}: pair {name}"),
                (load_recipe(recipe), f"recipes/{recipe}.yaml"),
                (defaults, f"{source}: defaults"),
                (model_keys, f"{source}: models.{model}"),
                (overrides.get(name), f"{source}: overrides.{name}"),
            ]
            layers = [(_read_template_file(layer, base, where), where) for layer, where in layers]
            layers, sweep = take_sweep(layers, TrainConfig)
            layers, methods = take_methods(layers, doc.get("methods"))
            if sweep and methods != [FINE_TUNE]:
                raise ConfigError(f"{source}: pair {name}: a sweep tunes fine-tuning only")
            others = []  # after the fine-tuned pair, in the grid's order
            for method in (m for m in methods if m != FINE_TUNE):
                # Another method of the same model is its own pair, named with its suffix.
                named = pair_name(dataset, model, method=method)
                # A probe has no epochs: its one evaluation is recorded as epoch 1.
                keys = {"method": method, **({"epochs": 1} if method == LINEAR_PROBE else {})}
                found = TrainConfig.from_layers(
                    [*layers, (keys, f"{source}: methods")], f"{source}: {named}"
                )
                if found.data is not None:
                    found.data = local_data_path(found.data, base)
                others += _seeded(named, found, seeds, method)
            if FINE_TUNE not in methods:
                pairs += others
                continue
            config = TrainConfig.from_layers(layers, where=f"{source}: pair {name}")
            if config.data is not None:
                config.data = local_data_path(config.data, base)
            if sweep:
                given = doc.get("seeds", DEFAULT_SWEEP_SEEDS)  # checked by _seeds
                trials, cell = _trials(name, layers, sweep, halving, given, base, source)
                pairs += trials
                sweeps.append(cell)
                continue
            pairs += _seeded(name, config, seeds) + others
    for pair in pairs:  # long seeds: the model's slug alone is at most 40 characters
        if not is_pair_name(pair.name):
            raise ConfigError(
                f"{source}: pair {pair.name}: longer than the {MAX_PAIR_NAME} characters of a "
                "Kubernetes label: use smaller seeds"
            )
    name = doc.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{source}: name: expected a non-empty string")
    return Grid(name=name, source=source, pairs=pairs, document=doc, sweeps=sweeps)


def _seeded(
    name: str, config: TrainConfig, seeds: int | list[int] | None, method: str = FINE_TUNE
) -> list[Pair]:
    """A pair, or one per seed of a grid's `seeds`."""
    if seeds is None:
        return [Pair(name=name, config=config)]
    chosen = seeds if isinstance(seeds, list) else range(config.seed, config.seed + seeds)
    return [
        Pair(
            name=pair_name(config.dataset, config.model, seed, method),
            config=dataclasses.replace(config, seed=seed),
        )
        for seed in chosen
    ]


def _trials(
    cell: str,
    layers: list[Layer],
    sweep: dict[str, list],
    halving: tuple[int, list[int] | None] | None,
    seeds: int | list[int],
    base: Path | None,
    source: str,
) -> tuple[list[Pair], SweepCell]:
    """A swept pair's trials, each config checked with its values, and its cell's record."""

    def build(name: str, swept: Layer) -> TrainConfig:
        config = TrainConfig.from_layers([*layers, swept], where=f"{source}: pair {name}")
        if config.data is not None:
            config.data = local_data_path(config.data, base)
        return config

    trials, record = plan_trials(cell, sweep, build, halving, seeds, source)
    return [Pair(name, config, until, rung=1) for name, config, until in trials], record


def local_data_path(data: str, base: Path | None = None) -> str:
    """An imagefolder's `data` as every machine reads it: an s3:// URI as given, a local
    folder as an absolute path (which also names its staged copy)."""
    if data.startswith("s3://"):
        return data
    return str(_grid_path(data, base).resolve())


def _grid_path(name: str, base: Path | None) -> Path:
    """A path written in a grid: relative ones start from `base` (the grid's folder)."""
    return (base or Path()) / Path(name).expanduser()


def _read_template_file(layer: Any, base: Path | None, where: str) -> Any:
    """`templates` may name a built-in prompt set or a text file, one prompt per line ('#'
    starts a comment); the grid carries its lines, so pods need no copy of the file."""
    name = layer.get("templates") if isinstance(layer, dict) else None
    if not isinstance(name, str):
        return layer
    if name in PROMPT_SETS:
        return {**layer, "templates": list(PROMPT_SETS[name])}
    path = _grid_path(name, base)
    lines = read_text(path, f"{where}: templates").splitlines()
    templates = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    if not templates:
        raise ConfigError(f"{where}: templates: {path} holds no template")
    return {**layer, "templates": templates}


def load_recipe(recipe: str) -> dict[str, Any]:
    """A recipe (`recipes/<recipe>.yaml`, registry.model_recipe), shipped with the package."""
    text = resources.files("kbench").joinpath(f"recipes/{recipe}.yaml").read_text("utf-8")
    return load_yaml(text, f"recipes/{recipe}.yaml")


# ---------------------------------------------------------------------------- validation helpers


def _name_list(value: Any, key: str, known: dict | None, source: str) -> list[str]:
    """A list of distinct names, each one of `known` (None: checked by the caller)."""
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{source}: {key}: expected a non-empty list of names")
    for name in value:
        if known is not None and name not in known:
            raise ConfigError(f"{source}: {key}: unknown name {name!r}; known: {_names(known)}")
    if len(set(value)) != len(value):
        raise ConfigError(f"{source}: {key}: a name appears twice")
    return value


def _checked(check: Any, model: str, where: str) -> Any:
    """check(model), its ConfigError said of `where`."""
    try:
        return check(model)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def _seeds(value: Any, source: str) -> int | list[int] | None:
    """`seeds`: a count (1: the pairs as without it) or a list of distinct seeds."""
    if value is None or value == 1:
        return None
    whole = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0  # noqa: E731
    if whole(value) and value >= 2:
        return value
    if isinstance(value, list) and value and all(map(whole, value)):
        if len(set(value)) == len(value):
            return value
        raise ConfigError(f"{source}: seeds: a seed appears twice")
    raise ConfigError(f"{source}: seeds: a count of at least 1 or a list of seeds (integers >= 0)")


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping of config keys")
    return value


def _names(known: dict) -> str:
    return ", ".join(known)
