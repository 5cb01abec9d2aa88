"""Grids: the built-in ones, how a pair's config is resolved, and what bad input says."""

from __future__ import annotations

import pytest

from kbench.errors import ConfigError
from kbench.registry import DATASETS, MODELS, prompts
from kbench.spec import TrainConfig, builtin_grids, load_grid, parse_grid

STUDY_DATASETS = {
    "cifar10",
    "cifar100",
    "dtd",
    "fmow",
    "fgvc-aircraft",
    "flowers102",
    "food101",
    "iwildcam",
    "stl10",
}


def test_builtin_grids():
    assert {"all", "smoke"} <= set(builtin_grids())


def test_all_is_the_reference_study():
    grid = load_grid("all")
    assert len(grid.pairs) == 18
    assert {p.config.dataset for p in grid.pairs} == STUDY_DATASETS
    assert {p.config.model for p in grid.pairs} == {"clip-vit-b32", "resnet50"}
    clip = grid.pair("cifar10_clip-vit-b32").config
    assert (clip.epochs, clip.batch_size, clip.optimizer) == (10, 512, "adamw")
    assert (clip.lr, clip.weight_decay, clip.grad_clip, clip.schedule) == (3e-5, 0.1, 1.0, "cosine")
    assert 0 < clip.warmup < 1 and clip.warmup_steps is None  # a fraction, not WiSE-FT's 500 steps
    resnet = grid.pair("dtd_resnet50").config
    assert (resnet.epochs, resnet.batch_size, resnet.optimizer) == (20, 256, "sgd")
    assert (resnet.lr, resnet.head_lr, resnet.momentum) == (0.001, 0.01, 0.9)


def test_smoke_is_cpu_sized():
    grid = load_grid("smoke")
    assert [p.name for p in grid.pairs] == ["synthetic_clip-tiny", "synthetic_resnet-tiny"]
    assert all(p.config.train_limit and p.config.epochs <= 10 for p in grid.pairs)


def test_layers_resolve_in_order(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "datasets: [cifar10, dtd]\n"
        "models: {resnet50: {epochs: 3}, clip-vit-b32: null}\n"
        "defaults: {epochs: 7, seed: 5}\n"
        "overrides: {dtd_resnet50: {epochs: 1, head_lr: 0.5}}\n"
    )
    grid = load_grid(str(path))
    assert grid.name == "mine"
    configs = {p.name: p.config for p in grid.pairs}
    assert configs["cifar10_clip-vit-b32"].epochs == 7  # defaults beat the recipe
    assert configs["cifar10_resnet50"].epochs == 3  # the model entry beats defaults
    assert configs["dtd_resnet50"].epochs == 1  # the pair override beats all
    assert configs["dtd_resnet50"].head_lr == 0.5
    assert configs["cifar10_resnet50"].head_lr == 0.01  # from the recipe
    assert all(c.seed == 5 for c in configs.values())


def test_config_round_trips_through_json():
    config = load_grid("all").pair("flowers102_clip-vit-b32").config
    assert TrainConfig.from_dict(config.to_dict()) == config


BAD_GRIDS = [
    ("datasets: [cifar10\nmodels: [resnet50]", "bad.yaml: not valid YAML at line"),
    ("- just\n- a list", "bad.yaml: expected a mapping"),
    ("datasets: [cifar10]\nmodels: [resnet50]\ncolour: red", "bad.yaml: unknown key 'colour'"),
    ("datasets: [imagenet]\nmodels: [resnet50]", "datasets: unknown name 'imagenet'; known:"),
    (
        "datasets: [cifar10]\nmodels: [vgg16]",
        "models: unknown model 'vgg16'; did you mean torchvision:vgg16?",
    ),
    ("datasets: cifar10\nmodels: [resnet50]", "datasets: expected a non-empty list of names"),
    (
        "datasets: [cifar10]\nmodels: [resnet50]\ndefaults: {lrr: 1}",
        "defaults: unknown key 'lrr'; allowed: dataset, model, epochs",
    ),
    (
        "datasets: [cifar10]\nmodels: {resnet50: {epochs: ten}}",
        "models.resnet50: epochs: expected an integer, got 'ten'",
    ),
    (
        "datasets: [cifar10]\nmodels: [resnet50]\ndefaults: {pretrained: 1}",
        "defaults: pretrained: expected true or false, got 1",
    ),
    (
        "datasets: [cifar10]\nmodels: [resnet50]\ndefaults: {epochs: true}",
        "defaults: epochs: expected an integer, got True",
    ),
    (
        "datasets: [cifar10]\nmodels: [resnet50]\ndefaults: {optimizer: lamb}",
        "pair cifar10_resnet50: optimizer: must be one of adamw, sgd, got 'lamb'",
    ),
    (
        "datasets: [cifar10]\nmodels: [resnet50]\ndefaults: {warmup: 500}",
        "warmup: must be a fraction in [0, 1), got 500",
    ),
    (
        "datasets: [cifar10]\nmodels: [resnet50]\noverrides: {dtd_resnet50: {epochs: 1}}",
        "overrides.dtd_resnet50: not a pair of this grid; pairs: cifar10_resnet50",
    ),
    ("datasets: [cifar10]\nmodels: [resnet50]\nseeds: 0", "seeds: a count of at least 1"),
    ("datasets: [cifar10]\nmodels: [resnet50]\nseeds: [1, -2]", "seeds: a count of at least 1"),
    ("datasets: [cifar10]\nmodels: [resnet50]\nseeds: [3, 3]", "seeds: a seed appears twice"),
    ("datasets: [cifar10]\nmodels: [resnet50]\nseeds: two", "seeds: a count of at least 1"),
]


@pytest.mark.parametrize(("text", "message"), BAD_GRIDS)
def test_bad_grids_name_file_key_and_what_is_allowed(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_grid(str(path))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_grid_name():
    with pytest.raises(
        ConfigError, match=r"no grid 'nosuch': give a built-in name \(all, fair, smoke"
    ):
        load_grid("nosuch")


def test_prompt_data_matches_the_registry():
    for name, info in DATASETS.items():
        classes, templates = prompts(name)
        assert len(classes) == info.num_classes, name
        assert templates and all("{}" in t for t in templates), name
        # Readable in a sentence, but FMoW's as WiSE-FT spells them (kbench.registry).
        assert name == "fmow" or all("_" not in c for c in classes), name


def test_augment_and_a_named_prompt_set():
    grid = parse_grid(
        "datasets: [dtd]\nmodels: {clip-vit-b32: {templates: simple}, resnet50: {}}",
        "g.yaml",
        default_name="g",
    )
    clip, resnet = (p.config for p in grid.pairs)
    assert clip.templates == ["a photo of a {}."] and resnet.templates is None
    assert (clip.augment, resnet.augment) == ("mild-crop", "crop-flip")  # the recipes', resolved
    with pytest.raises(ConfigError, match="augment: must be one of mild-crop, crop-flip, none"):
        parse_grid("datasets: [dtd]\nmodels: [resnet50]\ndefaults: {augment: flip}", "g.yaml", "g")


def test_every_model_has_a_recipe():
    grid = parse_grid(
        f"datasets: [synthetic]\nmodels: [{', '.join(MODELS)}]", "g.yaml", default_name="g"
    )
    assert len(grid.pairs) == len(MODELS)


def test_seeds_train_every_pair_again_under_its_own_name():
    text = (
        "datasets: [cifar10, dtd]\nmodels: [resnet50]\nseeds: 2\n"
        "overrides: {dtd_resnet50: {seed: 5, epochs: 3}}"
    )
    grid = parse_grid(text, "g.yaml", "g")
    assert [(p.name, p.config.seed) for p in grid.pairs] == [
        ("cifar10_resnet50_seed0", 0),
        ("cifar10_resnet50_seed1", 1),
        ("dtd_resnet50_seed5", 5),  # counted from the pair's own seed
        ("dtd_resnet50_seed6", 6),
    ]
    assert all(p.config.epochs == 3 for p in grid.pairs[2:])  # an override covers every seed
    listed = parse_grid("datasets: [dtd]\nmodels: [resnet50]\nseeds: [7, 1]", "g.yaml", "g")
    assert [p.name for p in listed.pairs] == ["dtd_resnet50_seed7", "dtd_resnet50_seed1"]
    one = parse_grid("datasets: [dtd]\nmodels: [resnet50]\nseeds: 1", "g.yaml", "g")
    assert [p.name for p in one.pairs] == ["dtd_resnet50"]  # as without the key
