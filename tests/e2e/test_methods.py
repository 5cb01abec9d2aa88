"""The smoke grid with all three methods on the local backend with real training processes:
fine-tuning, the linear probe and LP-FT of each tiny model; the report's methods rows, each
with its interval and its cost, and the families compared at each one's best method on
validation."""

from __future__ import annotations

import json

GRID = """
datasets: [synthetic]
models: [clip-tiny, resnet-tiny]
methods: [fine-tune, linear-probe, lp-ft]
defaults: {train_limit: 400, eval_limit: 200, epochs: 3}
"""


def test_the_smoke_grid_with_every_method(tmp_path, monkeypatch, kbench):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "methods.yaml").write_text(GRID)
    store = str(tmp_path / "store")
    result = kbench("submit", "--grid", "methods.yaml", "--store", store, "--run-id", "m")
    assert result.exit_code == 0, result.output
    assert "6 of 6 pairs succeeded" in result.output
    assert "synthetic_clip-tiny_lp: epoch 1/1 top1" in result.output  # the probe, fitted
    report = kbench("collect", "--store", store, "--run", "m", "--out-dir", "report")
    assert report.exit_code == 0, report.output
    results = json.loads((tmp_path / "report" / "results.json").read_text())

    rows = {(r["model"], r["method"]): r for r in results["methods"]}
    assert set(rows) == {
        ("clip-tiny", "zero-shot"),
        *((m, method) for m in ("clip-tiny", "resnet-tiny") for method in
          ("fine-tune", "linear-probe", "lp-ft")),
    }  # fmt: skip
    for (_, method), row in rows.items():
        if method == "zero-shot":
            continue
        assert row["top1"] is not None and row["val_top1"] is not None
        low, high = row["interval"]
        assert low <= row["top1"] <= high and row["seconds"] > 0
    for model in ("clip-tiny", "resnet-tiny"):
        trained = [r for (m, _), r in rows.items() if m == model and r["val_top1"] is not None]
        (best,) = [r for r in trained if r["best"]]
        assert best["val_top1"] == max(r["val_top1"] for r in trained)  # chosen on validation

    # The families at their best methods: the comparison's pairs and its line say which.
    (compared,) = results["datasets"]
    best = {m: r["method"] for (m, _), r in rows.items() if r["best"]}
    assert compared["methods"] == {"clip": best["clip-tiny"], "resnet": best["resnet-tiny"]}
    assert compared["verdict"].startswith(
        f"synthetic: CLIP ({best['clip-tiny']}) - ResNet ({best['resnet-tiny']}) top-1"
    )
    assert compared["top1"]["interval"] is not None
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "## Methods (top-1, %)" in markdown and "(best on validation)" in markdown
