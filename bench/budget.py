"""What the `fair` grid costs against one run of `all`, by the estimator `submit --dry-run`
prints (kbench.budget: measured H100 rates, the datasets' published sizes, the epochs). No
training: the estimator's figures side by side, and their ratio.

    python bench/budget.py                 # fair vs all on nvidia-h100
    python bench/budget.py --json
"""

from __future__ import annotations

import argparse
import json

from kbench.budget import grid_budget, pair_hours
from kbench.spec import load_grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu-type", default="nvidia-h100")
    parser.add_argument("--grids", nargs=2, default=["all", "fair"], metavar=("BASE", "TUNED"))
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="the same: it takes a second")
    args = parser.parse_args()
    base, tuned = (load_grid(name) for name in args.grids)
    base_hours = grid_budget(base.pairs, base.sweeps, args.gpu_type)["expected"]
    budget = grid_budget(tuned.pairs, tuned.sweeps, args.gpu_type)
    # The floor of any tuned grid: its seeds alone, each a full run of the base recipe.
    seeds = max((len(c["seeds"]) for c in tuned.sweeps), default=1)
    floor = seeds * sum(pair_hours(p.config, args.gpu_type) or 0.0 for p in base.pairs)
    result = {
        "gpu_type": args.gpu_type,
        "base": {"grid": base.name, "gpu_hours": base_hours},
        "tuned": {
            "grid": tuned.name,
            "gpu_hours_with_halving": budget["expected"],
            "gpu_hours_worst_case": budget["worst"],
            "sweeps_with_halving": sum(c["halving"] for c in budget["sweeps"]),
            "seed_runs": sum(c["seed_runs"] for c in budget["sweeps"]),
        },
        "ratio_with_halving": budget["expected"] / base_hours,
        "ratio_worst_case": budget["worst"] / base_hours,
        "floor_of_its_seeds": floor / base_hours,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{base.name}: {base_hours:.2f} GPU-hours on {args.gpu_type}")
    ratio, worst = result["ratio_with_halving"], result["ratio_worst_case"]
    print(
        f"{tuned.name}: {budget['expected']:.2f} with halving ({ratio:.2f}x), "
        f"{budget['worst']:.2f} worst case ({worst:.2f}x); its {seeds} seeds alone "
        f"{result['floor_of_its_seeds']:.2f}x"
    )


if __name__ == "__main__":
    main()
