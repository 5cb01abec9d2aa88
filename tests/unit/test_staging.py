"""`kbench data stage`: a dataset's local copy, read by its real loader, written as tar shards and
a manifest to a real S3 server; then read back the way a pod does."""

from __future__ import annotations

from kbench.registry import prompts
from kbench.staging import datasets as staging


def test_staging_shows_a_progress_bar_of_uploaded_samples(tmp_path, capsys):
    from kbench.jobs.synthetic import SyntheticShapes
    from kbench.storage import LocalStore

    splits = {"train": SyntheticShapes("train"), "test": SyntheticShapes("test")}
    staged = staging.stage(
        LocalStore(tmp_path / "store"),
        "shapes",
        splits,
        classes=prompts("synthetic")[0],
        templates=["{}"],
        train_split="train",
        groups=(),
        source="test",
        frac=0.1,
        shard_samples=16,
        progress=True,
    )
    total = sum(e["samples"] for e in staged["manifest"]["splits"].values())
    bar = capsys.readouterr().err.replace("\r", "\n").splitlines()
    assert bar[-1].startswith("staging shapes: 100%") and f"{total}/{total} [" in bar[-1]
