"""`kbench collect` on fixture records: complete, running and failed pairs, a missing epoch, a
NaN, a zero-shot number far from the published one, and data that tries to inject HTML."""

from __future__ import annotations

from dataclasses import replace

import pytest
from support.builders import assert_written, write_pair
from support.builders import epoch_record as epoch

from kbench import records
from kbench.runs import Run, create_run
from kbench.spec import load_grid, parse_grid
from kbench.storage import open_store, write_json

NAN = float("nan")


def test_results_table_winners_and_flags(report_run, tmp_path, collect):
    output, results = collect(report_run, tmp_path / "report")
    assert "run study: 4 of 6 pairs complete; in top-1 CLIP wins 0, ResNet wins 0, 3" in output

    datasets = {d["dataset"]: d for d in results["datasets"]}
    # CLIP is 2 points ahead, but these records kept no predictions: no interval, no winner
    assert datasets["cifar10"]["top1"]["difference"] == pytest.approx(2.0)
    assert datasets["cifar10"]["top1"]["winner"] is None
    assert datasets["cifar10"]["verdict"] == (
        "cifar10: CLIP - ResNet top-1 +2.00 points (no interval: the pairs kept no "
        "predictions): undecided"
    )
    assert datasets["cifar10"]["zero_shot"] == 0.905
    assert datasets["dtd"]["top1"]["winner"] is None  # ResNet still running
    assert datasets["flowers102"]["top1"]["winner"] is None  # CLIP failed
    assert datasets["flowers102"]["headline_metric"] == "mean_per_class"
    assert not datasets["flowers102"]["left_out"]  # a failed run is judged by no number
    tally = {
        "clip_wins": 0,
        "resnet_wins": 0,
        "unclear": 0,
        "undecided": 3,
        "tests": 0,  # no predictions in these records: no intervals to test
        "unadjusted": {"clip_wins": 0, "resnet_wins": 0},
        "left_out": [],
        "mean_difference": pytest.approx(2.0),
        "mean_over": 1,
    }
    sides = {"clip": ["clip-vit-b32"], "resnet": ["resnet50"]}
    assert results["overall"] == {
        "datasets": 3,
        "metric": "top1",
        "top1": tally,
        "headline": tally,
        "sides": sides,
        "select_on": "val",
        "seeds": 1,
    }

    pairs = {p["pair"]: p for p in results["pairs"]}
    assert pairs["cifar10_clip-vit-b32"]["flags"] == []  # 90.5 is within the published range
    assert pairs["cifar10_resnet50"]["flags"] == [
        "images stored at a short side of at most 448 px (data stage --max-short-side), "
        "not the originals"
    ]
    assert pairs["cifar10_clip-vit-b32"]["gpu_hours"] == pytest.approx(2 * 360 * 4 / 3600)
    assert "zero-shot 30.0 is more than 2 points from the published 44.5" in " ".join(
        pairs["dtd_clip-vit-b32"]["flags"]
    )
    assert pairs["dtd_resnet50"]["state"] == "running"
    assert pairs["flowers102_clip-vit-b32"]["state"] == "failed"
    assert "CUDA out of memory" in pairs["flowers102_clip-vit-b32"]["flags"][0]
    flowers = pairs["flowers102_resnet50"]
    assert flowers["chosen"] == 0.85 and flowers["chosen_epoch"] == 4  # NaN is never chosen
    assert "diverged: mean_per_class is NaN at epoch 2" in flowers["flags"]
    assert "no record for epoch 3" in flowers["flags"]

    header, rows = results["table"]["header"], results["table"]["rows"]
    assert header[0] == "epoch" and len(header) == 7  # every pair keeps its column
    assert [r[0] for r in rows] == [0, 1, 2, 4]
    cell = {(r[0], name): v for r in rows for name, v in zip(header[1:], r[1:], strict=True)}
    assert cell[(0, "cifar10_clip-vit-b32")] == 0.905
    assert cell[(0, "cifar10_resnet50")] is None
    assert cell[(2, "flowers102_resnet50")] is None  # NaN becomes null in strict JSON
    assert cell[(4, "flowers102_resnet50")] == 0.85


def test_markdown_and_csv(report_run, tmp_path, collect):
    collect(report_run, tmp_path / "report")
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "| cifar10 | 90.50 | 97.00 | 95.00 | +2.00 | undecided |" in markdown
    assert "| dtd | top1 | 30.00 |  |  |  | undecided |" in markdown
    assert (
        "(the study's metric):** CLIP wins 0, ResNet wins 0, 0 without a clear winner, "
        "3 undecided (pending, or no interval) of 3 dataset(s). Mean difference" in markdown
    )
    assert markdown.index("**Every choice") < markdown.index("**Overall")  # what chose, first
    assert "| flowers102_clip-vit-b32 | failed | 1/10 |" in markdown
    assert "| 4 |  |  |  |  |  | 85.00 |" in markdown
    csv_rows = (tmp_path / "report" / "results.csv").read_text().splitlines()
    assert csv_rows[0].startswith("epoch,cifar10_clip-vit-b32,cifar10_resnet50,")
    assert csv_rows[3] == "2,0.97,0.95,,0.65,,"  # NaN: an empty cell


def test_text_from_data_is_escaped(tmp_path, collect):
    """A grid's name and file are free text (the pair names are checked when read)."""
    store = open_store(str(tmp_path / "store"))
    evil = "<script>alert(1)</script>"
    run = {
        "run_id": "evil",
        "grid": f"`evil`|{evil}",
        "source": evil,
        "pairs": ["cifar10_resnet50"],
        "backend": "local",
        "created": "2026-11-27T00:00:00+00:00",
        "kbench_version": "0",
    }
    write_json(store, records.run_key("evil"), run)
    pair = run["pairs"][0]
    config = load_grid("all").pair(pair).config
    write_json(store, records.pair_key("evil", pair, records.CONFIG), config.to_dict())
    write_pair(store, "evil", pair, [epoch(1, 0.5)])
    collect(store, tmp_path / "report")
    html = (tmp_path / "report" / "report.html").read_text()
    assert evil not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    markdown = (tmp_path / "report" / "report.md").read_text()
    # A code span holds the name as it is (CommonMark shows it literally); its fence is longer
    # than any run of backticks inside, so the name cannot end it early.
    header = f"Grid `` `evil`|{evil} `` (&lt;script&gt;alert(1)&lt;/script&gt;), backend `local`"
    assert header in markdown
    assert f"({evil})" not in markdown  # outside a code span, HTML is escaped


def test_published_zero_shot_is_checked_only_where_it_is_comparable():
    from kbench.report.published import zero_shot_flag

    config = load_grid("all").pair("dtd_clip-vit-b32").config
    assert config.pretrained and config.eval_split is None
    assert zero_shot_flag(config, 0.30) is not None  # the study's split: test
    assert zero_shot_flag(replace(config, eval_split="test"), 0.30) is not None
    assert zero_shot_flag(replace(config, eval_split="val"), 0.30) is None
    assert zero_shot_flag(replace(config, pretrained=False), 0.30) is None
    # Other prompts than the ensemble the numbers were published with: not comparable.
    assert zero_shot_flag(replace(config, templates=["a photo of a {}."]), 0.30) is None


def test_fmow_shows_each_region_at_each_models_best_epoch(tmp_path, collect):
    store = open_store(str(tmp_path / "store"))
    grid = parse_grid("datasets: [fmow]\nmodels: [clip-vit-b32, resnet50]\n", "g.yaml", "g")
    create_run(store, Run.new("study", grid, "local"), grid.pairs)

    def regions(epoch_n: int, africa: float, europe: float) -> dict:
        record = epoch(epoch_n, min(africa, europe), "worst_region")
        record["worst_region"] = record["headline"]
        record["per_group"] = {
            "Africa": {"samples": 10, "top1": africa},
            "Europe": {"samples": 30, "top1": europe},
            "Oceania": {"samples": 0, "top1": None},
        }
        return record

    clip = [regions(0, 0.10, 0.20), regions(1, 0.40, 0.60), regions(2, 0.30, 0.70)]
    write_pair(store, "study", "fmow_clip-vit-b32", clip)
    write_pair(store, "study", "fmow_resnet50", [regions(1, 0.35, 0.50)])
    for record in clip:
        assert_written(records.EpochRecord, record)
    _, results = collect(store, tmp_path / "report")
    (fmow,) = results["datasets"]
    assert fmow["groups"] == [  # CLIP's best epoch is 1 (worst region 40%), not 2 (30%)
        {"group": "Africa", "samples": 10, "clip": 0.40, "resnet": 0.35},
        {"group": "Europe", "samples": 30, "clip": 0.60, "resnet": 0.50},
        {"group": "Oceania", "samples": 0, "clip": None, "resnet": None},
    ]
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "### fmow: accuracy per group, at each model's chosen epoch" in markdown
    assert "| Africa | 10 | 40.00 | 35.00 |" in markdown
    assert (
        '<td class="text">Europe</td><td>30</td>'
        in (tmp_path / "report" / "report.html").read_text()
    )


def test_a_second_model_of_a_family_is_shown_not_averaged_into_the_comparison(tmp_path, collect):
    """Each family's first model in the grid is the one compared; another (any open_clip or
    torchvision model by name) is in the tables, not taken for a seed of the first."""
    store = open_store(str(tmp_path / "store"))
    models = "[clip-vit-b32, resnet50, 'open_clip:ViT-B-16/laion2b_s34b_b88k']"
    grid = parse_grid(f"datasets: [cifar10]\nmodels: {models}\n", "three.yaml", "three")
    create_run(store, Run.new("three", grid, "local"), grid.pairs)
    scores = {"clip-vit-b32": 0.97, "resnet50": 0.95, "open_clip-vit-b-16-laion2b_s34b_b88k": 0.99}
    for model, best in scores.items():
        write_pair(store, "three", f"cifar10_{model}", [epoch(0, 0.9), epoch(1, best)])
    _, results = collect(store, tmp_path / "out")
    (cifar10,) = results["datasets"]
    assert cifar10["top1"]["difference"] == pytest.approx(2.0)  # 97 - 95, not mean(97, 99) - 95
    assert (cifar10["clip_model"], cifar10["resnet_model"]) == ("clip-vit-b32", "resnet50")
    assert len(cifar10["pairs"]) == 3
    assert results["overall"]["sides"] == {"clip": ["clip-vit-b32"], "resnet": ["resnet50"]}
    assert (
        "Compared: CLIP is clip-vit-b32; ResNet is resnet50"
        in (tmp_path / "out" / "report.md").read_text()
    )


def test_the_studys_published_points_are_told_apart_from_the_run_in_the_legend_too():
    """Marker and colour, not the dash alone: hollow diamonds in a lighter tint of the run's
    colour, on the plot and in the legend."""
    import re

    from kbench.report.charts import COLOURS, TINTS, Series, line_chart

    run = Series("resnet50", [(1, 60.0), (2, 62.0), (3, 64.0)])
    study = Series("resnet50 (study)", [(1, 59.0), (3, 63.0)], reference=True)
    svg = str(line_chart([run, study], "epoch", "top-1 (%)", "c"))
    diamonds = re.findall(r'<polygon [^>]*stroke="([^"]+)"[^>]*class="reference"', svg)
    assert diamonds == [TINTS[COLOURS[0]]] * 3  # two points and the legend's
    circles = re.findall(r'<circle [^>]*fill="([^"]+)"', svg)
    assert circles == [COLOURS[0]] * 4  # three points and the legend's, filled
    assert TINTS[COLOURS[0]] != COLOURS[0]
