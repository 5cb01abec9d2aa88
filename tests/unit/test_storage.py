"""The store chosen by its URI."""

from __future__ import annotations

import pytest

from kbench.errors import ConfigError
from kbench.storage import LocalStore, open_store


def test_open_store_picks_by_uri(tmp_path, monkeypatch):
    assert isinstance(open_store(str(tmp_path)), LocalStore)
    monkeypatch.setenv("KBENCH_STORE", str(tmp_path / "from-env"))
    assert open_store().uri == str(tmp_path / "from-env")
    with pytest.raises(ConfigError, match="unsupported store"):
        open_store("gs://bucket/x")
