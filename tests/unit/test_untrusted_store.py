"""A store is often a bucket a whole team writes to: kbench reads run ids, pair names, keys and
process ids back out of it, so every one is checked before it becomes a path, a key or a signal.
Each crafted record here is refused with one line; nothing outside the store and the report
folder is read, written or signalled."""

from __future__ import annotations

import pytest
from support.builders import epoch_record, local_process, result_record

from kbench import records
from kbench.errors import StoreError
from kbench.jobs.checkpoint import POINTER, load_latest
from kbench.runs import Run
from kbench.spec import load_grid
from kbench.storage import write_json

PAIR = "synthetic_clip-tiny"


def run_record(**changes) -> dict:
    grid = load_grid("smoke")
    return {**Run.new("good", grid, "local").to_dict(), **changes}


CRAFTED_RUNS = [
    ("a run id that climbs out", "x", {"run_id": "../../outside"}, "names another run"),
    ("an absolute run id", "x", {"run_id": "/tmp/outside"}, "names another run"),
    ("a run id that is not one", "bad--", {"run_id": "bad--"}, "bad run id"),
    ("another run's id", "x", {"run_id": "good"}, "names another run"),
    ("a pair that climbs out", "x", {"run_id": "x", "pairs": ["../../../etc"]}, "pairs:"),
    ("an absolute pair", "x", {"run_id": "x", "pairs": ["/etc/passwd"]}, "pairs:"),
    ("pairs that are not a list", "x", {"run_id": "x", "pairs": "cifar10_resnet50"}, "pairs:"),
]


@pytest.mark.parametrize(
    ("folder", "changes", "says"),
    [case[1:] for case in CRAFTED_RUNS],
    ids=[case[0] for case in CRAFTED_RUNS],
)
@pytest.mark.parametrize(
    "command", ["runs", "status", "collect", "logs " + PAIR, "cancel --all", "resume"]
)
def test_a_crafted_run_record_is_refused_by_every_command(
    run_store, tmp_path, folder, changes, says, command, kbench
):
    write_json(run_store, records.run_key(folder), run_record(**changes))
    selects = [] if command == "runs" else ["--run", folder]
    before = sorted(p for p in tmp_path.rglob("*"))
    result = kbench(*command.split(), "--store", str(tmp_path / "store"), *selects)
    assert result.exit_code == 1, result.output
    assert says in result.output and result.output.count("\n") == 1, result.output
    assert sorted(p for p in tmp_path.rglob("*")) == before  # no report, no log, nothing


def test_a_config_of_another_pair_is_refused(run_store, tmp_path, kbench):
    write_json(
        run_store,
        records.pair_key("good", PAIR, records.CONFIG),
        {"dataset": "cifar10", "model": "resnet50"},
    )
    result = kbench("collect", "--store", str(tmp_path / "store"), "--run", "good")
    assert result.exit_code == 1
    assert f"runs/good/{PAIR}/config.json is not the config of {PAIR}" in result.output
    assert not (tmp_path / "kbench-reports").exists()


def _summary(**changes) -> dict:
    """A summary.json of PAIR as its job writes it, one epoch trained, with `changes`."""
    config = load_grid("smoke").pair(PAIR).config.to_dict()
    epochs = [epoch_record(0, 0.1, gpus=0), epoch_record(1, 0.5, gpus=0)]
    result = result_record(PAIR, epochs, dataset="synthetic", model="clip-tiny")
    return {"config": config, "epochs": epochs, "progress": None, "result": result, **changes}


def _without(record: dict, key: str) -> dict:
    return {k: v for k, v in record.items() if k != key}


@pytest.mark.parametrize(
    ("summary", "says"),
    [
        (_summary(config={"dataset": "cifar10", "model": "resnet50"}), "not the config"),
        ({"config": {"dataset": "synthetic", "model": "clip-tiny"}}, "not a kbench pair summary"),
        ([], "not a kbench pair summary"),
        (
            {"config": {"dataset": "synthetic", "model": "clip-tiny"}, "epochs": [], "result": 1},
            "not a kbench pair summary",
        ),
    ],
)
def test_a_crafted_pair_summary_is_refused(run_store, tmp_path, summary, says, kbench):
    write_json(run_store, records.pair_key("good", PAIR, records.SUMMARY), summary)
    for command in ("status", "collect"):
        result = kbench(command, "--store", str(tmp_path / "store"), "--run", "good")
        assert result.exit_code == 1, result.output
        (line,) = result.output.splitlines()
        assert f"runs/good/{PAIR}/summary.json" in line and says in line
    assert not (tmp_path / "kbench-reports").exists()


BROKEN_RECORDS = [
    # (what, the record's name, the record, what the refusal names)
    (
        "an epoch without its top-1",
        records.SUMMARY,
        lambda: _summary(epochs=[_without(epoch_record(1, 0.5), "top1")]),
        "epochs.0.top1: field required",
    ),
    (
        "a count that is text",
        records.SUMMARY,
        lambda: _summary(result={**_summary()["result"], "parameters": "many"}),
        "result.parameters: input should be a",
    ),
    (
        "a progress phase kbench has not",
        records.SUMMARY,
        lambda: _summary(progress={"phase": "dancing"}),
        "progress.phase: input should be",
    ),
    (
        "prediction names of no evaluation",
        records.SUMMARY,
        lambda: _summary(predictions=["../../etc"]),
        "(predictions: '../../etc')",
    ),
    (
        "an epoch number as text",
        records.METRICS,
        lambda: {"epochs": [{**epoch_record(1, 0.5), "epoch": "1"}]},
        "epochs.0.epoch: input should be a valid integer",
    ),
    (
        "a result without its environment",
        records.RESULT,
        lambda: _without(_summary()["result"], "environment"),
        "environment: field required",
    ),
    (
        "a process id as text",
        records.LOCAL_STATE,
        lambda: {**local_process("running"), "pid": "1"},
        "pid: input should be a valid integer",
    ),
]


@pytest.mark.parametrize(
    ("name", "record", "says"),
    [case[1:] for case in BROKEN_RECORDS],
    ids=[case[0] for case in BROKEN_RECORDS],
)
def test_a_record_that_breaks_the_contract_is_refused_where_it_is_read(
    run_store, tmp_path, kbench, name, record, says
):
    """status and collect read every record through its type (kbench.records): a key missing
    or of the wrong type is one line naming the record and the field, exit 1, no report."""
    write_json(run_store, records.pair_key("good", PAIR, name), record())
    for command in ("status", "collect"):
        result = kbench(command, "--store", str(tmp_path / "store"), "--run", "good")
        assert result.exit_code == 1, result.output
        (line,) = result.output.splitlines()
        assert f"runs/good/{PAIR}/{name} is not a kbench" in line and says in line, line
    assert not (tmp_path / "kbench-reports").exists()


def test_a_key_that_leads_out_of_a_local_store_is_refused(run_store, tmp_path):
    (tmp_path / "secret").write_text("not yours")
    for key in ("../secret", "runs/../../secret", str(tmp_path / "secret")):
        with pytest.raises(StoreError, match="leads outside the store"):
            run_store.read(key)
        with pytest.raises(StoreError, match="leads outside the store"):
            run_store.write(key, b"x")
    assert (tmp_path / "secret").read_text() == "not yours"


def test_a_checkpoint_pointer_to_elsewhere_is_refused(run_store, tmp_path):
    for key in (
        "runs/good/other_pair/checkpoints/epoch-0001.pt",
        f"runs/good/{PAIR}/checkpoints/../../../../secret",
        "datasets/cifar10/manifest.json",
    ):
        write_json(run_store, records.pair_key("good", PAIR, POINTER), {"epoch": 1, "key": key})
        with pytest.raises(StoreError, match="names no checkpoint of this pair"):
            load_latest(run_store, "good", PAIR, str(tmp_path / "cache"))
    assert not (tmp_path / "cache").exists()
