"""Input pipeline: decoded and augmented images per second from kbench's staged tar shards
against torchvision's ImageFolder + PIL reading the same images as loose JPEG files, with the
same transforms (ResNet50's training augmentation) and the same DataLoader workers.

    python bench/input_pipeline.py                  # 2,000 JPEGs of 320x320, 2 workers
    python bench/input_pipeline.py --images 500

Prints both rates and their ratio; writes bench/results/input_pipeline.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

from kbench.jobs.datasets import Transformed, build_transforms
from kbench.jobs.shards import ShardDataset, fetch
from kbench.jobs.staging import stage
from kbench.registry import model_info
from kbench.storage import LocalStore

ROOT = Path(__file__).resolve().parents[1]


def make_images(folder: Path, count: int, size: int, height: int | None = None) -> None:
    """`count` JPEGs of `size` x `size` (or `size` wide, `height` high) in 10 class folders."""
    width, height = size, height or size
    rng = np.random.default_rng(0)
    for i in range(count):
        target = folder / f"class{i % 10}" / f"{i:05d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        # Smooth random fields compress like photos, unlike white noise.
        small = rng.integers(0, 255, (height // 16, width // 16, 3), dtype=np.uint8)
        Image.fromarray(small).resize((width, height), Image.BICUBIC).save(target, quality=90)


def stage_folder(store, folder: Path) -> dict:
    """The folder's images staged as the split `train`; returns the manifest."""
    return stage(
        store,
        "bench",
        {"train": ImageFolder(str(folder))},
        classes=[f"class{i}" for i in range(10)],
        templates=["{}"],
        train_split="train",
        groups=(),
        source="bench",
    )["manifest"]


def rate(dataset, workers: int, batch: int) -> float:
    loader = DataLoader(
        dataset, batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=False
    )
    started, seen = time.perf_counter(), 0
    for images, _ in loader:
        seen += len(images)
    return seen / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    train_tf, _ = build_transforms(model_info("resnet50"))

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        make_images(folder, args.images, args.size)
        loose = ImageFolder(str(folder), transform=train_tf)
        store = LocalStore(Path(tmp) / "store")
        manifest = stage_folder(store, folder)
        cache = Path(tmp) / "cache"
        fetch(store, manifest, cache, ["train"])
        shards = [cache / Path(s["key"]).name for s in manifest["splits"]["train"]["shards"]]
        staged = Transformed(ShardDataset(shards), train_tf)
        assert len(staged) == len(loose) == args.images

        rate(loose, args.workers, args.batch)  # warm the page cache for both
        rows = {
            "imagefolder_pil": rate(loose, args.workers, args.batch),
            "kbench_shards": rate(staged, args.workers, args.batch),
        }

    ratio = rows["kbench_shards"] / rows["imagefolder_pil"]
    print(
        f"{args.images} JPEGs {args.size}x{args.size}, ResNet50 train transforms, "
        f"{args.workers} workers, batch {args.batch}"
    )
    for name, value in rows.items():
        print(f"{name:<16} {value:>8.1f} images/s")
    print(f"shards / ImageFolder: {ratio:.2f}")
    out = ROOT / "bench/results/input_pipeline.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**vars(args), **rows, "ratio": ratio}, indent=1))


if __name__ == "__main__":
    main()
