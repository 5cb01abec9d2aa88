"""Any open_clip or torchvision model by its library's name: parsed without imports, checked
against the installed libraries at submit (typos refused with the close names), trained by its
family's recipe with its own preprocessing and head, staged for pods without internet, and
carried into pair names, store keys and Kubernetes labels through a slug."""

from __future__ import annotations

import re
import subprocess
import sys
from urllib.parse import urlparse

import torch
from support.processes import network_off

from kbench import model_names, records
from kbench.jobs.models import build_model
from kbench.registry import model_slug
from kbench.runs import Run, create_run
from kbench.spec import parse_grid
from kbench.storage import open_store, read_json

TINY_CLIP = "open_clip:kbench-tiny-clip"  # shipped to open_clip by kbench: a 2-layer CLIP

MOBILENET = "torchvision:mobilenet_v3_small"  # torchvision's smallest classifier (2.5M)

GRID = f"""
datasets: [synthetic]
models:
  {TINY_CLIP}: {{pretrained: true}}
  {MOBILENET}: {{pretrained: true}}
defaults: {{epochs: 1, train_limit: 64, eval_limit: 32, batch_size: 32}}
"""


def test_library_models_staged_trained_offline_and_compared(s3_env, tmp_path, scratch, kbench):
    """Both by name through the pod's path: weights staged with --from, the trainer offline
    loading them from the store, a report comparing the two."""
    from torchvision import models

    from kbench.jobs.weights import local_weights

    uri = s3_env.uri(f"library/{tmp_path.name}")
    store = open_store(uri)
    # A random init of each, saved as its library saves weights (a whole CLIP, text tower
    # included; a whole classifier), staged by name.
    torch.manual_seed(7)
    weights = {
        TINY_CLIP: model_names.open_clip_module().create_model("kbench-tiny-clip").state_dict(),
        MOBILENET: models.get_model("mobilenet_v3_small").state_dict(),
    }
    for name, state in weights.items():
        path = tmp_path / f"{model_slug(name)}.pt"
        torch.save(state, path)
        staged = kbench("models", "stage", name, "--from", str(path), "--store", uri)
        assert staged.exit_code == 0, staged.output
    listed = kbench("models", "list", "--store", uri).output
    assert TINY_CLIP in listed and MOBILENET in listed
    assert records.weights_key(MOBILENET) == "models/torchvision-mobilenet_v3_small/manifest.json"
    assert read_json(store, records.weights_key(MOBILENET))["model"] == MOBILENET

    run = parse_grid(GRID, "g.yaml", default_name="g")
    create_run(store, Run.new("lib", run, "local"), run.pairs)
    env = {**network_off(tmp_path, urlparse(s3_env.endpoint).port), "TMPDIR": str(scratch)}
    for pair in run.pairs:  # the pod's trainer, as the Job runs it, without internet
        command = [sys.executable, "-m", "kbench.jobs.train", "--store", uri, "--run-id", "lib"]
        done = subprocess.run(
            [*command, "--pair", pair.name], env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-3000:]
        result = read_json(store, records.pair_key("lib", pair.name, records.RESULT))
        sha256 = read_json(store, records.weights_key(pair.config.model))["sha256"]
        assert result["epochs"] == 1
        assert result["start"] == f"staged file {sha256[:16]}-{model_slug(pair.config.model)}.pt"
        # What the pod started from: the staged weights, bit for bit.
        model = build_model(
            pair.config, ["a"], ["{}"], torch.device("cpu"), local_weights(store, pair.config)
        )
        staged = weights[pair.config.model]
        prefix = "visual." if pair.config.model == TINY_CLIP else ""
        for key, value in model.encoder.state_dict().items():
            if prefix + key in staged:  # the replaced head is in neither
                assert torch.equal(value, staged[prefix + key]), key
    cached = sorted(p.parent.name for p in (scratch / "kbench-models").glob("*/*"))
    assert cached == ["open_clip-kbench-tiny-clip", "torchvision-mobilenet_v3_small"]

    out = tmp_path / "report"
    collected = kbench("collect", "--run", "lib", "--store", uri, "--out-dir", str(out))
    assert collected.exit_code == 0, collected.output
    report = (out / "report.md").read_text()
    assert f"Compared: CLIP is {TINY_CLIP}; ResNet is {MOBILENET}" in report
    assert f"| staged file {sha256[:16]}-" in report  # the pairs' "started from"
    assert re.search(
        r"synthetic: CLIP - ResNet top-1 [+-]\d+\.\d+ points \(95% CI", collected.output
    )
