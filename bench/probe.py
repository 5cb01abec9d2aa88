"""The linear probe's cost on the CPU (kbench.jobs.probe: scikit-learn's L-BFGS logistic
regression, one fit per C of the sweep) at the sizes of real features: CLIP ViT-B/32's 512 and
ResNet50's 2048 dimensions, the training-split sizes and class counts of the study's datasets.
Features are drawn at random around class means (the cost depends on the sizes, and on how
separable they are: these are moderately so).

    python bench/probe.py            # DTD, CIFAR-100 and iWildCam sizes, one C each
    python bench/probe.py --quick    # DTD's size only
    python bench/probe.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from kbench.jobs.probe import fit
from kbench.methods import PROBE_C

# (dataset, training images, classes)
SIZES = [("dtd", 1_880, 47), ("cifar100", 45_000, 100), ("iwildcam", 129_809, 182)]


def features(n: int, d: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    means = rng.normal(size=(k, d)).astype(np.float32)
    x = means[y] + 2.0 * rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="DTD's size only")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--c", type=float, default=1.0, help="the C of the timed fit")
    args = parser.parse_args()
    rows = []
    for name, n, k in SIZES[:1] if args.quick else SIZES:
        for model, d in (("clip-vit-b32", 512), ("resnet50", 2048)):
            x, y = features(n, d, k)
            wall, cpu = time.perf_counter(), time.process_time()
            fit(x, y, k, args.c)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            rows.append(
                {
                    "dataset": name, "model": model, "images": n, "dim": d, "classes": k,
                    "fit_wall_s": wall, "fit_cpu_s": cpu,
                    "sweep_wall_s_estimate": wall * len(PROBE_C),
                    "cpu_ms_per_image": 1000 * cpu / n,
                }
            )  # fmt: skip
    result = {"cpus": os.cpu_count(), "c": args.c, "cs_in_sweep": len(PROBE_C), "fits": rows}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for r in rows:
        print(
            f"{r['dataset']:9} {r['model']:13} {r['images']:>7} x {r['dim']:>4}, {r['classes']:>3}"
            f" classes: one fit {r['fit_wall_s']:.1f}s wall ({r['cpu_ms_per_image']:.2f} CPU-ms"
            f" per image); the sweep of {len(PROBE_C)} about {r['sweep_wall_s_estimate']:.0f}s"
        )


if __name__ == "__main__":
    main()
