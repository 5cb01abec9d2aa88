"""A smoke sweep on the local backend with real training processes: 2 models x 3 learning
rates, rungs at epochs 1 and 3, halving by 2. Pruned trials end at their rung; survivors go on
from the rung's checkpoint (the schedule and the optimizer's step count continue); the driver
run again changes nothing; the report shows the sweep table, the chosen settings and the
comparison over the seeds of the winners."""

from __future__ import annotations

import json

import torch

from kbench import records
from kbench.halving import decisions
from kbench.jobs import checkpoint
from kbench.runs import load_run
from kbench.storage import open_store, read_json

GRID = """
datasets: [synthetic]
models:
  clip-tiny: {sweep: {lr: [1.0e-3, 4.0e-3, 2.0e-2]}}
  resnet-tiny: {sweep: {lr: [0.02, 0.05, 0.5]}}
defaults: {train_limit: 320, eval_limit: 100, epochs: 4, batch_size: 32}
halving: {eta: 2, rungs: [1, 3]}
seeds: 2
"""
RUN = "sweep-e2e"


def epochs_of(store, pair: str) -> list[dict]:
    return read_json(store, records.pair_key(RUN, pair, records.METRICS))["epochs"]


def test_a_smoke_sweep_prunes_resumes_and_reports(tmp_path, monkeypatch, kbench):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sweep.yaml").write_text(GRID)
    uri = str(tmp_path / "store")
    result = kbench("submit", "--grid", "sweep.yaml", "--store", uri, "--run-id", RUN)
    assert result.exit_code == 0, result.output
    assert "started to epoch 3 (rung 2)" in result.output

    store = open_store(uri)
    run = load_run(store, RUN)
    made = decisions(store, run)
    for cell in ("synthetic_clip-tiny", "synthetic_resnet-tiny"):
        first, second = made[cell]
        trials = [f"{cell}_trial{k}" for k in (1, 2, 3)]
        # Rung 1: ranked by validation top-1 at epoch 1; ceil(3 / 2) = 2 go on.
        values = {r["pair"]: r["value"] for r in first["ranked"]}
        assert len(first["continued"]) == 2 and len(first["pruned"]) == 1
        (pruned,) = first["pruned"]
        assert all(values[pruned] <= values[t] for t in first["continued"])
        assert [r["epoch"] for r in epochs_of(store, pruned) if r["epoch"] >= 1] == [1]
        # Every trial scored the validation split only: the test split is the seeds'.
        for t in trials:
            assert {r["split"] for r in epochs_of(store, t)} == {"holdout"}
        # Rung 2 (epoch 3): one of the two is chosen.
        assert second["epoch"] == 3 and second["winner"] in first["continued"]
        for survivor in first["continued"]:
            trained = [r for r in epochs_of(store, survivor) if r["epoch"] >= 1]
            assert [r["epoch"] for r in trained] == [1, 2, 3]  # went on; nothing retrained
            # The schedule went on: the learning rate at each epoch is the uninterrupted one
            # of a 4-epoch run, as the chosen setting's seed 0 (same config and seed) has it.
        winner = second["winner"]
        seed0 = epochs_of(store, f"{cell}_seed0")
        trial_lrs = [r["lr"] for r in epochs_of(store, winner) if r["epoch"] >= 1]
        assert trial_lrs == [r["lr"] for r in seed0 if 1 <= r["epoch"] <= 3]
        # The step counter continued over the rung: 3 epochs of steps in the schedule (and
        # in AdamW's moments), not 2 after a restart.
        state = checkpoint.load_latest(store, RUN, winner, str(tmp_path / "ckpt" / winner))
        summary = read_json(store, records.pair_key(RUN, winner, records.SUMMARY))
        per_epoch = summary["progress"]["steps"]
        assert state["epoch"] == 3 and state["scheduler"]["last_epoch"] == 3 * per_epoch
        for moments in state["optimizer"]["state"].values():
            if "step" in moments:  # AdamW's (SGD keeps none)
                assert torch.as_tensor(moments["step"]).item() == 3 * per_epoch
        # The seeds train the chosen setting, on the test split, to the end.
        chosen = read_json(store, records.pair_key(RUN, winner, records.CONFIG))
        for seed in (0, 1):
            config = read_json(store, records.pair_key(RUN, f"{cell}_seed{seed}", records.CONFIG))
            assert config == {**chosen, "seed": seed}
            assert read_json(store, records.pair_key(RUN, f"{cell}_seed{seed}", records.RESULT))

    # The driver again: no new decision, no training, no record changed.
    before = {k: store.read(k) for k in store.list(f"runs/{RUN}") if not k.endswith(".log")}
    again = kbench("sweep", "--store", uri, "--run", RUN)
    assert again.exit_code == 0, again.output
    assert "started" not in again.output
    after = {k: store.read(k) for k in store.list(f"runs/{RUN}") if not k.endswith(".log")}
    changed = {k for k in after if before.get(k) != after[k]} | (before.keys() - after.keys())
    assert changed <= {records.run_key(RUN, records.LOCAL_STATE)}, changed

    status = json.loads(kbench("status", "--store", uri, "--run", RUN, "-o", "json").stdout)
    states = {p["pair"]: p["state"] for p in status["pairs"]}
    assert sorted(states.values()).count("pruned") == 4  # one at each rung of each cell

    report = kbench("collect", "--store", uri, "--run", RUN, "--out-dir", "report")
    assert report.exit_code == 0, report.output
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert {p["pair"] for p in results["pairs"]} == {
        f"synthetic_{m}_seed{s}" for m in ("clip-tiny", "resnet-tiny") for s in (0, 1)
    }
    (compared,) = results["datasets"]
    assert compared["seeds"] == 2 and compared["top1"]["interval"] is not None
    sweep = {s["cell"]: s for s in results["sweeps"]}["synthetic_clip-tiny"]
    assert [t["pair"] for t in sweep["trials"]][0] == "synthetic_clip-tiny_trial1"
    assert sum(t["fate"] == "chosen" for t in sweep["trials"]) == 1
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "## Sweep of synthetic_clip-tiny" in markdown
    assert f"(lr {sweep['chosen']['lr']})" in markdown
