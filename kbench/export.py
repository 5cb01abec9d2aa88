"""`kbench export`: a finished pair's model at the epoch its run chose, as a safetensors file and a
small card (model and library versions, the preprocessing to use, the classes in order, the
metrics with their interval, the config) with the few lines that load it with the model's own
library. Torch-free: it copies what the job kept (chosen.safetensors, checked against the
SHA-256 its chosen.json records) and writes the card."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from kbench import records
from kbench.errors import ConfigError, StoreError
from kbench.model_names import parse
from kbench.registry import model_info
from kbench.runs import Run, read_pair
from kbench.stats import accuracy_interval
from kbench.storage import Store, read_json

WEIGHTS, CHOSEN = "chosen.safetensors", "chosen.json"  # as kbench.jobs.checkpoint writes them

# The model as its library builds it, empty: the weights come from the exported file.
CONSTRUCT = {
    "clip-vit-b32": ("import open_clip", 'open_clip.create_model("ViT-B-32-quickgelu")'),
    "clip-tiny": ("from kbench.jobs.models import tiny_clip", "tiny_clip()"),
    "resnet50": ("import torchvision", "torchvision.models.resnet50()"),
    "resnet-tiny": ("from kbench.jobs.models import tiny_resnet", "tiny_resnet()"),
}


def export_pair(store: Store, run: Run, pair: str, out_dir: Path) -> list[Path]:
    found = read_pair(store, run.run_id, pair)
    if found.result is None:
        raise ConfigError(f"{pair} of run {run.run_id} has no finished result: nothing to export")
    key = lambda name: records.pair_key(run.run_id, pair, name)  # noqa: E731
    chosen = read_json(store, key(CHOSEN), default=None)
    if not isinstance(chosen, dict) or not isinstance(chosen.get("classes"), list):
        raise ConfigError(
            f"{pair} of run {run.run_id} kept no chosen weights (trained by an older kbench, "
            "or a sweep's trial): nothing to export"
        )
    data = store.read(key(WEIGHTS))
    if hashlib.sha256(data).hexdigest() != chosen.get("sha256"):
        raise StoreError(f"{key(WEIGHTS)} does not match the SHA-256 {key(CHOSEN)} records")
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / f"{pair}.safetensors"
    weights.write_bytes(data)
    card = make_card(store, run, pair, found, chosen)
    card_json = out_dir / f"{pair}.card.json"
    card_json.write_text(json.dumps(card, indent=2) + "\n")
    card_md = out_dir / f"{pair}.md"
    card_md.write_text(card_markdown(card, weights.name))
    return [weights, card_json, card_md]


def make_card(store: Store, run: Run, pair: str, found: Any, chosen: dict) -> dict[str, Any]:
    config, result = found.config, found.result
    info = model_info(config.model)
    epoch = chosen.get("epoch")
    record = next((e for e in found.epochs if e["epoch"] == epoch), None)
    interval = None
    try:
        kept = records.decode_predictions(
            store.read(records.pair_key(run.run_id, pair, "predictions.npz"))
        )
        if f"epoch_{epoch}" in kept:
            interval = list(accuracy_interval(kept[f"epoch_{epoch}"]))
    except (KeyError, ValueError):
        pass
    return {
        "pair": pair,
        "run": run.run_id,
        "model": config.model,
        "family": info.family,
        "method": config.method,
        "epoch": epoch,
        "selection": result.get("selection"),
        "versions": {**(result.get("environment") or {}), "kbench": run.kbench_version},
        "preprocessing": {
            "resize": info.resize,
            "squash": info.squash,  # the whole image to a square, instead of the shorter side
            "interpolation": info.interpolation,
            "crop": info.image_size,
            "mean": list(info.mean),
            "std": list(info.std),
            "normalize_features": info.family == "clip",  # the head takes unit-length features
        },
        "classes": chosen["classes"],
        "metrics": {
            "split": record["split"] if record else None,
            "top1": record["top1"] if record else None,
            "top1_interval_95": interval,
            "headline_metric": result["headline_metric"],
            "headline": record["headline"] if record else None,
            "wise_ft_alpha_chosen": (result.get("selection") or {}).get("alpha"),
        },
        "config": config.to_dict(),
        "load": loading_code(config.model, info.family),
    }


def loading_code(model: str, family: str) -> str:
    """The lines that rebuild the classifier with the model's library and load the file."""
    parsed = parse(model)
    if parsed is None:
        imports, build = CONSTRUCT[model]
    elif parsed.library == "open_clip":
        imports, build = "import open_clip", f"open_clip.create_model({parsed.model!r})"
    else:
        imports, build = "import torchvision", f"torchvision.models.get_model({parsed.model!r})"
    if family == "clip":
        encoder = f"encoder = {build}.visual  # the image tower"
        features = "torch.nn.functional.normalize(encoder(x), dim=-1)"
    else:
        encoder = (
            f"encoder = {build}\n"
            "linear = [n for n, m in encoder.named_modules() if isinstance(m, torch.nn.Linear)]\n"
            "encoder.set_submodule(linear[-1], torch.nn.Identity())  # its ImageNet head"
        )
        features = "encoder(x)"
    return f"""import torch
from safetensors.torch import load_file
{imports}

state = load_file(PATH)
{encoder}
encoder.load_state_dict({{k[8:]: v for k, v in state.items() if k.startswith("encoder.")}})
head = torch.nn.Linear(state["head.weight"].shape[1], state["head.weight"].shape[0])
head.load_state_dict({{"weight": state["head.weight"], "bias": state["head.bias"]}})
encoder.eval()


def classify(x):  # x: a batch preprocessed as the card says
    with torch.no_grad():
        return head({features}).argmax(dim=1)
"""


def card_markdown(card: dict[str, Any], weights: str) -> str:
    p, m = card["preprocessing"], card["metrics"]
    interval = m["top1_interval_95"]
    ci = f" (95% CI {100 * interval[0]:.2f} to {100 * interval[1]:.2f})" if interval else ""
    top1 = f"{100 * m['top1']:.2f}%{ci}" if m["top1"] is not None else "unknown"
    alpha = m["wise_ft_alpha_chosen"]
    wise = ""
    if alpha is not None and alpha != 1.0:
        wise = (
            f"\nWiSE-FT's chosen alpha ({alpha:g}) is not in this file: it holds the fine-tuned "
            "weights (alpha 1).\n"
        )
    resize = (
        f"the whole image to {p['resize']}x{p['resize']}"
        if p["squash"]
        else f"the shorter side to {p['resize']}"
    )
    return f"""# {card["pair"]} (run {card["run"]})

{card["model"]} ({card["method"]}), the weights of epoch {card["epoch"]}, chosen by
{(card["selection"] or {}).get("select_on", "?")}; test top-1 {top1} on the {m["split"]} split.
{wise}
Preprocessing: resize {resize} ({p["interpolation"]}), centre-crop {p["crop"]}, scale to [0, 1],
normalise with mean {p["mean"]} and std {p["std"]}.

Classes, in the order of the head's outputs: {", ".join(card["classes"])}.

Load it (`PATH` = "{weights}"):

```python
{card["load"].replace("PATH", repr(weights))}```

Versions: {", ".join(f"{k} {v}" for k, v in card["versions"].items() if v)}.
The config it trained with, its metrics and this card as data: the .card.json beside it.
"""
