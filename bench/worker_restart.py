"""What restarting the training DataLoader's workers every epoch costs (kbench does, so that
each epoch seeds them from seed, epoch and rank and a resumed run augments exactly as an
uninterrupted one) against persistent workers, on photo-like JPEGs through ResNet50's training
transform, the same workers and batch.

    python bench/worker_restart.py                     # 768 JPEGs of 500x375, 3 epochs, 2 workers
    python bench/worker_restart.py --images 256 --json

Both loaders run in one process, alternating (A B A B), since this machine is noisy. Reported:
wall seconds per epoch, wall seconds to an epoch's first batch (where the restart shows), and
CPU seconds per image (this process and its workers).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import torch
from photos import write_images  # bench/, beside this script
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

from kbench.jobs.datasets import Transformed, build_transforms
from kbench.registry import model_info


def cpu_seconds() -> float:
    own, children = (
        resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run(dataset, persistent: bool, epochs: int, workers: int, batch: int) -> dict:
    generator = torch.Generator()
    loader = DataLoader(
        dataset,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        persistent_workers=persistent,
        generator=generator,
    )
    cpu0, first, per_epoch = cpu_seconds(), [], []
    for epoch in range(epochs):
        generator.manual_seed(epoch)
        started = time.perf_counter()
        for i, _ in enumerate(loader):
            if i == 0:
                first.append(time.perf_counter() - started)
        per_epoch.append(time.perf_counter() - started)
    del loader  # persistent workers end here, so their CPU time is counted
    images = epochs * len(dataset)
    return {
        "workers": "persistent" if persistent else "restarted each epoch",
        "epoch_s": sum(per_epoch) / epochs,
        "first_batch_s": sum(first) / epochs,
        "cpu_s_per_image": (cpu_seconds() - cpu0) / images,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=768)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true", help="256 images, one repeat")
    args = parser.parse_args()
    if args.quick:
        args.images, args.repeats = min(args.images, 256), 1
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        write_images(
            Path(tmp), args.images, "photo", processes=os.cpu_count() or 1
        )  # Food101's and DTD's kind of photo
        train, _ = build_transforms(model_info("resnet50"))
        dataset = Transformed(ImageFolder(tmp), train)
        results: dict[bool, list[dict]] = {True: [], False: []}
        for _ in range(args.repeats):
            for persistent in (True, False):
                results[persistent].append(
                    run(dataset, persistent, args.epochs, args.workers, args.batch)
                )
    rows = []
    for runs in results.values():
        row = {k: runs[0][k] for k in ("workers",)}
        for key in ("epoch_s", "first_batch_s", "cpu_s_per_image"):
            row[key] = min(r[key] for r in runs)  # the least disturbed of the repeats
        rows.append(row)
    ratio = rows[1]["epoch_s"] / rows[0]["epoch_s"]
    summary = {
        "images": args.images,
        "epochs": args.epochs,
        "workers": args.workers,
        "batch": args.batch,
        "rows": rows,
        "epoch_time_ratio_restarted_vs_persistent": ratio,
    }
    if args.json:
        print(json.dumps(summary))
        return
    for r in rows:
        print(
            f"{r['workers']:22} epoch {r['epoch_s']:.2f} s  first batch {r['first_batch_s']:.2f} s"
            f"  {1000 * r['cpu_s_per_image']:.2f} CPU-ms/image"
        )
    print(f"ratio (restarted / persistent epoch time): {ratio:.3f}")


if __name__ == "__main__":
    main()
