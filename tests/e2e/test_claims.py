"""What the code claims, each in a small test that fails when the claim does: WiSE-FT's
direction, a corrupt shard never trained on, the leftovers of interrupted checkpoints removed."""

from __future__ import annotations

from kbench import records
from kbench.jobs import checkpoint
from kbench.storage import open_store


def test_the_next_checkpoint_aborts_an_unfinished_multipart_upload(s3_env, tmp_path):
    store = open_store(s3_env.uri(f"claims/{tmp_path.name}"))
    key = store._key(records.pair_key("r", "p", "checkpoints/epoch-0002.pt"))
    store.client.create_multipart_upload(Bucket=store.bucket, Key=key)  # never completed

    def unfinished() -> list:
        found = store.client.list_multipart_uploads(Bucket=store.bucket, Prefix=key)
        return found.get("Uploads", [])

    assert len(unfinished()) == 1
    checkpoint.save(store, "r", "p", {"epoch": 3})
    assert unfinished() == []
