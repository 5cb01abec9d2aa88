"""Staging's image check: what refusing an image that does not decode (PIL's open + verify of
every original file) adds to `kbench data stage`, side by side with staging the same images
unchecked, on JPEGs of the study's typical sizes.

    python bench/stage_check.py                     # 1,000 JPEGs of 512x384 (Food101-like)
    python bench/stage_check.py --size 224 --height 224 --json

Prints wall and CPU seconds per image of each, and their ratio; writes
bench/results/stage_check.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from unittest import mock

from photos import stage_folder, write_images

from kbench.staging import datasets as staging
from kbench.storage import LocalStore

ROOT = Path(__file__).resolve().parents[1]


def timed(work) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--size", type=int, default=512, help="width")
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--quick", action="store_true", help="100 images")
    args = parser.parse_args()
    if args.quick:
        args.images = min(args.images, 100)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        write_images(folder, args.images, size=(args.size, args.height), processes=os.cpu_count())
        rows = {}
        for variant in ("unchecked", "checked", "unchecked-again", "checked-again"):
            store = LocalStore(Path(tmp) / variant)
            check = staging._check_image if variant.startswith("checked") else lambda path: None
            with mock.patch.object(staging, "_check_image", check):
                wall, cpu = timed(lambda store=store: stage_folder(store, folder))
            rows[variant] = {"wall_s": wall, "cpu_ms_per_image": 1000 * cpu / args.images}
    unchecked = min(rows["unchecked"]["wall_s"], rows["unchecked-again"]["wall_s"])
    checked = min(rows["checked"]["wall_s"], rows["checked-again"]["wall_s"])
    result = {**vars(args), "variants": rows, "checked_over_unchecked": checked / unchecked}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"{args.images} JPEGs {args.size}x{args.height}, staged to a local store")
        for name, row in rows.items():
            print(f"{name:16} {row['wall_s']:6.2f} s  {row['cpu_ms_per_image']:.3f} CPU-ms/image")
        print(f"checked / unchecked (best of two each): {result['checked_over_unchecked']:.2f}")
    out = ROOT / "bench/results/stage_check.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
