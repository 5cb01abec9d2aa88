"""Pretrained weights from the store: staged once (`kbench models stage`), loaded by the pod's
trainer through the node cache with the network off, checked by checksum, required by
`submit` before anything is created; and the real models' loading code taking the same path
(a weights file to a model) without a download."""

from __future__ import annotations

import pytest
import torch
from support.builders import marked, synthetic_config
from support.processes import OFFLINE

from kbench.jobs.models import build_model


@pytest.mark.parametrize("name", ["clip-vit-b32", "resnet50"])
def test_the_real_models_load_a_weights_file_as_their_libraries_do_without_a_download(
    name, tmp_path, monkeypatch
):
    """A random-init model saved in the published files' format (open_clip's state dict of the
    whole CLIP; torchvision's of ResNet50), loaded by build_model through the libraries' own
    loaders, with every download function made to fail."""
    import open_clip
    import torch.hub
    from torchvision.models import resnet50

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", no_download)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)
    saved = open_clip.create_model("ViT-B-32-quickgelu") if name == "clip-vit-b32" else resnet50()
    path = tmp_path / ("open_clip_pytorch_model.bin" if name == "clip-vit-b32" else "r50.pth")
    torch.save(marked(saved, 0.02), path)
    del saved
    model = build_model(synthetic_config(name), ["a", "b"], ["{}"], torch.device("cpu"), path)
    assert all(torch.all(p == 0.02) for p in model.encoder.parameters())


def test_a_tiny_model_marked_pretrained_without_staged_weights_says_what_to_do():
    from kbench.errors import ConfigError

    with pytest.raises(ConfigError, match="kbench models stage resnet-tiny --from FILE"):
        build_model(synthetic_config("resnet-tiny"), ["a", "b"], ["{}"], torch.device("cpu"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["clip-vit-b3"], "unknown model 'clip-vit-b3'"),
        (["clip-tiny"], "clip-tiny has no published weights to download"),
        (["resnet-tiny", "--from", "nowhere.pt"], "--from nowhere.pt: no such file"),
        (["clip-tiny", "resnet-tiny", "--from", "x.pt"], "--from stages one file: name one model"),
    ],
)
def test_models_stage_refuses_bad_input_in_one_line(args, message, tmp_path, kbench):
    result = kbench("models", "stage", *args, "--store", str(tmp_path / "store"))
    assert result.exit_code == 2, result.output
    (line,) = result.output.splitlines()
    assert message in line
    assert not (tmp_path / "store" / "models").exists()  # nothing half-staged
