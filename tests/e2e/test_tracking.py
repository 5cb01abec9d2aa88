"""Experiment tracking with a real MLflow server (`mlflow server` on loopback, SQLite, a local
artifact folder): a smoke run's pairs appear with their parameters and every epoch's metrics;
a tracker that is away never stops training, and what it missed arrives once it is back:
with the job's next epoch, or by `kbench collect --track`."""

from __future__ import annotations

import pytest
from support.builders import epoch_record
from support.mlflow_server import MlflowServer

from kbench import tracking
from kbench.jobs.tracker import Tracker

GRID = """
datasets: [synthetic]
models: [clip-tiny, resnet-tiny]
defaults: {train_limit: 400, eval_limit: 100, epochs: 3}
"""


@pytest.fixture
def server(tmp_path):
    found = MlflowServer(tmp_path / "mlflow")
    found.root.mkdir()
    found.start()
    yield found
    found.stop()


def steps(uri: str, run_id: str, pair: str, metric: str = "top1") -> list[int]:
    client = tracking.client(uri)
    experiment = client.get_experiment_by_name(run_id)
    (found,) = client.search_runs([experiment.experiment_id], f"tags.`kbench.pair` = '{pair}'")
    return sorted(m.step for m in client.get_metric_history(found.info.run_id, metric))


def test_a_smoke_runs_pairs_appear_with_params_and_every_epoch(
    server, tmp_path, monkeypatch, kbench
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    (tmp_path / "g.yaml").write_text(GRID)
    store = str(tmp_path / "store")
    result = kbench("submit", "--grid", "g.yaml", "--store", store, "--run-id", "tracked")
    assert result.exit_code == 0, result.output
    client = tracking.client(server.uri)
    experiment = client.get_experiment_by_name("tracked")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"synthetic_clip-tiny", "synthetic_resnet-tiny"}
    clip = runs["synthetic_clip-tiny"]
    assert clip.data.params["lr"] == "0.002" and clip.data.params["model"] == "clip-tiny"
    assert clip.data.tags["kbench.state"] == "succeeded" and clip.info.status == "FINISHED"
    assert steps(server.uri, "tracked", "synthetic_clip-tiny") == list(range(4))  # 0: zero-shot
    assert steps(server.uri, "tracked", "synthetic_resnet-tiny") == list(range(1, 4))
    assert steps(server.uri, "tracked", "synthetic_clip-tiny", "val_top1") == list(range(4))


def test_a_tracker_away_never_stops_training_and_gets_what_it_missed(
    server, tmp_path, monkeypatch, kbench
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    server.stop()  # away for the whole run
    (tmp_path / "g.yaml").write_text(GRID)
    store = str(tmp_path / "store")
    result = kbench("submit", "--grid", "g.yaml", "--store", store, "--run-id", "away")
    assert result.exit_code == 0, result.output  # trained, and said so
    assert "2 of 2 pairs succeeded" in result.output
    log = (tmp_path / "store" / "runs" / "away" / "synthetic_clip-tiny" / "train.log").read_text()
    assert log.count("did not take the records") == 1  # one warning line, not one an epoch
    server.start()
    sent = kbench("collect", "--store", store, "--run", "away", "--track", "--out-dir", "r")
    assert sent.exit_code == 0, sent.output
    assert steps(server.uri, "away", "synthetic_clip-tiny") == list(range(4))
    again = kbench("collect", "--store", store, "--run", "away", "--track", "--out-dir", "r")
    assert "0 sent now" in again.output  # each epoch once


def test_epochs_missed_while_away_go_with_the_next_epochs_send(server):
    """The job's own resend, with the real client: a send fails while the server is away,
    the next one (after it is back) carries the missed epochs too."""
    epochs = [epoch_record(e, 0.5 + e / 100) for e in range(4)]
    tracker = Tracker(server.uri, "resend", "synthetic_clip-tiny", {"lr": 0.1})
    server.stop()
    tracker.send(epochs[:2])
    tracker.flush(timeout=30)
    server.start()
    tracker.send(epochs[:3])
    tracker.close(timeout=30)
    assert steps(server.uri, "resend", "synthetic_clip-tiny") == [0, 1, 2]
