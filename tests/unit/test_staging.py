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


def test_a_pods_scratch_is_sized_from_what_its_pair_stages(tmp_path):
    """Shards of every split with a tenth more, 7 x the weights (them, and two checkpoints
    with AdamW's moments in transit), 4Gi of room; nothing staged: left to the fallback."""
    from kbench import records
    from kbench.spec import parse_grid
    from kbench.staged import GIB, scratch_sizes
    from kbench.storage import open_store, write_json

    store = open_store(str(tmp_path))
    shards = [{"key": f"s{i}", "sha256": "0" * 64, "bytes": GIB} for i in range(2)]
    splits = {
        "train": {"samples": 9, "shards": shards},
        "test": {"samples": 1, "shards": shards[:1]},
    }
    write_json(store, records.dataset_key("dtd"), {"name": "dtd", "splits": splits})
    write_json(store, records.weights_key("resnet50"), {"bytes": 100 * 1024**2})
    write_json(store, records.dataset_key("food101"), {"name": "food101", "splits": "x"})  # not one
    grid = parse_grid(
        "datasets: [dtd, cifar10, food101, synthetic]\nmodels: [resnet50, clip-vit-b32]",
        "g.yaml",
        "g",
    )
    sizes = scratch_sizes(store, grid.pairs)
    # 1.1 x 3 GiB + 7 x 100 MiB = 3.98 GiB -> 4Gi, + 4Gi; CLIP's weights unstaged: 1 GiB taken
    assert sizes["dtd_resnet50"] == "8Gi"
    assert sizes["dtd_clip-vit-b32"] == "15Gi"  # 3.3 + 7 -> 11, + 4
    assert sizes["synthetic_resnet50"] == "5Gi"  # drawn in the pod: the weights' room only
    assert "cifar10_resnet50" not in sizes and "food101_resnet50" not in sizes  # fallback
