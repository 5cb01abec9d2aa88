"""The two study recipes, checked on the objects actually built (random init: no downloads)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from torchvision.transforms import InterpolationMode, v2

from kbench.jobs import models
from kbench.jobs.datasets import build_transforms, normalization
from kbench.jobs.optim import build_optimizer, build_scheduler, warmup_steps
from kbench.registry import model_info, prompts
from kbench.spec import load_grid

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from photos import KINDS, photo  # noqa: E402

CPU = torch.device("cpu")

# kbench's own steps around the recipe's transforms: to a uint8 tensor and back.
KBENCH_ONLY = (v2.ToImage, v2.RGB, v2.ToDtype, v2.ToPureTensor)

FLOWERS102_TRAIN = 1020  # images in torchvision's Flowers102 train split


def study(pair: str):
    config = load_grid("all").pair(pair).config
    config.pretrained = False  # same architecture, no weights to download
    return config


def test_clip_uses_quickgelu_with_openai_weights():
    assert models.CLIP_ARCH == "ViT-B-32-quickgelu"
    assert "openai" in open_clip.list_pretrained_tags_by_model(models.CLIP_ARCH)
    classes, templates = prompts("cifar10")
    model = models.build_model(study("cifar10_clip-vit-b32"), classes, templates, CPU)
    activations = {type(m).__name__ for m in model.encoder.modules()}
    assert "QuickGELU" in activations and "GELU" not in activations
    assert model.head.weight.shape == (10, 512) and model.normalize


def test_clip_optimizer_and_warmup():
    config = study("flowers102_clip-vit-b32")
    classes, templates = prompts("flowers102")
    model = models.build_model(config, classes[:3], templates, CPU)
    optimizer = build_optimizer(config, model, CPU)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert [g["lr"] for g in optimizer.param_groups] == [3e-5, 3e-5]
    assert all(g["weight_decay"] == 0.1 for g in optimizer.param_groups)
    assert config.grad_clip == 1.0 and config.schedule == "cosine"
    # Flowers102 at batch 512: 2 steps an epoch (the last one partial), 20 steps in all.
    # WiSE-FT's 500 warmup steps would be the whole run; the fraction leaves nearly all of it
    # to the cosine schedule.
    total = config.epochs * math.ceil(FLOWERS102_TRAIN / config.batch_size)
    assert total == 20
    assert warmup_steps(config, total) <= 1


def wise_ft_cosine_lr(base_lr: float, warmup_length: int, steps: int, step: int) -> float:
    """WiSE-FT's cosine_lr (src/models/utils.py), the rate it assigns at `step`: a linear ramp
    base * (step + 1) / warmup_length, then a cosine from the base to zero over what is left."""
    if step < warmup_length:
        return base_lr * (step + 1) / warmup_length
    e, es = step - warmup_length, steps - warmup_length
    return 0.5 * (1 + np.cos(np.pi * e / es)) * base_lr


@pytest.mark.parametrize("steps", [40, 1000])  # DTD's 40 steps never leave the 500-step ramp
def test_the_study_grids_learning_rate_is_wise_fts_at_every_step(steps):
    config = load_grid("study").pair("dtd_clip-vit-b32").config
    assert (config.warmup_steps, config.schedule, config.epochs) == (500, "cosine", 10)
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([parameter], lr=config.lr)
    scheduler = build_scheduler(config, optimizer, total_steps=steps)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [wise_ft_cosine_lr(config.lr, 500, steps, step) for step in range(steps)]
    assert rates == pytest.approx(expected, rel=1e-12, abs=0)
    if steps == 40:
        assert max(rates) == pytest.approx(config.lr * 40 / 500)  # 8% of the base rate


def test_resnet50_head_and_optimizer():
    config = study("dtd_resnet50")
    model = models.build_model(config, prompts("dtd")[0], [], CPU)
    assert isinstance(model.encoder.fc, torch.nn.Identity)
    assert model.head.weight.shape == (47, 2048) and not model.normalize
    optimizer = build_optimizer(config, model, CPU)
    assert isinstance(optimizer, torch.optim.SGD)
    backbone, head = optimizer.param_groups
    assert (backbone["lr"], head["lr"]) == (0.001, 0.01)
    assert backbone["momentum"] == head["momentum"] == 0.9
    n_backbone = sum(p.numel() for p in backbone["params"])
    assert n_backbone == 23_508_032  # ResNet50 without its fc


def _ops(transform) -> dict:
    return {type(t).__name__: t for t in transform.transforms}


def test_transforms_of_each_recipe():
    clip_train, clip_eval = build_transforms(model_info("clip-vit-b32"))
    crop = _ops(clip_train)["RandomResizedCrop"]
    assert tuple(crop.size) == (224, 224) and crop.scale == (0.9, 1.0)
    assert crop.interpolation == InterpolationMode.BICUBIC
    assert "RandomHorizontalFlip" not in _ops(clip_train)  # WiSE-FT does not flip
    assert _ops(clip_eval)["Resize"].interpolation == InterpolationMode.BICUBIC
    assert normalization(model_info("clip-vit-b32"))[0] == (0.48145466, 0.4578275, 0.40821073)

    resnet_train, resnet_eval = build_transforms(model_info("resnet50"))
    assert isinstance(_ops(resnet_train)["RandomHorizontalFlip"], v2.RandomHorizontalFlip)
    assert list(_ops(resnet_eval)["Resize"].size) == [232]  # IMAGENET1K_V2's eval preprocessing
    assert tuple(_ops(resnet_eval)["CenterCrop"].size) == (224, 224)
    assert normalization(model_info("resnet50")) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    for transform in (clip_train, clip_eval, resnet_train, resnet_eval):  # workers hand uint8
        image = transform(v2.ToPILImage()(torch.rand(3, 300, 260)))
        assert image.dtype == torch.uint8 and image.shape == (3, 224, 224)
        assert type(image) is torch.Tensor  # a plain tensor: collated without tv_tensors


@pytest.mark.parametrize("model", ["clip-vit-b32", "resnet50"])
@pytest.mark.parametrize("kind", ["cifar", "photo", "large"])
def test_the_uint8_tensor_path_gives_the_pil_float_paths_pixels(model, kind):
    """kbench's input path (crops and resizes on uint8 tensors, normalisation on the device)
    against the PIL path it replaced (the same transforms on PIL images, float conversion and
    normalisation in the worker), on the same photo-like JPEGs with the same random crops: at
    most a few intensity levels apart."""
    import io

    from PIL import Image
    from torchvision.transforms import v2

    from kbench.jobs.loaders import Placement

    width, height, _ = KINDS[kind]
    info = model_info(model)
    mean, std = normalization(info)
    place = Placement(torch.device("cpu"), False, mean, std)
    rng = np.random.default_rng(0)
    for transform in build_transforms(info):
        ops = [t for t in transform.transforms if type(t) not in KBENCH_ONLY]
        pil_path = v2.Compose([v2.RGB(), *ops, v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
        for seed in range(3):
            encoded = io.BytesIO()
            photo(rng, width, height).save(encoded, "JPEG", quality=90)
            decoded = Image.open(encoded).convert("RGB")  # as the shards and loaders decode
            torch.manual_seed(seed)
            before = v2.Normalize(mean, std)(pil_path(decoded))
            torch.manual_seed(seed)
            after, _ = place(transform(decoded).unsqueeze(0), torch.zeros(1))
            levels = ((after[0] - before) * torch.tensor(std).view(3, 1, 1) * 255).abs()
            assert levels.mean() < 0.1 and levels.max() <= 3, (levels.mean(), levels.max())


def test_augment_none_trains_on_the_weights_own_preprocessing():
    """The study's ResNet50: no random crop, no flip; the same pixels every epoch."""
    train, evaluation = build_transforms(model_info("resnet50"), "none")
    assert [type(t).__name__ for t in train.transforms] == [
        type(t).__name__ for t in evaluation.transforms
    ]
    assert not any(type(t).__name__.startswith("Random") for t in train.transforms)
    image = v2.ToPILImage()(torch.rand(3, 300, 260))
    assert torch.equal(train(image), evaluation(image))
