"""The report's intervals: CPU-seconds of one comparison (kbench.stats.compare: a paired
bootstrap, and McNemar's test on top-1) at the study's evaluation split sizes and class counts,
for top-1 (a mean: its draws are multinomial counts) and for the metrics that are recomputed on
every draw (mean per class, macro-F1, worst region), beside scipy.stats.bootstrap resampling
top-1 sample by sample, as a plain use of the library would.

Predictions are drawn at random (a model right on 75% of the samples, the other on 72%): the
cost depends on the sizes, not on the pictures.

    python bench/report_stats.py            # the study's splits
    python bench/report_stats.py --quick    # the three largest splits' sizes only
    python bench/report_stats.py --json     # one JSON object
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial

import numpy as np
from scipy import stats as scipy_stats

from kbench import stats

# (dataset, evaluated samples, classes, the dataset's own metric): the study's eval splits.
SPLITS = [
    ("iwildcam", 42_791, 182, "macro_f1"),
    ("food101", 25_250, 101, "top1"),
    ("fmow", 22_108, 62, "worst_region"),
    ("cifar100", 10_000, 100, "top1"),
    ("flowers102", 6_149, 102, "mean_per_class"),
    ("fgvc-aircraft", 3_333, 100, "mean_per_class"),
]


def predictions(samples: int, classes: int, right: float, rng) -> stats.Predictions:
    labels = rng.integers(0, classes, samples)
    predicted = np.where(rng.random(samples) < right, labels, rng.integers(0, classes, samples))
    groups = rng.integers(-1, 5, samples)  # FMoW's five regions and "Other"
    return stats.Predictions(labels, predicted, groups)


def cpu_seconds(work) -> float:
    started = time.process_time()
    work()
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the three largest splits only")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for dataset, samples, classes, metric in SPLITS[:3] if args.quick else SPLITS:
        a, b = predictions(samples, classes, 0.75, rng), predictions(samples, classes, 0.72, rng)
        b = stats.Predictions(a.labels, b.predicted, a.groups)  # the same samples
        hits = (a.predicted == a.labels).astype(float) - (b.predicted == b.labels)
        scipy_top1 = partial(
            scipy_stats.bootstrap,
            (hits,),
            np.mean,
            n_resamples=stats.RESAMPLES,
            method="percentile",
            rng=np.random.default_rng(0),
        )
        row = {
            "dataset": dataset,
            "samples": samples,
            "classes": classes,
            "top1_s": cpu_seconds(partial(stats.compare, [a], [b], "top1", classes)),
            "scipy_top1_s": cpu_seconds(scipy_top1),
            "metric": metric,
        }
        if metric != "top1":
            row["metric_s"] = cpu_seconds(partial(stats.compare, [a], [b], metric, classes))
        rows.append(row)
    result = {"resamples": stats.RESAMPLES, "resamples_other": stats.RESAMPLES_OTHER, "rows": rows}
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"CPU-seconds of one comparison ({stats.RESAMPLES} draws for top-1, "
        f"{stats.RESAMPLES_OTHER} for the other metrics)"
    )
    print(f"{'dataset':<14} {'samples':>8} {'top-1':>7} {'scipy top-1':>12}  own metric")
    for r in rows:
        own = f"{r['metric']} {r['metric_s']:.2f}" if "metric_s" in r else "top1 (the same)"
        print(
            f"{r['dataset']:<14} {r['samples']:>8} {r['top1_s']:>7.3f} "
            f"{r['scipy_top1_s']:>12.2f}  {own}"
        )


if __name__ == "__main__":
    main()
