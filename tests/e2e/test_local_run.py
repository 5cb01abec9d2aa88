"""The smoke study end to end: `kbench submit` runs real torchrun (2 gloo processes per pair),
the jobs write their records to a local folder or a real S3 server, and `status` and `collect`
read them back."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys

import pytest
from PIL import Image
from support.builders import assert_written
from support.training import warmup_then_cosine

from kbench import records
from kbench.storage import open_store, read_json

CHANCE = 0.1  # 10 balanced classes


@pytest.fixture(params=["local", "s3"])
def store_uri(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_env").uri(f"{request.node.name}/runs")


def test_smoke_study_end_to_end(store_uri, tmp_path, monkeypatch, kbench):
    monkeypatch.chdir(tmp_path)
    result = kbench(
        "submit",
        "--grid",
        "smoke",
        "--store",
        store_uri,
        "--run-id",
        "smoke-e2e",
        "--nproc-per-node",
        "2",
    )
    assert result.exit_code == 0, result.output
    assert "2 of 2 pairs succeeded" in result.output
    assert "synthetic_clip-tiny: epoch 0/6" in result.output  # progress, as it happened

    store = open_store(store_uri)
    for pair, first_epoch in [("synthetic_clip-tiny", 0), ("synthetic_resnet-tiny", 1)]:
        key = lambda name, pair=pair: records.pair_key("smoke-e2e", pair, name)  # noqa: E731
        epochs = read_json(store, key(records.METRICS))["epochs"]
        assert [r["epoch"] for r in epochs] == list(range(first_epoch, 7))
        for record in epochs:
            assert_written(records.EpochRecord, record)
            assert record["samples"] == 500  # the whole eval split, each sample once
            assert record["world_size"] == 2 and record["gpus"] == 0
        # Real learning: the last epoch is far above chance (and above where it started).
        assert epochs[-1]["headline"] > 3 * CHANCE, epochs[-1]
        first_trained = next(r for r in epochs if r["epoch"] == 1)
        assert epochs[-1]["train_loss"] < first_trained["train_loss"]
        summary = read_json(store, key(records.SUMMARY))  # what status and collect read
        progress = summary["progress"]
        assert_written(records.SummaryRecord, summary)
        assert progress["phase"] == "done"
        assert summary["epochs"] == epochs and summary["config"] == read_json(
            store, key(records.CONFIG)
        )
        assert summary["result"] == read_json(store, key(records.RESULT))
        config = read_json(store, key(records.CONFIG))
        assert config["schedule"] == "cosine" and config["warmup_steps"] is None
        expected = warmup_then_cosine(config["lr"], config["warmup"], 6, progress["steps"])
        assert [r["lr"] for r in epochs if r["epoch"] >= 1] == pytest.approx(expected, abs=1e-12)
        result_record = read_json(store, key(records.RESULT))
        assert_written(records.ResultRecord, result_record)
        # The epoch chosen on the validation split (a hold-out of the synthetic training
        # split) among the trained ones, reported by its test value; zero-shot on its own.
        assert all(r["val"]["split"] == "holdout" and r["val"]["samples"] == 500 for r in epochs)
        chosen = max((r for r in epochs if r["epoch"] >= 1), key=lambda r: r["val"]["headline"])
        assert (result_record["best_epoch"], result_record["best"]) == (
            chosen["epoch"],
            chosen["headline"],
        )
        assert result_record["selection"]["split"] == "holdout"
        assert (result_record["zero_shot"] is None) == (first_epoch == 1)
        if first_epoch == 0:  # CLIP: the WiSE-FT curve runs from zero-shot to fine-tuned
            curve = result_record["wise_ft"]
            assert [p["alpha"] for p in curve] == [i / 10 for i in range(11)]
            assert curve[0]["headline"] == epochs[0]["headline"]
            assert curve[-1]["headline"] == epochs[-1]["headline"]
            assert all(p["samples"] == 500 for p in curve)
        else:
            assert result_record["wise_ft"] is None
        assert read_json(store, key(records.LOCAL_STATE))["state"] == "succeeded"

    status = kbench("status", "--store", store_uri, "-o", "json")
    assert status.exit_code == 0, status.output
    states = {p["pair"]: p for p in json.loads(status.stdout)["pairs"]}
    assert {p["state"] for p in states.values()} == {"succeeded"}
    assert all(p["epoch"] == 6 == p["epochs"] for p in states.values())

    table = kbench("status", "--store", store_uri)
    assert "synthetic_clip-tiny" in table.output and "succeeded" in table.output

    report = kbench("collect", "--store", store_uri, "--out-dir", str(tmp_path / "report"))
    assert report.exit_code == 0, report.output
    rows = list(csv.reader((tmp_path / "report" / "results.csv").read_text().splitlines()))
    assert rows[0] == ["epoch", "synthetic_clip-tiny", "synthetic_resnet-tiny"]
    assert [r[0] for r in rows[1:]] == [str(e) for e in range(7)]
    assert rows[1][2] == ""  # ResNet has no epoch 0
    assert all(cell for row in rows[2:] for cell in row)
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "| epoch | synthetic_clip-tiny | synthetic_resnet-tiny |" in markdown
    # The summary rows: top-1, the difference with its interval and a winner (or "no clear
    # winner"); then the literature metric (top-1 here too).
    difference = r"[+-][\d.]+ \[[+-][\d.]+, [+-][\d.]+\]"
    row = rf"\| [\d.]+ \| [\d.]+ \| [\d.]+ \| {difference} \| [a-z -]+ \|\n"
    assert re.search(rf"\n\| synthetic {row}", markdown), markdown
    assert re.search(rf"\n\| synthetic \| top1 {row}", markdown), markdown
    for epoch in range(7):
        assert f"\n| {epoch} | " in markdown

    logs = kbench("logs", "synthetic_resnet-tiny", "--store", store_uri)
    assert logs.exit_code == 0, logs.output
    assert "kbench.jobs.train: epoch 6/6 top1 " in logs.output  # the job's own lines
    followed = kbench("logs", "synthetic_resnet-tiny", "--store", store_uri, "-f")
    assert followed.exit_code == 0 and followed.output == logs.output  # finished: ends at once


def test_a_failing_pair_is_reported_and_the_rest_still_runs(tmp_path, monkeypatch, kbench):
    """A problem only the job can find (a submit checks the tree's folders and files, not what
    each file holds): that pair fails with the job's own one line, the other trains."""
    monkeypatch.chdir(tmp_path)
    for split in ("train", "val"):
        (tmp_path / "mine" / split / "cat").mkdir(parents=True)
    for i in range(4):  # 3 to train on, 1 held out to validate on
        Image.new("RGB", (8, 8), "red").save(tmp_path / "mine" / "train" / "cat" / f"{i}.png")
    (tmp_path / "mine" / "val" / "cat" / "x.jpg").write_bytes(b"this is not a JPEG")
    unreadable = f"{tmp_path / 'mine'}/val/cat/x.jpg: not an image kbench can read ("
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        "datasets: [synthetic, imagefolder]\n"
        "models: {resnet-tiny: {epochs: 1}}\n"
        "defaults: {train_limit: 64, eval_limit: 50}\n"
        "overrides: {imagefolder_resnet-tiny: {data: mine, batch_size: 2}}\n"
    )
    store = str(tmp_path / "store")
    result = kbench(
        "submit", "--grid", str(grid), "--store", store, "--run-id", "broken", "--parallel", "2"
    )
    assert result.exit_code == 3  # a pair did not succeed
    assert "imagefolder_resnet-tiny: FAILED after" in result.output
    assert unreadable in result.output
    assert "1 of 2 pairs succeeded" in result.output
    assert result.output.rstrip().endswith("1 pair(s) did not succeed: imagefolder_resnet-tiny")

    status = json.loads(kbench("status", "--store", store, "-o", "json").stdout)
    states = {p["pair"]: (p["state"], p["detail"]) for p in status["pairs"]}
    assert states["synthetic_resnet-tiny"] == ("succeeded", "")
    assert states["imagefolder_resnet-tiny"][0] == "failed"
    assert states["imagefolder_resnet-tiny"][1].startswith(unreadable)
    # the launcher passes the job's bad-config code through torchrun
    local = read_json(
        open_store(store),
        records.pair_key("broken", "imagefolder_resnet-tiny", records.LOCAL_STATE),
    )
    assert local["returncode"] == 2


def test_the_job_runs_as_a_plain_module_without_torchrun(tmp_path):
    """One process, no torchrun: the same entry point a user can run by hand."""
    from kbench.runs import Run, create_run
    from kbench.spec import parse_grid

    grid = parse_grid(
        "datasets: [synthetic]\nmodels: {resnet-tiny: {epochs: 1}}\n"
        "defaults: {train_limit: 128, eval_limit: 37}",
        "g.yaml",
        default_name="g",
    )
    store = open_store(str(tmp_path / "store"))
    create_run(store, Run.new("plain", grid, "local"), grid.pairs)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "kbench.jobs.train",
            "--store",
            store.uri,
            "--run-id",
            "plain",
            "--pair",
            "synthetic_resnet-tiny",
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    (record,) = read_json(
        store, records.pair_key("plain", "synthetic_resnet-tiny", "metrics.json")
    )["epochs"]
    assert record["world_size"] == 1 and record["samples"] == 37


def test_cancel_stops_a_running_local_pair(tmp_path, monkeypatch, kbench):
    import threading
    import time

    monkeypatch.chdir(tmp_path)
    grid = tmp_path / "long.yaml"
    grid.write_text("datasets: [synthetic]\nmodels: {resnet-tiny: {epochs: 50}}\n")
    store = str(tmp_path / "store")
    result = {}
    runner = threading.Thread(
        target=lambda: result.setdefault(
            "submit", kbench("submit", "--grid", str(grid), "--store", store, "--run-id", "long")
        )
    )
    runner.start()
    summary = records.pair_key("long", "synthetic_resnet-tiny", records.SUMMARY)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # until it is training, not still starting up
        found = read_json(open_store(store), summary, default={})
        if (found.get("progress") or {}).get("phase") == "train":
            break
        time.sleep(0.1)
    cancelled = kbench("cancel", "--all", "--store", store)
    assert cancelled.exit_code == 0, cancelled.output
    assert cancelled.output.strip() == "run long: stopped synthetic_resnet-tiny"
    runner.join(120)
    assert not runner.is_alive()
    assert result["submit"].exit_code == 3  # a pair did not succeed
    assert "synthetic_resnet-tiny: cancelled" in result["submit"].output
    log = kbench("logs", "synthetic_resnet-tiny", "--store", store).output
    assert "SIGTERM: stopped; a restart resumes from the last checkpoint" in log
    status = json.loads(kbench("status", "--store", store, "-o", "json").stdout)
    assert status["pairs"][0]["state"] == "cancelled"
    again = kbench("cancel", "--all", "--store", store)
    assert again.output.strip() == "run long: stopped nothing running"


def test_two_seeds_of_the_smoke_study_report_with_intervals(tmp_path, monkeypatch, kbench):
    """`seeds: 2`: every pair trains twice (its own records, its own predictions), status
    lists the seeds of a pair together, and the report compares the models over both seeds
    with an interval."""
    monkeypatch.chdir(tmp_path)
    grid = tmp_path / "seeds.yaml"
    grid.write_text(
        "datasets: [synthetic]\n"
        "models: {clip-tiny: {epochs: 2}, resnet-tiny: {epochs: 2}}\n"
        "defaults: {train_limit: 256, eval_limit: 200}\n"
        "seeds: 2\n"
    )
    store_uri = str(tmp_path / "store")
    args = ["--store", store_uri, "--run-id", "seeds", "--parallel", "2"]
    result = kbench("submit", "--grid", str(grid), *args)
    assert result.exit_code == 0, result.output
    assert "4 of 4 pairs succeeded" in result.output

    store = open_store(store_uri)
    names = [f"synthetic_{m}_seed{s}" for m in ("clip-tiny", "resnet-tiny") for s in (0, 1)]
    losses = {}
    for name in names:
        summary = read_json(store, records.pair_key("seeds", name, records.SUMMARY))
        assert summary["config"]["seed"] == int(name[-1])
        evaluated = {"epoch_1", "epoch_2"} | ({"epoch_0"} if "clip" in name else set())
        assert evaluated <= set(summary["predictions"])  # CLIP's zero-shot head is epoch 0
        decoded = records.decode_predictions(
            store.read(records.pair_key("seeds", name, records.PREDICTIONS))
        )
        assert len(decoded["epoch_2"].labels) == 200
        losses[name] = [e["train_loss"] for e in summary["epochs"] if e["epoch"] >= 1]
    assert losses[names[0]] != losses[names[1]]  # another seed, another training

    status = json.loads(kbench("status", "--store", store_uri, "-o", "json").stdout)
    assert [p["pair"] for p in status["pairs"]] == names  # a pair's seeds side by side

    collected = kbench("collect", "--store", store_uri, "--out-dir", str(tmp_path / "report"))
    assert collected.exit_code == 0, collected.output
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    dataset = results["datasets"][0]
    assert dataset["seeds"] == 2
    pairs = {p["pair"]: p for p in results["pairs"]}
    clip_mean = (pairs[names[0]]["chosen_top1"] + pairs[names[1]]["chosen_top1"]) / 2
    assert dataset["top1"]["clip"] == pytest.approx(clip_mean)
    low, high = dataset["top1"]["interval"]
    assert low <= dataset["top1"]["difference"] <= high
    assert dataset["top1"]["mcnemar_p"] is None  # McNemar compares two runs, not four
    assert 0 < dataset["top1"]["p_value"] <= 1  # the bootstrap's, over samples and seeds
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "One seed per pair" not in markdown  # the intervals carry training's randomness
    assert dataset["verdict"] in collected.output
    print(collected.output)  # the closing note quotes it
