"""`kbench collect` at scale: read 500 pairs x 20 epochs of records from a real S3 server
(SeaweedFS on loopback), concurrently (kbench's default) against one pair at a time, and count
the S3 requests per pair, for runs whose jobs keep summary.json (one read a pair) and runs of an
earlier kbench (separate records: config, metrics, result). Loopback answers in a fraction of
a millisecond, a bucket in another zone or region in 10-50: every request first waits
`--latency-ms` (default 15), as a remote store's round trip would.

    python bench/collect.py                 # 500 pairs, 20 epochs
    python bench/collect.py --quick --json  # 100 pairs; one JSON object

Prints a table and writes bench/results/collect.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.builders import epoch_record, result_record  # noqa: E402
from support.s3server import seaweedfs  # noqa: E402

from kbench import records  # noqa: E402
from kbench.report.gather import gather  # noqa: E402
from kbench.runs import Run, load_run  # noqa: E402
from kbench.s3 import S3Store  # noqa: E402
from kbench.spec import TrainConfig, load_grid, pair_name  # noqa: E402
from kbench.storage import write_json  # noqa: E402


def fake_run(store: S3Store, pairs: int, epochs: int, summaries: bool) -> None:
    """A finished run: run.json, then config, metrics and result of every pair (each one of a
    grid's seeds of cifar10 x CLIP or ResNet, records as a job writes them), and the summary.json
    (the three in one) a job keeps up to date, unless `summaries` is false (a run of an earlier
    kbench)."""
    grid = load_grid("all")
    configs = [
        replace(grid.pair(f"cifar10_{'clip-vit-b32' if i % 2 else 'resnet50'}").config, seed=i)
        for i in range(pairs)
    ]
    names = [pair_name(c.dataset, c.model, c.seed) for c in configs]
    run = Run("bench", "bench", "bench", names, "local", "2026-11-27T00:00:00+00:00")

    def one(name: str, config: TrainConfig) -> None:
        key = lambda f: records.pair_key("bench", name, f)  # noqa: E731
        metrics = [epoch_record(e, 0.5 + e / 100) for e in range(epochs + 1)]
        result = result_record(name, metrics, dataset=config.dataset, model=config.model)
        write_json(store, key(records.CONFIG), config.to_dict())
        write_json(store, key(records.METRICS), {"epochs": metrics})
        write_json(store, key(records.RESULT), result)
        if summaries:
            summary = {
                "config": config.to_dict(),
                "epochs": metrics,
                "progress": None,
                "result": result,
            }
            write_json(store, key(records.SUMMARY), summary)

    with ThreadPoolExecutor(max_workers=32) as pool:
        list(pool.map(one, names, configs))
    write_json(store, records.run_key("bench"), run.to_dict())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--latency-ms", type=float, default=15.0, help="added to every request")
    parser.add_argument("--quick", action="store_true", help="100 pairs")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--out", default="bench/results/collect.json")
    args = parser.parse_args()
    if args.quick:
        args.pairs = min(args.pairs, 100)

    with tempfile.TemporaryDirectory() as data, seaweedfs(Path(data)) as server:
        os.environ.update(server.env)
        rows = []
        for layout, summaries in (("separate records", False), ("summary.json", True)):
            store = S3Store(server.uri(f"bench-{summaries}"))
            fake_run(store, args.pairs, args.epochs, summaries)
            requests = {"count": 0}

            def remote(requests=requests, **_) -> None:  # counted, sent a round trip later
                requests["count"] += 1
                time.sleep(args.latency_ms / 1000)

            store.client.meta.events.register("before-send.s3", remote)
            for workers in (1, 32):
                requests["count"] = 0
                started = time.perf_counter()
                run = load_run(store, "bench")
                of_run = requests["count"]  # run.json, and the listing that finds it
                results = gather(store, run, {}, workers=workers)
                seconds = time.perf_counter() - started
                assert len(results["pairs"]) == args.pairs
                rows.append(
                    {
                        "layout": layout,
                        "workers": workers,
                        "seconds": seconds,
                        "requests": requests["count"],
                        "run_requests": of_run,
                        "requests_per_pair": (requests["count"] - of_run) / args.pairs,
                    }
                )

    old_sequential, old_concurrent, sequential, concurrent = rows
    ratio = sequential["seconds"] / concurrent["seconds"]
    result = {
        "pairs": args.pairs,
        "epochs": args.epochs,
        "latency_ms": args.latency_ms,
        "gets_per_pair": concurrent["requests_per_pair"],
        "sequential_s": sequential["seconds"],
        "concurrent_s": concurrent["seconds"],
        "ratio": ratio,
        "summary_over_separate": old_concurrent["seconds"] / concurrent["seconds"],
        "rows": rows,
    }
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"collect: {args.pairs} pairs x {args.epochs} epochs from SeaweedFS on loopback, "
        f"{args.latency_ms:g} ms added to every request"
    )
    print(f"{'layout':<17} {'readers':>7} {'seconds':>9} {'S3 requests':>12} {'per pair':>9}")
    for row in rows:
        print(
            f"{row['layout']:<17} {row['workers']:>7} {row['seconds']:>9.2f} "
            f"{row['requests']:>12} {row['requests_per_pair']:>9.2f}"
        )
    print(f"32 readers are {ratio:.1f}x faster than one pair at a time (summary.json)")
    print(f"summary.json is {result['summary_over_separate']:.1f}x faster (32 readers)")


if __name__ == "__main__":
    main()
