"""Training-step throughput on one GPU: a plain fp32 eager loop (as WiSE-FT trains) against
kbench's step (`kbench.jobs.step.train_step`: bf16 autocast, fused optimizer, TF32,
channels_last for ResNet, optionally torch.compile), same random-init model, the study's
per-GPU batch (4 GPUs: CLIP 512 / 4 = 128, ResNet50 256 / 4 = 64), synthetic GPU-resident data.

    python bench/train_step.py                      # on a GPU; about a minute on an H100
    python bench/train_step.py --compile            # kbench's step with torch.compile too
    python bench/train_step.py --device cpu --tiny  # checks the script itself, no GPU needed

Prints images/s of both, their ratio and kbench's model-FLOPs utilisation (MFU) against the
GPU's dense bf16 peak; writes the table as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from kbench.jobs.models import build_model
from kbench.jobs.optim import build_optimizer, build_scheduler
from kbench.jobs.step import setup_device, train_step, uses_channels_last
from kbench.registry import model_info
from kbench.spec import TrainConfig, load_recipe

STUDY = [("clip-vit-b32", 128), ("resnet50", 64)]
TINY = [("clip-tiny", 8), ("resnet-tiny", 8)]
# Dense bf16 peaks (FLOP/s) by device name; the first match wins.
PEAKS = [
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
]


def config_for(model: str, kbench: bool, compile_: bool) -> TrainConfig:
    recipe = {**load_recipe(model), "pretrained": False}
    if not kbench:
        recipe.update(precision="fp32", channels_last=False)
    return TrainConfig.from_dict(
        {**recipe, "dataset": "synthetic", "model": model, "compile": kbench and compile_}
    )


def plain_step(model, images, labels, optimizer, scheduler, config) -> torch.Tensor:
    """What WiSE-FT's loop does per batch: fp32, eager, a for-each optimizer."""
    loss = F.cross_entropy(model(images), labels)
    optimizer.zero_grad()
    loss.backward()
    if config.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()
    scheduler.step()
    return loss.detach()


def measure(model_name: str, batch: int, kbench: bool, args, device) -> dict:
    torch.manual_seed(0)
    config = config_for(model_name, kbench, args.compile)
    info = model_info(model_name)
    classes = [f"class {i}" for i in range(10)]
    model = build_model(config, classes, ["a photo of a {}."], device).train()
    size = info.image_size
    images = torch.randn(batch, 3, size, size, device=device)
    labels = torch.randint(0, len(classes), (batch,), device=device)

    if kbench:
        setup_device(device)
        if uses_channels_last(config, info.family, device):
            model = model.to(memory_format=torch.channels_last)
            images = images.contiguous(memory_format=torch.channels_last)
        optimizer = build_optimizer(config, model, device)
        step_model = torch.compile(model) if config.compile else model
        step = lambda: train_step(step_model, images, labels, optimizer, scheduler, config, device)  # noqa: E731
    else:
        torch.backends.cuda.matmul.allow_tf32 = False  # torch's defaults
        torch.backends.cudnn.benchmark = False
        optimizer = (torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.SGD)(
            model.parameters(), lr=config.lr
        )
        step = lambda: plain_step(model, images, labels, optimizer, scheduler, config)  # noqa: E731
    scheduler = build_scheduler(config, optimizer, total_steps=args.warmup + args.steps + 1)

    for _ in range(args.warmup):  # compile, cuDNN autotuning, allocator warm-up
        step()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    synchronize(device)
    seconds = time.perf_counter() - started
    assert torch.isfinite(loss), f"{model_name}: loss is {loss}"
    return {
        "model": model_name,
        "variant": "kbench" if kbench else "fp32 eager",
        "batch": batch,
        "images_per_s": args.steps * batch / seconds,
        "flops_per_image": train_flops(model, images[:2]) // 2,
    }


def train_flops(model, images) -> int:
    """Forward + backward FLOPs of these images, counted by PyTorch's FLOP counter."""
    with FlopCounterMode(display=False) as counter:
        model(images).sum().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_flops(device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAKS if key in name), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--compile", action="store_true", help="torch.compile kbench's step")
    parser.add_argument("--tiny", action="store_true", help="tiny models (a CPU check)")
    parser.add_argument("--out", default="bench/results/train_step.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    peak = peak_flops(device)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({platform.machine()})"
    )

    rows = []
    for model_name, batch in TINY if args.tiny else STUDY:
        plain = measure(model_name, batch, kbench=False, args=args, device=device)
        fast = measure(model_name, batch, kbench=True, args=args, device=device)
        fast["speedup"] = fast["images_per_s"] / plain["images_per_s"]
        for row in (plain, fast):
            achieved = row["images_per_s"] * row["flops_per_image"]
            row["mfu"] = achieved / peak if peak else None
        rows += [plain, fast]
        if device.type == "cuda":
            torch.cuda.empty_cache()

    print(f"device: {name}; compile: {args.compile}; timed steps: {args.steps}")
    print(f"{'model':<14} {'variant':<11} {'batch':>5} {'images/s':>10} {'ratio':>6} {'MFU':>6}")
    for row in rows:
        ratio = f"{row['speedup']:.2f}" if "speedup" in row else ""
        mfu = f"{100 * row['mfu']:.1f}%" if row["mfu"] is not None else "-"
        print(
            f"{row['model']:<14} {row['variant']:<11} {row['batch']:>5} "
            f"{row['images_per_s']:>10.1f} {ratio:>6} {mfu:>6}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": name, "compile": args.compile, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
