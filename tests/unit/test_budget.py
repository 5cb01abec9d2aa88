"""The budget before submit: a pair's GPU-hours are the documented formula on the shipped rate
table; a sweep's with halving follows its ladder; what has no measured rate says so."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from kbench.budget import budget_lines, grid_budget, pair_hours, sweep_budget, table
from kbench.cli.main import cli
from kbench.spec import load_grid, parse_grid

H100 = "nvidia-h100"


def rate(model: str, kind: str) -> float:
    return table()["rates"][H100][model][kind]


def test_a_pair_costs_the_formula_on_the_shipped_table():
    clip = load_grid("all").pair("cifar10_clip-vit-b32").config
    # CIFAR10: 50,000 training images less a 5,000 hold-out; 5,000 + 10,000 evaluated after
    # each of 10 epochs, and 10 more times for CLIP (zero-shot, 9 WiSE-FT points).
    train, evaluated = 45_000 / rate("clip-vit-b32", "train"), 15_000 / rate("clip-vit-b32", "eval")
    assert pair_hours(clip, H100) == pytest.approx((10 * train + 20 * evaluated) / 3600)
    resnet = load_grid("all").pair("dtd_resnet50").config
    # DTD: its published 1,880 train, 1,880 val and 1,880 test; 20 epochs, no zero-shot.
    expected = 20 * (1_880 + 3_760) / rate("resnet50", "train") / 3600
    assert pair_hours(resnet, H100) == pytest.approx(expected)


def test_a_sweep_with_halving_trains_n_then_ceil_n_over_eta_trials_per_stretch():
    grid = load_grid("fair")
    cell = grid.sweeps[0]  # cifar10_clip-vit-b32: 4 trials, rungs at 1 and 3, eta 3
    trials = [p for p in grid.pairs if p.name.startswith(cell["cell"] + "_trial")]
    assert cell["rungs"] == [1, 3] and len(trials) == 4
    budget = sweep_budget(cell, trials, H100)
    epoch = (45_000 / rate("clip-vit-b32", "train")) + 5_000 / rate("clip-vit-b32", "eval")
    zero_shot = 5_000 / rate("clip-vit-b32", "eval")
    # 4 trials for epoch 1, ceil(4 / 3) = 2 for epochs 2-3, then one is left: chosen.
    assert budget.halving == pytest.approx(((4 * 1 + 2 * 2) * epoch + 4 * zero_shot) / 3600)
    assert budget.worst == pytest.approx(4 * (10 * epoch + zero_shot) / 3600)
    assert budget.seeds == pytest.approx(3 * pair_hours(trials[0].config, H100))


def test_no_measured_rate_is_no_estimate_never_a_guess():
    grid = load_grid("all")
    assert pair_hours(grid.pairs[0].config, "nvidia-a100") is None
    (line,) = budget_lines(grid_budget(grid.pairs, grid.sweeps, "nvidia-a100"))
    assert line.startswith("budget: no estimate: no measured rates for GPU type 'nvidia-a100'")
    library = parse_grid("datasets: [dtd]\nmodels: [torchvision:convnext_tiny]\n", "g", "g")
    budget = grid_budget(library.pairs, [], H100)
    assert budget["pairs"][0]["gpu_hours"] is None and budget["expected"] is None
    assert "dtd_torchvision-convnext_tiny: no estimate" in "\n".join(budget_lines(budget))


def test_submit_dry_run_prints_the_budget():
    args = ["submit", "--grid", "fair", "--dry-run", "-o", "json", "--store", "unused"]
    result = CliRunner().invoke(cli, [*args, "--gpu-type", H100])
    assert result.exit_code == 0, result.output
    budget = grid_budget(load_grid("fair").pairs, load_grid("fair").sweeps, H100)
    lines = [line for line in result.stderr.splitlines() if line.startswith("  ")]
    assert lines[0].startswith("  cifar10_clip-vit-b32: sweep of 4: ")
    assert (
        lines[-1]
        == f"  run: {budget['expected']:.2f} with halving, {budget['worst']:.2f} worst case"
    )


def test_the_report_shows_the_estimate_beside_what_a_pair_took(tmp_path):
    import dataclasses

    from support.builders import epoch_record, write_pair

    from kbench.report.gather import gather
    from kbench.runs import Run, create_run, load_run
    from kbench.storage import open_store

    grid = parse_grid("datasets: [dtd]\nmodels: [resnet50]\n", "g.yaml", "g")
    store = open_store(str(tmp_path / "store"))
    run = dataclasses.replace(Run.new("r", grid, "kubernetes"), cluster={"gpu_type": H100})
    create_run(store, run, grid.pairs)
    write_pair(store, "r", "dtd_resnet50", [epoch_record(e, 0.5, gpus=1) for e in (1, 2)])
    (row,) = gather(store, load_run(store, "r"), {})["pairs"]
    assert row["estimated_gpu_hours"] == pytest.approx(pair_hours(grid.pairs[0].config, H100))
    assert row["gpu_hours"] == pytest.approx(2 * 360 / 3600)  # two epochs of 360 s on 1 GPU
