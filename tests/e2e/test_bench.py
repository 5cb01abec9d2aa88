"""The benchmark scripts still run (the GPU one on a CPU with tiny models, so it is ready when a
GPU is), and every one takes --quick and --json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_train_step_benchmark_runs_on_cpu(tmp_path):
    out = tmp_path / "train_step.json"
    command = [sys.executable, str(ROOT / "bench" / "train_step.py"), "--device", "cpu"]
    command += ["--tiny", "--steps", "2", "--warmup", "1", "--end-to-end", "--images", "20"]
    command += ["--json", "--out", str(out)]
    printed = json.loads(subprocess.run(command, check=True, capture_output=True).stdout)
    assert printed == json.loads(out.read_text())
    rows = printed["rows"]
    assert [(r["model"], r["variant"], r["feed"]) for r in rows] == [
        ("clip-tiny", "fp32 eager", "synthetic on device"),
        ("clip-tiny", "kbench", "synthetic on device"),
        ("clip-tiny", "kbench", "staged JPEG shards"),
        ("resnet-tiny", "fp32 eager", "synthetic on device"),
        ("resnet-tiny", "kbench", "synthetic on device"),
        ("resnet-tiny", "kbench", "staged JPEG shards"),
    ]
    assert all(r["images_per_s"] > 0 and r["flops_per_image"] > 0 for r in rows)
    assert rows[1]["ratio"] == rows[1]["images_per_s"] / rows[0]["images_per_s"]


def test_steps_per_epoch_counts_every_image_of_the_real_split_sizes():
    command = [sys.executable, str(ROOT / "bench" / "steps_per_epoch.py"), "--world", "2"]
    printed = subprocess.run([*command, "--json"], check=True, capture_output=True, text=True)
    rows = {(r["grid"], r["pair"]): r for r in json.loads(printed.stdout)["rows"]}
    assert len(rows) == 36
    flowers = rows[("all", "flowers102_clip-vit-b32")]
    assert (flowers["steps_per_epoch"], flowers["images_per_epoch"]) == (2, 1020)
    rescued = rows[("study", "flowers102_clip-vit-b32")]  # batch 128: 80 steps, all in warmup
    assert (rescued["steps_per_epoch"], rescued["total_steps"], rescued["warmup_steps"]) == (
        8,
        80,
        500,
    )
    # CIFAR10 has no published validation split: `all` holds a tenth out, `study` none
    cifar = rows[("all", "cifar10_resnet50")], rows[("study", "cifar10_resnet50")]
    assert [r["train_images"] for r in cifar] == [45_000, 50_000]
    assert all(r["images_per_epoch"] >= r["train_images"] for r in rows.values())


def test_stage_check_benchmark_compares_checked_and_unchecked_staging():
    command = [sys.executable, str(ROOT / "bench" / "stage_check.py"), "--images", "20"]
    printed = subprocess.run([*command, "--json"], check=True, capture_output=True, text=True)
    result = json.loads(printed.stdout)
    assert set(result["variants"]) == {"unchecked", "checked", "unchecked-again", "checked-again"}
    assert all(v["cpu_ms_per_image"] > 0 for v in result["variants"].values())
    assert result["checked_over_unchecked"] > 0


def test_input_pipeline_benchmark_covers_every_kind_and_transform():
    command = [sys.executable, str(ROOT / "bench" / "input_pipeline.py"), "--images", "4", "--json"]
    result = json.loads(subprocess.run(command, check=True, capture_output=True).stdout)
    cases = result["cases"]
    # The study's five kinds of image, the large JPEGs also staged at a short side of 448;
    # three transforms each.
    assert len(cases) == 6 * 3
    assert sum("staged at short side 448" in c["images"] for c in cases) == 3
    assert {c["images"].split()[0] for c in cases} == {"cifar", "stl10", "fmow", "photo", "large"}
    assert {c["transform"] for c in cases} == {"clip train", "resnet train", "clip eval"}
    for case in cases:
        assert case["baseline_cpu_ms"] > 0 and case["kbench_cpu_ms"] > 0
        ratio = case["baseline_cpu_ms"] / case["kbench_cpu_ms"]  # of the rounded figures
        assert abs(case["ratio"] - ratio) < 0.011 + 0.01 * ratio


BENCHES = sorted(
    p.name for p in (ROOT / "bench").glob("*.py") if p.stem not in ("photos", "ddp_check")
)


@pytest.mark.parametrize("script", BENCHES)
def test_every_bench_takes_quick_and_json(script):
    """Each can answer in minutes on this machine, in one JSON object (BENCHMARKS.md)."""
    command = [sys.executable, str(ROOT / "bench" / script), "--help"]
    usage = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    assert "--quick" in usage and "--json" in usage


def test_model_names_benchmark_times_both_kinds_of_name():
    command = [sys.executable, str(ROOT / "bench" / "model_names.py"), "--quick", "--json"]
    result = json.loads(subprocess.run(command, check=True, capture_output=True).stdout)
    assert set(result["best"]) == {"built-in", "library"}
    assert all(row["wall_s"] > 0 and row["peak_mb"] > 0 for row in result["best"].values())
    assert result["library_over_builtin"] > 0
