"""Training throughput on one GPU: a plain fp32 eager loop (as WiSE-FT trains) against kbench's
step (`kbench.jobs.step.train_step`: bf16 autocast, fused optimizer, TF32, channels_last for
ResNet), with and without torch.compile, at the study's batch on one GPU (CLIP 512, ResNet50
256), random-init models, timed with CUDA events over `--steps` steps.

Two feeds: synthetic batches already on the GPU (the step alone), and with `--end-to-end` the
real input path as well: photo-like JPEGs (bench/photos.py) staged as kbench's shards, read by
the trainer's own DataLoader (`build_loaders`, its default workers: CPUs - 1) and transforms.

    python bench/train_step.py                         # on a GPU: a few minutes on an H100
    python bench/train_step.py --compile --end-to-end  # every variant and the input path
    python bench/train_step.py --device cpu --tiny --quick --end-to-end   # a check, no GPU

Prints images/s, the ratio to fp32 eager and the model-FLOPs utilisation (MFU, from the FLOPs
PyTorch's counter finds in one step: ViT-B/32 ~26 GFLOP per image) against the GPU's dense bf16
peak; `--json` prints one JSON object instead.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Subset
from torch.utils.flop_counter import FlopCounterMode
from torchvision.datasets import ImageFolder

from kbench.jobs.datasets import Splits, Transformed, build_transforms, normalization
from kbench.jobs.distributed import Job  # noqa: E402
from kbench.jobs.loaders import Placement, build_loaders
from kbench.jobs.models import build_model
from kbench.jobs.optim import build_optimizer, build_scheduler
from kbench.jobs.shards import ShardDataset, fetch
from kbench.jobs.step import setup_device, train_step, uses_channels_last
from kbench.registry import model_info
from kbench.spec import TrainConfig, load_recipe
from kbench.staging.datasets import stage
from kbench.storage import LocalStore

sys.path.insert(0, str(Path(__file__).parent))
from photos import write_images  # noqa: E402

STUDY = [("clip-vit-b32", 512), ("resnet50", 256)]
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
CLASSES = 10


def config_for(model: str, batch: int, variant: str) -> TrainConfig:
    recipe = {**load_recipe(model), "pretrained": False, "batch_size": batch, "workers": None}
    if variant == "fp32 eager":
        recipe.update(precision="fp32", channels_last=False)
    return TrainConfig.from_dict(
        {**recipe, "dataset": "synthetic", "model": model, "compile": variant == "kbench+compile"}
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


def measure(model_name: str, batch: int, variant: str, feed, args, device) -> dict:
    """Images/s of one variant; `feed` is None (one synthetic batch on the device) or the
    staged training set that the trainer's DataLoader reads."""
    torch.manual_seed(0)
    config = config_for(model_name, batch, variant)
    info = model_info(model_name)
    classes = [f"class {i}" for i in range(CLASSES)]
    model = build_model(config, classes, ["a photo of a {}."], device).train()
    channels_last = variant != "fp32 eager" and uses_channels_last(config, info.family, device)
    place = Placement(device, channels_last, *normalization(info))
    if place.channels_last:
        model = model.to(memory_format=torch.channels_last)
    size = info.image_size
    batches = (
        synthetic_batches(batch, size, place)
        if feed is None
        else real_batches(config, feed, device, place)
    )

    if variant == "fp32 eager":
        torch.backends.cuda.matmul.allow_tf32 = False  # torch's defaults
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = False
        optimizer = (torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.SGD)(
            model.parameters(), lr=config.lr
        )
        step_model = model
    else:
        setup_device(device)
        optimizer = build_optimizer(config, model, device)
        step_model = torch.compile(model) if config.compile else model
    scheduler = build_scheduler(config, optimizer, total_steps=args.warmup + args.steps + 1)

    def step():
        images, labels = next(batches)
        if variant == "fp32 eager":
            return plain_step(step_model, images, labels, optimizer, scheduler, config)
        return train_step(step_model, images, labels, optimizer, scheduler, config, device)

    for _ in range(args.warmup):  # compile, cuDNN autotuning, allocator and workers warm-up
        step()
    seconds, loss = timed(step, args.steps, device)
    assert torch.isfinite(loss), f"{model_name} {variant}: loss is {loss}"
    images, _ = next(batches)
    return {
        "model": model_name,
        "variant": variant,
        "feed": "synthetic on device" if feed is None else "staged JPEG shards",
        "batch": batch,
        "steps": args.steps,
        "images_per_s": args.steps * batch / seconds,
        "ms_per_step": 1000 * seconds / args.steps,
        "flops_per_image": train_flops(model, images[:2]) // 2,
    }


def timed(step, steps: int, device) -> tuple[float, torch.Tensor]:
    """Seconds of `steps` steps: CUDA events on a GPU (what the device did, start to end),
    the wall clock on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(steps):
            loss = step()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1000, loss
    started = time.perf_counter()
    for _ in range(steps):
        loss = step()
    return time.perf_counter() - started, loss


def synthetic_batches(batch: int, size: int, place: Placement):
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    labels = torch.randint(0, CLASSES, (batch,))
    images, labels = place(images, labels)
    while True:
        yield images, labels


def real_batches(config: TrainConfig, feed, device, place: Placement):
    """The trainer's own training loader over the staged images, epoch after epoch."""
    train_tf, eval_tf = build_transforms(model_info(config.model), config.augment)
    splits = Splits(
        train=Transformed(feed, train_tf),
        eval=Transformed(feed, eval_tf),
        eval_split="train",
        classes=[f"class {i}" for i in range(CLASSES)],
        templates=["{}"],
        groups=(),
    )
    loaders = build_loaders(config, splits, Job(None, "bench", "bench", 0, 1, device))
    loader, batches = loaders.train, loaders.batches
    epoch = 0
    while True:
        batches.set_epoch(epoch)
        for images, labels in loader:
            yield place(images, labels)
        epoch += 1


def staged_photos(folder: Path, count: int, repeat: int) -> Subset:
    """`count` photo-like 500x375 JPEGs staged as kbench shards and read back as the trainer
    reads them; each image `repeat` times, so an epoch is long enough to time."""
    write_images(folder / "images", count, "photo", CLASSES, processes=os.cpu_count() or 1)
    store = LocalStore(folder / "store")
    manifest = stage(
        store,
        "bench",
        {"train": ImageFolder(str(folder / "images"))},
        classes=[f"class{i}" for i in range(CLASSES)],
        templates=["{}"],
        train_split="train",
        groups=(),
        source="bench",
    )["manifest"]
    fetch(store, manifest, folder / "cache", ["train"])
    shards = [folder / "cache" / Path(s["key"]).name for s in manifest["splits"]["train"]["shards"]]
    dataset = ShardDataset(shards)
    return Subset(dataset, list(range(len(dataset))) * repeat)


def train_flops(model, images) -> int:
    """Forward + backward FLOPs of these images, counted by PyTorch's FLOP counter."""
    with FlopCounterMode(display=False) as counter:
        model(images).sum().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def peak_flops(device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAKS if key in name), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=100, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    parser.add_argument("--compile", action="store_true", help="also kbench's step compiled")
    parser.add_argument("--end-to-end", action="store_true", help="also fed by the DataLoader")
    parser.add_argument("--images", type=int, default=1024, help="distinct staged JPEGs")
    parser.add_argument("--tiny", action="store_true", help="tiny models (a CPU check)")
    parser.add_argument("--quick", action="store_true", help="10 timed steps, 3 warm-up")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--out", default="bench/results/train_step.json")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.warmup, args.images = 10, 3, min(args.images, 256)
    device = torch.device(args.device)
    peak = peak_flops(device)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({platform.machine()})"
    )
    variants = ["fp32 eager", "kbench"] + (["kbench+compile"] if args.compile else [])

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        feed = None
        for model_name, batch in TINY if args.tiny else STUDY:
            for variant in variants:
                rows.append(measure(model_name, batch, variant, None, args, device))
            if args.end_to_end:
                if feed is None:  # enough images that one epoch outlasts the timed steps
                    steps = args.warmup + args.steps
                    repeat = -(-steps * max(b for _, b in STUDY) // args.images) + 1
                    feed = staged_photos(Path(tmp), args.images, repeat)
                rows.append(measure(model_name, batch, "kbench", feed, args, device))
            if device.type == "cuda":
                torch.cuda.empty_cache()
    for row in rows:
        base = next(r for r in rows if r["model"] == row["model"])  # fp32 eager, synthetic
        row["ratio"] = row["images_per_s"] / base["images_per_s"]
        row["mfu"] = row["images_per_s"] * row["flops_per_image"] / peak if peak else None
    result = {
        "device": name,
        "torch": torch.__version__,
        "cpus": len(os.sched_getaffinity(0)),
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    if args.json:
        print(json.dumps(result))
        return
    print(f"device: {name}; torch {torch.__version__}; timed steps: {args.steps}")
    header = ("model", "variant", "feed", "batch", "images/s", "ratio", "MFU")
    print("{:<14} {:<15} {:<20} {:>5} {:>9} {:>6} {:>6}".format(*header))
    for row in rows:
        mfu = f"{100 * row['mfu']:.1f}%" if row["mfu"] is not None else "-"
        print(
            f"{row['model']:<14} {row['variant']:<15} {row['feed']:<20} {row['batch']:>5} "
            f"{row['images_per_s']:>9.1f} {row['ratio']:>6.2f} {mfu:>6}"
        )


if __name__ == "__main__":
    main()
