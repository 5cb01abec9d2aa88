"""Model registry of the training side: name -> an `ImageClassifier` (image encoder + linear
head), so the training loop treats CLIP and ResNet alike: the four built-in names, and any
open_clip or torchvision model by its library's name (kbench.model_names).

CLIP's head starts as its zero-shot classifier, built from class names and prompt templates; a
ResNet's head (any torchvision classifier's) is a new Xavier-initialised linear layer in place
of its last one (DESIGN section 5).

Pretrained weights come from a local file when the store holds them (`kbench models stage`,
kbench.jobs.weights), through the same loading code the libraries use for their downloads;
otherwise the library downloads them. Tiny models load a staged file too (tests).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from kbench import model_names
from kbench.errors import ConfigError
from kbench.registry import CLIP_ARCH, fill_template
from kbench.spec import TrainConfig

# with them silently uses the wrong activation.


class ImageClassifier(nn.Module):
    def __init__(self, encoder: nn.Module, head: nn.Linear, normalize: bool) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.normalize = normalize  # CLIP's head expects unit-length image features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.encoder(images)
        # The head runs in fp32 even under bf16 autocast: CLIP's logits reach ~30, where bf16
        # rounds to steps of 0.125 and near-ties between classes flip.
        with torch.autocast(features.device.type, enabled=False):
            features = features.float()
            if self.normalize:
                features = F.normalize(features, dim=-1)
            return self.head(features)


def build_model(
    config: TrainConfig,
    classes: list[str],
    templates: list[str],
    device: torch.device,
    weights: Path | None = None,
) -> ImageClassifier:
    """The model of the config; `weights`: its pretrained weights, a local file."""
    builder = BUILDERS.get(config.model)
    if builder is None:  # a library's name
        parsed = model_names.parse(config.model)
        if parsed is None:
            raise ConfigError(f"unknown model {config.model!r}")
        builder = _open_clip_model if parsed.library == "open_clip" else _torchvision_model
    return builder(config, classes, templates, device, weights)


@torch.no_grad()
def zero_shot_head(clip, tokenizer, classes: list[str], templates: list[str], device) -> nn.Linear:
    """One row per class: the normalised mean of its normalised prompt embeddings, scaled by the
    model's logit scale; no bias."""
    rows = []
    for name in classes:
        tokens = tokenizer([fill_template(t, name) for t in templates]).to(device)
        embeddings = F.normalize(clip.encode_text(tokens), dim=-1)
        rows.append(F.normalize(embeddings.mean(dim=0), dim=0))
    weight = torch.stack(rows) * clip.logit_scale.exp()
    head = nn.Linear(weight.shape[1], weight.shape[0], device=device)
    head.weight.copy_(weight)
    head.bias.zero_()
    return head


def _clip_classifier(clip, classes, templates, device, arch: str = CLIP_ARCH) -> ImageClassifier:
    import open_clip

    clip = clip.to(device).eval()
    tokenizer = open_clip.get_tokenizer(arch)
    head = zero_shot_head(clip, tokenizer, classes, templates, device)
    # Only the image tower and the head are trained; the text tower is dropped here.
    return ImageClassifier(clip.visual, head, normalize=True)


def _clip_vit_b32(config, classes, templates, device, weights):
    import open_clip

    # open_clip loads a file path as it loads its own download (open_clip.load_checkpoint).
    pretrained = str(weights) if weights else "openai" if config.pretrained else None
    clip = open_clip.create_model(CLIP_ARCH, pretrained=pretrained)
    return _clip_classifier(clip, classes, templates, device)


def _clip_tiny(config, classes, templates, device, weights):
    torch.manual_seed(config.seed)  # the same random init in every process
    clip = tiny_clip()
    if config.pretrained:
        import open_clip

        open_clip.load_checkpoint(clip, str(_staged(config, weights)))
    return _clip_classifier(clip, classes, templates, device)


def _open_clip_model(config, classes, templates, device, weights):
    name = model_names.parse(config.model)
    open_clip = model_names.open_clip_module()
    torch.manual_seed(config.seed)  # a random init: the same in every process
    if not config.pretrained:
        pretrained = None
    elif weights is not None or name.weights is None:  # a file: loaded as open_clip loads one
        pretrained = str(_staged(config, weights))
    else:
        pretrained = name.weights  # open_clip downloads the tag's weights
    clip = open_clip.create_model(
        name.model,
        pretrained=pretrained,
        force_quick_gelu=model_names.open_clip_quick_gelu(name),
    )
    return _clip_classifier(clip, classes, templates, device, arch=name.model)


def tiny_clip():
    """A 2-layer CLIP: the architecture kbench ships to open_clip (open_clip:kbench-tiny-clip)."""
    return model_names.open_clip_module().create_model(model_names.TINY_CLIP)


def _staged(config: TrainConfig, weights: Path | None) -> Path:
    if weights is None:
        raise ConfigError(
            f"{config.model} has no published weights: stage a weights file with "
            f"`kbench models stage {config.model} --from FILE`, or set pretrained: false"
        )
    return weights


def _state_dict(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _resnet_classifier(backbone: nn.Module, num_classes: int, device) -> ImageClassifier:
    # A torchvision classifier's last Linear layer is its ImageNet head (ResNet's fc,
    # ConvNeXt's classifier[2], ViT's heads.head): the identity now, a new head after it.
    last = [name for name, m in backbone.named_modules() if isinstance(m, nn.Linear)][-1]
    layer = backbone.get_submodule(last)
    assert isinstance(layer, nn.Linear)
    features = layer.in_features
    backbone.set_submodule(last, nn.Identity())
    head = nn.Linear(features, num_classes)
    nn.init.xavier_uniform_(head.weight)
    nn.init.zeros_(head.bias)
    return ImageClassifier(backbone, head, normalize=False).to(device)


def _resnet50(config, classes, templates, device, weights):
    from torchvision.models import ResNet50_Weights, resnet50

    if weights is not None:  # the file torchvision itself downloads, loaded as it loads it
        backbone = resnet50()
        backbone.load_state_dict(_state_dict(weights))
    else:
        backbone = resnet50(weights=ResNet50_Weights.IMAGENET1K_V2 if config.pretrained else None)
    return _resnet_classifier(backbone, len(classes), device)


def _resnet_tiny(config, classes, templates, device, weights):
    torch.manual_seed(config.seed)
    backbone = tiny_resnet()
    if config.pretrained:
        backbone.load_state_dict(_state_dict(_staged(config, weights)))
    return _resnet_classifier(backbone, len(classes), device)


def _torchvision_model(config, classes, templates, device, weights):
    from torchvision import models

    name = model_names.parse(config.model)
    torch.manual_seed(config.seed)
    if config.pretrained and weights is None:  # torchvision downloads its published ones
        backbone = models.get_model(name.model, weights=model_names.torchvision_weights(name))
    else:
        backbone = models.get_model(name.model)
        if config.pretrained:  # a staged file, as torchvision saves and loads one
            backbone.load_state_dict(_state_dict(weights))
    return _resnet_classifier(backbone, len(classes), device)


def tiny_resnet():
    """A 4-block ResNet of torchvision's own classes."""
    from torchvision.models.resnet import BasicBlock, ResNet

    return ResNet(BasicBlock, [1, 1, 1, 1])


BUILDERS: dict[str, Callable[..., ImageClassifier]] = {
    "clip-vit-b32": _clip_vit_b32,
    "resnet50": _resnet50,
    "clip-tiny": _clip_tiny,
    "resnet-tiny": _resnet_tiny,
}
