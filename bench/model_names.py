"""What naming models by their library costs `kbench submit`: checking `open_clip:...` and
`torchvision:...` names asks the installed libraries (importing torch, torchvision and
open_clip), which the built-in names never do. Side by side, in turns: `kbench submit
--dry-run` of a grid of the two built-in models and of a grid of two library models.

    python bench/model_names.py            # 3 turns
    python bench/model_names.py --quick --json

Prints wall and CPU seconds and peak memory of each command, and the ratio of the library
grid's wall time to the built-in one's; writes bench/results/model_names.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GRIDS = {
    "built-in": "models: [clip-vit-b32, resnet50]",
    "library": 'models: ["open_clip:ViT-B-16/laion2b_s34b_b88k", torchvision:convnext_tiny]',
}


def submit(grid: Path) -> dict[str, float]:
    """One `kbench submit --dry-run`: its wall and CPU seconds and its peak memory."""
    command = [sys.executable, "-m", "kbench.cli.main", "submit", "--grid", str(grid), "--dry-run"]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed")
    return {
        "wall_s": time.perf_counter() - start,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_mb": usage.ru_maxrss / 1024,  # Linux: kilobytes
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--quick", action="store_true", help="one turn")
    args = parser.parse_args()
    turns = 1 if args.quick else args.turns
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in GRIDS}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(turns):  # in turns: the machine's noise falls on both alike
            for name, models in GRIDS.items():
                grid = Path(tmp) / f"{name}.yaml"
                grid.write_text(f"datasets: [cifar10]\n{models}\n")
                runs[name].append(submit(grid))
    best = {name: min(rows, key=lambda r: r["wall_s"]) for name, rows in runs.items()}
    result = {
        "turns": turns,
        "best": best,
        "runs": runs,
        "library_over_builtin": best["library"]["wall_s"] / best["built-in"]["wall_s"],
    }
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for name, row in best.items():
            print(
                f"{name:9} {row['wall_s']:5.2f} s wall  {row['cpu_s']:5.2f} s CPU  "
                f"{row['peak_mb']:5.0f} MB peak  (best of {turns})"
            )
        print(f"library / built-in, wall: {result['library_over_builtin']:.1f}x")
    out = ROOT / "bench/results/model_names.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
