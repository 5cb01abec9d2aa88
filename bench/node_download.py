"""Node download: the time a node takes to get a dataset from S3 onto its disk, the same 2,000
JPEGs either as loose objects (an imagefolder under an S3 prefix, kbench's 16-thread copy) or
as staged tar shards (`shards.fetch`: 8 threads, each shard checked against its SHA-256).
Both through kbench's own code, against a real S3 server (SeaweedFS) on loopback.

    python bench/node_download.py                  # 2,000 JPEGs of 320x320
    python bench/node_download.py --images 500

Also times the loose copy through boto3's managed transfer (`download_file`, a HEAD and a
transfer manager per object), which kbench used for it before. Prints the times, the number of
objects each fetches and the ratio; writes
bench/results/node_download.json. Loopback has almost no per-request latency; a remote bucket
adds some to every object, which favours fewer, larger objects more than measured here.
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

from photos import stage_folder, write_images  # noqa: E402
from support.s3server import seaweedfs  # noqa: E402

from kbench.jobs import imagefolder, node_cache, shards  # noqa: E402
from kbench.s3 import S3Store  # noqa: E402


def timed(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def measure(server, tmp: Path, args) -> dict:
    os.environ.update(server.env)
    tree = tmp / "tree"
    write_images(tree / "train", args.images, size=(args.size, args.size), processes=os.cpu_count())
    loose_uri = server.uri("loose")
    loose = S3Store(loose_uri)
    files = sorted(tree.rglob("*.jpg"))
    for file in files:
        loose.put_file(file.relative_to(tree).as_posix(), str(file))
    store = S3Store(server.uri("staged"))
    manifest = stage_folder(store, tree / "train")

    # Each download goes to an empty node disk.
    tempfile.tempdir = str(tmp / "node-loose")  # where imagefolder keeps its node copy
    Path(tempfile.tempdir).mkdir()
    loose_s = timed(lambda: imagefolder._local_copy(loose_uri))
    shards_s = timed(lambda: shards.fetch(store, manifest, tmp / "node-shards", ["train"]))

    def managed() -> None:  # the same copy through boto3's managed transfer per object
        keys = loose.list("")
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(lambda k: node_cache.fetch(loose, k, tmp / "node-managed" / k), keys))

    managed_s = timed(managed)
    return {
        "loose_managed_transfer_s": managed_s,
        "loose_objects_s": loose_s,
        "loose_objects": len(files),
        "megabytes": sum(f.stat().st_size for f in files) / 1e6,
        "shards_s": shards_s,
        "shards": len(manifest["splits"]["train"]["shards"]),
        "ratio": loose_s / shards_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--quick", action="store_true", help="200 images")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.quick:
        args.images = min(args.images, 200)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "s3").mkdir()
        with seaweedfs(Path(tmp) / "s3") as server:
            rows = measure(server, Path(tmp), args)
    out = ROOT / "bench/results/node_download.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**vars(args), **rows}, indent=1))
    if args.json:
        print(json.dumps({**vars(args), **rows}))
        return
    print(
        f"{args.images} JPEGs {args.size}x{args.size} ({rows['megabytes']:.0f} MB) "
        "from SeaweedFS on loopback"
    )
    n = rows["loose_objects"]
    print(f"loose, managed {rows['loose_managed_transfer_s']:7.2f} s  ({n} objects, download_file)")
    print(f"loose objects  {rows['loose_objects_s']:7.2f} s  ({n} objects, one GET each)")
    print(f"tar shards     {rows['shards_s']:7.2f} s  ({rows['shards']} objects, checked)")
    print(f"loose / shards: {rows['ratio']:.2f}")


if __name__ == "__main__":
    main()
