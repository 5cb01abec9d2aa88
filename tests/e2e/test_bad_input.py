"""Bad input that needs a real S3 server to be refused (tests/support/bad_input.py holds the
table; tests/unit runs the rest of it)."""

from __future__ import annotations

import pytest
from support.bad_input import CASES, check_refused

SERVER_CASES = [c for c in CASES if c.needs_server]


@pytest.mark.parametrize("case", SERVER_CASES, ids=[c.id for c in SERVER_CASES])
def test_refused_before_anything_is_created(case, tmp_path, monkeypatch, request):
    check_refused(case, tmp_path, monkeypatch, request)
