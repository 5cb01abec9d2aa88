"""Any open_clip or torchvision model by its library's name: parsed without imports, checked
against the installed libraries at submit (typos refused with the close names), trained by its
family's recipe with its own preprocessing and head, staged for pods without internet, and
carried into pair names, store keys and Kubernetes labels through a slug."""

from __future__ import annotations

import re

import pytest
import torch
from torchvision.transforms import v2

from kbench import model_names
from kbench.errors import ConfigError
from kbench.jobs.datasets import build_transforms
from kbench.jobs.models import build_model
from kbench.k8s.render import MODEL_LABEL, PAIR_LABEL, render_run, validate
from kbench.k8s.settings import resolve
from kbench.registry import model_info, model_slug
from kbench.spec import is_pair_name, load_recipe, parse_grid

TINY_CLIP = "open_clip:kbench-tiny-clip"  # shipped to open_clip by kbench: a 2-layer CLIP

MOBILENET = "torchvision:mobilenet_v3_small"  # torchvision's smallest classifier (2.5M)

# A Kubernetes label value: at most 63 characters, alphanumeric at both ends.
LABEL_VALUE = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]")


def grid(models: str, extra: str = "") -> str:
    return f"datasets: [synthetic, fgvc-aircraft]\nmodels: {models}\n{extra}"


def test_names_parse_without_imports_and_slug_into_labels():
    name = model_names.parse("open_clip:ViT-B-16/laion2b_s34b_b88k")
    assert (name.library, name.model, name.weights, name.family) == (
        "open_clip",
        "ViT-B-16",
        "laion2b_s34b_b88k",
        "clip",
    )
    assert model_names.parse("torchvision:convnext_tiny").weights is None
    assert model_names.parse("torchvision:convnext_tiny").family == "resnet"
    assert model_names.parse("clip-vit-b32") is None  # a built-in name
    for bad in ("open_clip:", "open_clip:ViT-B-16/", "torchvision:a/b/c", "open_clip:../x"):
        with pytest.raises(ConfigError, match="expected"):
            model_names.parse(bad)
    with pytest.raises(ConfigError, match="unknown library 'timm'"):
        model_names.parse("timm:vit_small")

    assert (
        model_slug("open_clip:ViT-B-16/laion2b_s34b_b88k") == "open_clip-vit-b-16-laion2b_s34b_b88k"
    )
    assert model_slug("resnet50") == "resnet50"
    long_names = [
        f"open_clip:convnext_base_w_320/laion_aesthetic_s13b_b82k{s}" for s in ("", "_augreg")
    ]
    slugs = [model_slug(n) for n in long_names]
    assert all(len(s) <= model_names.SLUG_LIMIT for s in slugs) and slugs[0] != slugs[1]
    for pair in [f"fgvc-aircraft_{s}_seed9999" for s in slugs]:
        assert is_pair_name(pair) and LABEL_VALUE.fullmatch(pair)
    assert not is_pair_name("fgvc-aircraft_open_clip:ViT-B-16")  # a name, not its slug
    assert not is_pair_name("imagenet_resnet50")  # no such dataset


@pytest.mark.parametrize(
    ("model", "says"),
    [
        (
            "open_clip:vit-b-16/laion2b_s34b_b88k",
            "no architecture 'vit-b-16'; did you mean ViT-B-16,",
        ),
        (
            "open_clip:ViT-B-16/laion2b",
            "no pretrained tag 'laion2b'; did you mean laion2b_s34b_b88k",
        ),
        (
            "torchvision:convnext_tini",
            "no classification model 'convnext_tini'; did you mean convnext_tiny",
        ),
        (
            "torchvision:resnet50/IMAGENET1K_V3",
            "no weights 'IMAGENET1K_V3'; did you mean IMAGENET1K_V2",
        ),
        ("convnext_tiny", "unknown model 'convnext_tiny'; did you mean torchvision:convnext_tiny?"),
        ("clip-vit-b16", "unknown model 'clip-vit-b16'; did you mean clip-vit-b32?"),
        ("torchvision:googlenet", "not supported: its training forward returns auxiliary outputs"),
    ],
)
def test_a_typo_is_refused_at_submit_with_the_close_names(model, says, tmp_path, kbench):
    path = tmp_path / "typo.yaml"
    path.write_text(grid(f'["{model}"]'))
    store = tmp_path / "store"
    result = kbench("submit", "--grid", str(path), "--store", str(store))
    assert result.exit_code == 2, result.output
    assert says in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (store / "runs").exists()  # nothing created


def test_each_library_model_has_its_family_recipe_and_its_own_preprocessing():
    laion = model_info("open_clip:ViT-B-16/laion2b_s34b_b88k")
    assert (laion.family, laion.image_size, laion.resize, laion.interpolation) == (
        "clip",
        224,
        224,
        "bicubic",
    )
    assert laion.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert laion.weights == "laion2b_s34b_b88k"
    # OpenAI's weights on the plain (GELU) architecture: built with QuickGELU, as trained.
    openai = model_names.parse("open_clip:ViT-B-16/openai")
    assert model_names.open_clip_quick_gelu(openai)
    assert not model_names.open_clip_quick_gelu(
        model_names.parse("open_clip:ViT-B-16/laion2b_s34b_b88k")
    )

    convnext = model_info("torchvision:convnext_tiny")  # DEFAULT: IMAGENET1K_V1, resize 236
    assert (convnext.family, convnext.image_size, convnext.resize, convnext.interpolation) == (
        "resnet",
        224,
        236,
        "bilinear",
    )
    assert convnext.weights == "IMAGENET1K_V1" and convnext.mean == (0.485, 0.456, 0.406)
    swag = model_info("torchvision:vit_h_14/IMAGENET1K_SWAG_E2E_V1")
    assert (swag.image_size, swag.resize, swag.interpolation) == (518, 518, "bicubic")

    pairs = parse_grid(
        grid('["open_clip:ViT-B-16/laion2b_s34b_b88k", torchvision:convnext_tiny]'), "g.yaml", "g"
    ).pairs
    assert [p.name for p in pairs] == [
        "synthetic_open_clip-vit-b-16-laion2b_s34b_b88k",
        "synthetic_torchvision-convnext_tiny",
        "fgvc-aircraft_open_clip-vit-b-16-laion2b_s34b_b88k",
        "fgvc-aircraft_torchvision-convnext_tiny",
    ]
    for pair, recipe in zip(pairs[:2], ("clip-vit-b32", "resnet50"), strict=True):
        expected = load_recipe(recipe)
        assert {k: getattr(pair.config, k) for k in expected} == expected
    assert [p.config.augment for p in pairs[:2]] == ["mild-crop", "crop-flip"]


def test_a_squashing_model_resizes_the_whole_image_to_a_square():
    squash = model_info(MOBILENET).__class__(
        **{**model_info(MOBILENET).__dict__, "squash": True, "image_size": 16, "resize": 16}
    )
    image = torch.zeros(3, 20, 40, dtype=torch.uint8)
    image[:, :, :10] = 255  # a white left quarter: kept by a squash, cropped away by a crop
    _, evaluation = build_transforms(squash)
    out = evaluation(image)
    assert out.shape == (3, 16, 16) and out[:, :, :3].float().mean() > 200
    cropped = build_transforms(model_info(MOBILENET))[1](image)  # resize 256, crop 224
    assert cropped.shape == (3, 224, 224) and cropped[:, :, :3].float().mean() < 10
    assert torch.equal(out, v2.Resize((16, 16))(image))


def test_library_models_build_with_their_own_heads():
    classes, templates = ["cat", "dog", "bird"], ["a photo of a {}."]
    recipe = {"dataset": "synthetic", "epochs": 1, "batch_size": 8, "pretrained": False}
    from kbench.spec import TrainConfig

    clip = build_model(
        TrainConfig.from_dict({**load_recipe("clip-vit-b32"), **recipe, "model": TINY_CLIP}),
        classes,
        templates,
        torch.device("cpu"),
    )
    assert clip.normalize and clip.head.weight.shape == (3, 64)  # the zero-shot head
    assert clip(torch.rand(2, 3, 32, 32)).shape == (2, 3)

    mobilenet = build_model(
        TrainConfig.from_dict({**load_recipe("resnet50"), **recipe, "model": MOBILENET}),
        classes,
        templates,
        torch.device("cpu"),
    )
    # Its last Linear (classifier[3], 1024 -> 1000) gave way to a new head of three classes.
    assert isinstance(mobilenet.encoder.classifier[3], torch.nn.Identity)
    assert mobilenet.head.weight.shape == (3, 1024) and not mobilenet.normalize
    assert mobilenet(torch.rand(2, 3, 64, 64)).shape == (2, 3)


def test_a_pretrained_model_with_nothing_to_start_from_is_refused_before_anything(tmp_path, kbench):
    path = tmp_path / "g.yaml"
    path.write_text(f"datasets: [synthetic]\nmodels: [{TINY_CLIP}]\n")  # pretrained: the recipe's
    store = tmp_path / "store"
    result = kbench("submit", "--grid", str(path), "--store", str(store))
    assert result.exit_code == 2, result.output
    assert f"{TINY_CLIP}: no published weights to start from" in result.output
    assert not (store / "runs").exists()


def test_library_models_render_as_valid_kubernetes_objects():
    pairs = parse_grid(
        grid(f'["open_clip:ViT-B-16/laion2b_s34b_b88k", {MOBILENET}]'), "g", "g"
    ).pairs
    settings = resolve([({"image": "registry.example/kbench:1", "nodes": 2}, "test")])
    manifests = render_run("lib", pairs, settings, "s3://bucket/study")
    assert validate(manifests, "1.33.0") == []
    labels = [m["metadata"]["labels"] for m in manifests]
    assert {label[MODEL_LABEL] for label in labels} == {
        "open_clip-vit-b-16-laion2b_s34b_b88k",
        "torchvision-mobilenet_v3_small",
    }
    assert all(LABEL_VALUE.fullmatch(v) for label in labels for v in label.values())
    assert [label[PAIR_LABEL] for label in labels] == [p.name for p in pairs]


def test_the_result_says_what_a_pair_started_from(tmp_path):
    from kbench.jobs.train import started_from
    from kbench.spec import TrainConfig

    def config(model: str, pretrained: bool) -> TrainConfig:
        recipe = load_recipe("resnet50")
        return TrainConfig.from_dict(
            {**recipe, "dataset": "synthetic", "model": model, "pretrained": pretrained}
        )

    convnext = "torchvision:convnext_tiny"
    info = model_info(convnext)
    assert started_from(config(convnext, False), info, None) == "random init"
    assert started_from(config(convnext, True), info, None) == (
        "torchvision convnext_tiny, ConvNeXt_Tiny_Weights.IMAGENET1K_V1, downloaded"
    )
    staged = tmp_path / "0123456789abcdef-convnext.pt"
    assert started_from(config(convnext, True), info, staged) == f"staged file {staged.name}"
