"""One owner for the facts derived from a pair's records (kbench.pairs): the trainer's
result.json, `kbench status` and the report read the same records and must say the same thing."""

from __future__ import annotations

from support.builders import (
    FOUR_MODELS,
    job_recorder,
    metrics,
    new_run,
    train_pair,
)

from kbench import records
from kbench.jobs.metrics import Evaluation
from kbench.storage import open_store, read_json


def test_status_and_collect_read_one_object_a_pair_once_its_job_has_started(s3_env, tmp_path):
    """summary.json holds what the job wrote (config, epochs, progress, result): one GET per
    pair for status and collect. Pairs not started yet, and runs of an earlier kbench (separate
    records only), are read from the separate records, with the same outcome."""
    from kbench.report.gather import gather
    from kbench.runs import load_run, read_pairs

    store = open_store(s3_env.uri(f"summary/{tmp_path.name}"))
    pairs = new_run(store, "one", FOUR_MODELS)
    done, running, older, waiting = pairs
    train_pair(store, "one", done, {0: 0.2, 1: 0.3})
    recorder = job_recorder(store, "one", running)
    recorder.epoch(1, Evaluation(metrics(0.5)), seconds=1.0)
    recorder.step(epoch=2, step=2, seconds=1.0)
    train_pair(store, "one", older, {1: 0.4})
    store.delete(records.pair_key("one", older.name, records.SUMMARY))  # as an old job left it
    summary = read_json(store, records.pair_key("one", done.name, records.SUMMARY))
    assert summary["result"] == read_json(store, records.pair_key("one", done.name, "result.json"))
    assert summary["progress"]["phase"] == "done"

    gets = []
    store.client.meta.events.register("before-send.s3", lambda request, **_: gets.append(request))
    run = load_run(store, "one")
    gets.clear()
    found = {p.pair: p for p in read_pairs(store, run, with_progress=True)}
    per_pair = {pair.name: sum(f"/{pair.name}/" in str(r.url) for r in gets) for pair in pairs}
    assert per_pair == {done.name: 1, running.name: 1, older.name: 5, waiting.name: 5}
    progress, result = found[running.name].progress, found[done.name].result
    assert progress is not None and progress["step"] == 2 and found[running.name].result is None
    assert result is not None and result["best"] == 0.3
    assert (found[older.name].result or {}).get("best") == 0.4
    assert found[waiting.name].epochs == [] and found[waiting.name].result is None
    results = gather(store, run, {})
    states = {p["pair"]: p["state"] for p in results["pairs"]}
    assert states[done.name] == states[older.name] == "succeeded"
