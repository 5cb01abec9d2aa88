"""Input pipeline: CPU-milliseconds per image of the work a DataLoader worker does, for the
study's kinds of image (bench/photos.py: 32x32 and 96x96 PNGs like CIFAR and STL10, FMoW's
224x224 PNGs, 500x375 JPEGs like Food101's, 1280x960 JPEGs like FGVCAircraft's), with the CLIP
and ResNet50 training transforms and CLIP's evaluation transform.

Baseline: torchvision's ImageFolder reading loose files with PIL, the transforms on PIL images,
float conversion and normalisation in the worker, float32 batches (as torchvision's reference
scripts and WiSE-FT load data). kbench: its staged tar shards (JPEGs decoded by libjpeg-turbo
straight to uint8 tensors), the same transforms on uint8 tensors, uint8 batches; the
conversion and normalisation run on the GPU, not in the worker. The large JPEGs are measured
twice: staged as the original files, and staged at a short side of 448 (`kbench data stage
--max-short-side 448`, an option with a fidelity trade-off: kbench.staging.datasets).

CPU time (process time of the work itself, in one process: robust on a shared machine), not
wall time. The projection to a 16-core pod assumes 15 workers busy, one core for the trainer.

    python bench/input_pipeline.py            # 64 images of each kind
    python bench/input_pipeline.py --quick    # 16 of each: under 3 minutes on 2 cores
    python bench/input_pipeline.py --json     # one JSON object

Writes bench/results/input_pipeline.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import default_collate
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from kbench.jobs.datasets import Transformed, build_transforms, normalization
from kbench.jobs.shards import ShardDataset, fetch
from kbench.registry import model_info
from kbench.storage import LocalStore

sys.path.insert(0, str(Path(__file__).parent))
from photos import KINDS, stage_folder, write_images  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRANSFORMS = [("clip train", "clip-vit-b32", 0), ("resnet train", "resnet50", 0)]
TRANSFORMS += [("clip eval", "clip-vit-b32", 1)]
BATCH = 32
REPEATS = 4
POD_WORKERS = 15  # a 16-core pod: one core for the training process


def baseline(kbench_transform, model: str) -> v2.Compose:
    """The same recipe as torchvision users write it: on PIL images, float32 out, normalised."""
    own = (v2.ToImage, v2.RGB, v2.ToDtype, v2.ToPureTensor)
    ops = [t for t in kbench_transform.transforms if type(t) not in own]
    mean, std = normalization(model_info(model))
    return v2.Compose(
        [
            v2.RGB(),
            *ops,
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean, std),
        ]
    )


def staged(folder: Path, cache: Path, max_short_side: int | None = None) -> ShardDataset:
    """The folder's images staged as kbench stages them, and read back as a pod reads them."""
    store = LocalStore(cache / "store")
    manifest = stage_folder(store, folder, max_short_side)
    fetch(store, manifest, cache / "shards", ["train"])
    keys = manifest["splits"]["train"]["shards"]
    return ShardDataset([cache / "shards" / Path(s["key"]).name for s in keys])


def cpu_ms_per_pass(dataset) -> float:
    """What a worker spends per image in one pass: read, decode, transform, collate into
    batches."""
    started = time.process_time()
    for first in range(0, len(dataset), BATCH):
        default_collate([dataset[i] for i in range(first, min(first + BATCH, len(dataset)))])
    return 1000 * (time.process_time() - started) / len(dataset)


def measure(images: str, name: str, folder: Path, shards, model: str, which: int) -> dict:
    """One case: the baseline on the loose files against kbench on its shards, in turns, the
    fastest of REPEATS passes of each (the page cache warm after the first; this machine's
    neighbours come and go, so each side gets its quiet moment)."""
    transform = build_transforms(model_info(model))[which]
    loose = ImageFolder(str(folder), transform=baseline(transform, model))
    ours = Transformed(shards, transform)
    passes = [(cpu_ms_per_pass(loose), cpu_ms_per_pass(ours)) for _ in range(REPEATS)]
    base_ms, ours_ms = (min(side) for side in zip(*passes, strict=True))
    return {
        "images": images,
        "transform": name,
        "baseline_cpu_ms": round(base_ms, 3),
        "kbench_cpu_ms": round(ours_ms, 3),
        "ratio": round(base_ms / ours_ms, 2),
        "projected_images_per_s_16_cores": round(POD_WORKERS * 1000 / ours_ms),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64, help="images of each kind")
    parser.add_argument("--quick", action="store_true", help="16 images of each kind")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    count = 16 if args.quick else args.images
    torch.set_num_threads(1)  # as in a DataLoader worker

    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind, (width, height, fmt) in KINDS.items():
            folder = Path(tmp) / kind
            write_images(folder, count, kind, processes=os.cpu_count() or 1)
            # Large JPEGs twice: the original files, and staged at a short side of 448 (twice
            # the crop; `kbench data stage --max-short-side 448`).
            for short_side in (None, 448) if kind == "large" else (None,):
                cache = Path(tmp) / f"{kind}-{short_side}-cache"
                shards = staged(folder, cache, short_side)
                images = f"{kind} {width}x{height} {fmt}"
                images += f", staged at short side {short_side}" if short_side else ""
                for name, model, which in TRANSFORMS:
                    cases.append(measure(images, name, folder, shards, model, which))
    result = {"images_per_kind": count, "batch": BATCH, "cases": cases}
    out = ROOT / "bench/results/input_pipeline.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    if args.json:
        print(json.dumps(result))
        return
    print(f"{count} images of each kind; CPU-ms per image (read, decode, transform, collate)")
    header = ("images", "transform", "baseline", "kbench", "ratio", "16-core pod img/s")
    print("{:<50} {:<13} {:>9} {:>8} {:>6} {:>18}".format(*header))
    for c in cases:
        print(
            f"{c['images']:<50} {c['transform']:<13} {c['baseline_cpu_ms']:>9.2f} "
            f"{c['kbench_cpu_ms']:>8.2f} {c['ratio']:>6.2f} "
            f"{c['projected_images_per_s_16_cores']:>18}"
        )


if __name__ == "__main__":
    main()
