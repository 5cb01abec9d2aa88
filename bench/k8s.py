"""Kubernetes side at scale: wall time of rendering and strictly validating every manifest, and
the API requests of `kbench status`, for grids of 18 and 1,000 pairs. The API is kmock's
emulator over real HTTP (requests are counted on the server side), the client the real one.

    python bench/k8s.py                  # 18 and 1,000 pairs
    python bench/k8s.py --quick --json   # 18 and 200

Prints a table and writes bench/results/k8s.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import kubernetes_validate  # noqa: E402
from support.k8s_emulator import kubernetes_emulator  # noqa: E402

from kbench.k8s.backend import KubernetesBackend  # noqa: E402
from kbench.k8s.render import render_run, validate  # noqa: E402
from kbench.k8s.settings import ClusterSettings  # noqa: E402
from kbench.runs import Run  # noqa: E402
from kbench.spec import Grid, Pair, load_grid  # noqa: E402
from kbench.storage import LocalStore  # noqa: E402


def pairs(n: int) -> list[Pair]:
    """The study's 18 pairs, then copies with new names up to n."""
    study = load_grid("all").pairs
    out = []
    for i in range(n):
        base = study[i % len(study)]
        name = base.name if i < len(study) else f"{base.name}-{i}"
        out.append(Pair(name=name, config=copy.deepcopy(base.config)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="18 and 200 pairs")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    settings = ClusterSettings(image="registry.example/kbench:1", namespace="bench")
    rows = []
    with tempfile.TemporaryDirectory() as tmp, kubernetes_emulator(Path(tmp)) as cluster:
        os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
        store = LocalStore(Path(tmp) / "store")  # submit and status look for cancel marks
        for n in [18, 200] if args.quick else [18, 1000]:
            grid_pairs = pairs(n)
            started = time.perf_counter()
            manifests = render_run(f"bench-{n}", grid_pairs, settings, "s3://kbench-bench/runs")
            rendered = time.perf_counter() - started
            assert validate(manifests, settings.kubernetes_version) == []
            validated = time.perf_counter() - started - rendered
            started = time.perf_counter()
            for manifest in manifests:  # the library as it is: schema files parsed every call
                kubernetes_validate.validate(manifest, settings.kubernetes_version, strict=True)
            library = time.perf_counter() - started

            backend = KubernetesBackend(settings=settings)
            grid = Grid(name="bench", source="bench", pairs=grid_pairs)
            uri = "s3://kbench-bench/runs"  # what the manifests name; the marks are read locally
            plan = backend.plan(Run.new(f"bench-{n}", grid, backend.name), grid_pairs, uri)
            backend.submit(store, plan, echo=lambda line: None)
            run = plan.run
            before = len(cluster.requests())
            states = backend.states(store, run)
            status_requests = len(cluster.requests()) - before
            assert len(states) == n
            rows.append(
                {
                    "pairs": n,
                    "render_s": rendered,
                    "validate_s": validated,
                    "library_validate_s": library,
                    "status_requests": status_requests,
                }
            )

    out = ROOT / "bench/results/k8s.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))
    if args.json:
        print(json.dumps({"rows": rows}))
        return
    print(
        f"{'pairs':>6} {'render s':>9} {'validate s':>11} {'uncached s':>11} {'ratio':>6} "
        f"{'status API requests':>20}"
    )
    for r in rows:
        ratio = r["library_validate_s"] / r["validate_s"]
        print(
            f"{r['pairs']:>6} {r['render_s']:>9.2f} {r['validate_s']:>11.2f} "
            f"{r['library_validate_s']:>11.2f} {ratio:>6.1f} {r['status_requests']:>20}"
        )


if __name__ == "__main__":
    main()
