"""Linear probes and LP-FT: the probe is scikit-learn's fit with the validation-best C; its
features are computed once, kept in the store, never served for other weights or
preprocessing, and refused when changed; LP-FT's first step starts from the probe's head.
Pairs run in this process (one CPU process, no workers, a local store) on the tiny models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from kbench import records
from kbench.errors import StoreError
from kbench.jobs import features as cache
from kbench.jobs import train as trainer
from kbench.jobs.distributed import Job
from kbench.jobs.probe import fit_probe
from kbench.methods import PROBE_C
from kbench.runs import Run, create_run
from kbench.spec import parse_grid
from kbench.storage import open_store, read_json

GRID = (
    "datasets: [synthetic]\n"
    "models: {clip-tiny: {epochs: 2, batch_size: 16}}\n"
    "methods: [linear-probe, lp-ft]\n"
    "defaults: {train_limit: 160, eval_limit: 64, workers: 0}\n"
)
LP, LPFT = "synthetic_clip-tiny_lp", "synthetic_clip-tiny_lpft"


def blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three overlapping Gaussian classes in 8 dimensions."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    return (rng.normal(size=(n, 8)) + 1.2 * np.eye(3, 8)[y]).astype(np.float32), y


def test_the_probe_is_scikit_learns_fit_at_the_validation_best_c():
    (x, y), (vx, vy), (tx, _) = blobs(300, 0), blobs(200, 1), blobs(200, 2)
    probe = fit_probe(x, y, vx, vy, classes=3)
    # The reference: each C fitted by scikit-learn directly, scored on validation.
    scores = {c: LogisticRegression(C=c, max_iter=1000).fit(x, y).score(vx, vy) for c in PROBE_C}
    assert probe.val_top1 == pytest.approx(scores, abs=1e-12)
    best = max(PROBE_C, key=lambda c: (scores[c], -c))  # ties: the stronger regularisation
    assert probe.c == best and len(set(scores.values())) > 1
    reference = LogisticRegression(C=best, max_iter=1000).fit(x, y)
    np.testing.assert_allclose(probe.weight, reference.coef_, atol=1e-5)
    np.testing.assert_allclose(probe.bias, reference.intercept_, atol=1e-5)
    assert (probe.logits(tx).argmax(1) == reference.predict(tx)).all()


def test_a_class_the_training_split_lacks_is_never_predicted():
    x, y = blobs(200, 0)
    keep = y != 1
    probe = fit_probe(x[keep], y[keep], x, y, classes=3, cs=(1.0,))
    assert probe.weight.shape == (3, 8) and 1 not in probe.logits(x).argmax(1)


@pytest.fixture
def store(tmp_path):
    store = open_store(str(tmp_path / "store"))
    grid = parse_grid(GRID, "g.yaml", "g")
    for run_id in ("first", "again"):
        create_run(store, Run.new(run_id, grid, "local"), grid.pairs)
    return store


def run_pair(store, run_id: str, pair: str) -> None:
    trainer.train(Job(store, run_id, pair, 0, 1, torch.device("cpu")))


def cached(store) -> list[str]:
    return sorted(k for k in store.list("features") if k.endswith(".npz"))


def test_features_are_computed_once_and_reused_by_the_next_probe(store, capsys):
    run_pair(store, "first", LP)
    assert "features computed" in capsys.readouterr().out
    (kept,) = cached(store)
    run_pair(store, "again", LP)
    assert "features read from the store" in capsys.readouterr().out
    assert cached(store) == [kept]
    results = [
        read_json(store, records.pair_key(r, LP, records.RESULT)) for r in ("first", "again")
    ]
    assert results[0]["best"] == results[1]["best"]  # the same probe on the same features


def test_other_weights_or_preprocessing_are_never_served_the_old_features(store, monkeypatch):
    run_pair(store, "first", LP)
    (kept,) = cached(store)
    # Another preprocessing (normalised otherwise): its own features, computed anew.
    monkeypatch.setattr(cache, "normalization", lambda info: ((0.5,) * 3, (0.5,) * 3))
    run_pair(store, "again", LP)
    assert len(cached(store)) == 2 and kept in cached(store)
    # Other weights: another key.
    config = records.load_config(store, "first", LP)
    splits = cache.feature_splits(config, trainer.model_info(config.model), store)
    info = trainer.model_info(config.model)
    staged = [None, Path("aa11-w.pt"), Path("bb22-w.pt")]  # a staged file leads with its SHA
    keys = {cache.cache_key(cache.produced_by(config, info, splits, w)) for w in staged}
    assert len(keys) == 3


def test_a_changed_features_file_is_refused(store):
    run_pair(store, "first", LP)
    (kept,) = cached(store)
    data = bytearray(store.read(kept))
    data[-100] ^= 0xFF
    store.write(kept, bytes(data))
    with pytest.raises(StoreError, match="does not match its recorded SHA-256"):
        run_pair(store, "again", LP)


def test_lp_ft_starts_from_the_probes_head(store):
    run_pair(store, "first", LP)
    run_pair(store, "first", LPFT)
    key = lambda pair: records.pair_key("first", pair, records.PREDICTIONS)  # noqa: E731
    probe = records.decode_predictions(store.read(key(LP)))["epoch_1"]
    start = records.decode_predictions(store.read(key(LPFT)))["epoch_0"]  # before a step
    # The same head on the same images: the probe's predictions, up to float32 rounding.
    assert (probe.predicted == start.predicted).mean() >= 0.98
    epochs = read_json(store, records.pair_key("first", LPFT, records.METRICS))["epochs"]
    assert [e["epoch"] for e in epochs] == [0, 1, 2]  # then fine-tuned as its recipe says
