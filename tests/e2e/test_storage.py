"""The store interface, on a local folder and on a real S3 server."""

from __future__ import annotations

import pytest

from kbench.errors import ConfigError, StoreError
from kbench.s3 import S3Store
from kbench.storage import open_store, read_json, write_json


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return open_store(str(tmp_path / "store"))
    server = request.getfixturevalue("s3_env")
    return open_store(server.uri(f"{request.node.name}/prefix"))


def test_s3_prefix_is_invisible_to_callers(s3_env):
    store = S3Store(s3_env.uri("some/deep/prefix/"))
    store.write("runs/x/run.json", b"{}")
    assert store.list("runs") == ["runs/x/run.json"]
    assert S3Store(s3_env.uri("")).list("some/deep/prefix/runs") == [
        "some/deep/prefix/runs/x/run.json"
    ]


def test_s3_missing_bucket_is_one_clear_error(s3_env):
    with pytest.raises(StoreError, match="bucket 'no-such-bucket' does not exist"):
        S3Store("s3://no-such-bucket/x").read("k")


def test_s3_wrong_credentials_are_one_clear_error(s3_env, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(StoreError, match="check the credentials"):
        S3Store(s3_env.uri("x")).write("k", b"v")


def test_s3_unreachable_endpoint_is_one_clear_error(s3_env, monkeypatch):
    from support.s3server import free_ports

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_ports(1)[0]}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(StoreError, match="cannot reach the S3 endpoint"):
        S3Store(s3_env.uri("x")).list("runs")


def test_write_read_list(store):
    write_json(store, "runs/r1/run.json", {"run_id": "r1"})
    write_json(store, "runs/r1/a_b/metrics.json", {"epochs": [1]})
    store.write("runs/r2/run.json", b"{}")
    assert read_json(store, "runs/r1/run.json") == {"run_id": "r1"}
    assert store.list("runs/r1") == ["runs/r1/a_b/metrics.json", "runs/r1/run.json"]
    assert store.list("runs") == [
        "runs/r1/a_b/metrics.json",
        "runs/r1/run.json",
        "runs/r2/run.json",
    ]
    assert store.list("nothing-here") == []


def test_rewrite_replaces_the_whole_object(store):
    store.write("k.json", b"x" * 1000)
    store.write("k.json", b"short")
    assert store.read("k.json") == b"short"
    assert store.list("") == ["k.json"]  # no temporary files left visible


def test_missing_key(store):
    with pytest.raises(KeyError):
        store.read("no/such/key")
    assert read_json(store, "no/such/key", default=None) is None


def test_files_and_delete(store, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * 40_000)  # 10 MB: several parts for a multipart upload
    store.put_file("ckpt/epoch-1.pt", str(big))
    store.get_file("ckpt/epoch-1.pt", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == big.read_bytes()
    with pytest.raises(KeyError):
        store.get_file("ckpt/missing.pt", str(tmp_path / "x"))
    store.delete("ckpt/epoch-1.pt")
    store.delete("ckpt/epoch-1.pt")  # already gone: no error
    assert store.list("ckpt") == []


def test_create_writes_only_what_is_not_there(store):
    assert store.create("runs/r/claim.json", b"first")
    assert not store.create("runs/r/claim.json", b"second")
    assert store.read("runs/r/claim.json") == b"first"
    assert store.list("runs") == ["runs/r/claim.json"]  # no temporary file left behind


def test_concurrent_submits_of_one_run_id_create_it_once(store):
    """Two submits of one run id at the same moment, each with its own grid (a seed apart):
    exactly one creates the run, and every pair's config is the winner's."""
    import threading

    from kbench.runs import Run, create_run
    from kbench.spec import parse_grid

    rounds = 10
    for round_ in range(rounds):
        run_id = f"race-{round_}"
        barrier, outcomes = threading.Barrier(2), {}

        def submit(seed: int, run_id: str = run_id, barrier=barrier, outcomes=outcomes) -> None:
            models = "models: [clip-tiny, resnet-tiny]"
            text = f"datasets: [synthetic]\n{models}\ndefaults: {{seed: {seed}}}"
            grid = parse_grid(text, "g.yaml", "g")
            barrier.wait()
            try:
                create_run(store, Run.new(run_id, grid, "local"), grid.pairs)
                outcomes[seed] = "created"
            except ConfigError as e:
                outcomes[seed] = str(e)

        threads = [threading.Thread(target=submit, args=(seed,)) for seed in (1, 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [seed for seed, outcome in outcomes.items() if outcome == "created"]
        assert len(winners) == 1, outcomes
        (loser,) = set(outcomes) - set(winners)
        assert "pick another --run-id" in outcomes[loser]
        seeds = {
            read_json(store, f"runs/{run_id}/{pair}/config.json")["seed"]
            for pair in ("synthetic_clip-tiny", "synthetic_resnet-tiny")
        }
        assert seeds == set(winners)  # the loser wrote nothing
