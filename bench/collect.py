"""`kbench collect` at scale: read 500 pairs x 20 epochs of records from a real S3 server
(SeaweedFS on loopback), concurrently (kbench's default) against one pair at a time, and count
the S3 requests per pair.

    python bench/collect.py                 # 500 pairs, 20 epochs
    python bench/collect.py --pairs 50      # quicker

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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from s3server import seaweedfs  # noqa: E402

from kbench import records  # noqa: E402
from kbench.report import gather  # noqa: E402
from kbench.runs import load_run  # noqa: E402
from kbench.storage import S3Store, write_json  # noqa: E402


def fake_run(store: S3Store, pairs: int, epochs: int) -> None:
    """A finished run: run.json, then config, metrics and result of every pair."""
    names = [f"d{i:04d}_{'clip-vit-b32' if i % 2 else 'resnet50'}" for i in range(pairs)]
    run = {
        "run_id": "bench",
        "grid": "bench",
        "source": "bench",
        "pairs": names,
        "backend": "local",
        "created": "2026-11-27T00:00:00+00:00",
        "kbench_version": "0",
    }

    def one(name: str) -> None:
        dataset, model = name.split("_")

        def record(e: int) -> dict:
            return {
                "epoch": e,
                "headline": 0.5 + e / 100,
                "headline_metric": "top1",
                "epoch_seconds": 60.0,
                "images_per_s": 900.0,
                "gpus": 4,
            }

        key = lambda f: records.pair_key("bench", name, f)  # noqa: E731
        write_json(
            store, key(records.CONFIG), {"dataset": dataset, "model": model, "epochs": epochs}
        )
        write_json(store, key(records.METRICS), {"epochs": [record(e) for e in range(epochs + 1)]})
        write_json(
            store, key(records.RESULT), {"parameters": 1, "wise_ft": None, "environment": None}
        )

    with ThreadPoolExecutor(max_workers=32) as pool:
        list(pool.map(one, names))
    write_json(store, records.run_key("bench"), run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", default="bench/results/collect.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as data, seaweedfs(Path(data)) as server:
        os.environ.update(server.env)
        store = S3Store(server.uri("bench"))
        fake_run(store, args.pairs, args.epochs)
        requests = {"count": 0}
        store.client.meta.events.register(
            "before-send.s3", lambda **_: requests.__setitem__("count", requests["count"] + 1)
        )
        rows = []
        for workers in (1, 32):
            requests["count"] = 0
            started = time.perf_counter()
            run = load_run(store, "bench")
            results = gather(store, run, {}, workers=workers)
            seconds = time.perf_counter() - started
            assert len(results["pairs"]) == args.pairs
            rows.append(
                {
                    "workers": workers,
                    "seconds": seconds,
                    "requests": requests["count"],
                    "requests_per_pair": requests["count"] / args.pairs,
                }
            )

    ratio = rows[0]["seconds"] / rows[1]["seconds"]
    print(f"collect: {args.pairs} pairs x {args.epochs} epochs from SeaweedFS on loopback")
    print(f"{'workers':>8} {'seconds':>9} {'S3 requests':>12} {'per pair':>9}")
    for row in rows:
        print(
            f"{row['workers']:>8} {row['seconds']:>9.2f} {row['requests']:>12} "
            f"{row['requests_per_pair']:>9.2f}"
        )
    print(f"concurrent is {ratio:.1f}x faster than one pair at a time")
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"pairs": args.pairs, "epochs": args.epochs, "rows": rows, "speedup": ratio}, indent=1
        )
    )


if __name__ == "__main__":
    main()
