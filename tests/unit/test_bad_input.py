"""Bad input, as users and environments give it (the table in tests/support/bad_input.py, but
the cases that need an S3 server), and errors nobody named: one line, never a traceback."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from support.bad_input import CASES, check_refused

from kbench.cli.main import cli

LOCAL_CASES = [c for c in CASES if not c.needs_server]


@pytest.mark.parametrize("case", LOCAL_CASES, ids=[c.id for c in LOCAL_CASES])
def test_refused_before_anything_is_created(case, tmp_path, monkeypatch, request):
    check_refused(case, tmp_path, monkeypatch, request)


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(tmp_path, monkeypatch):
    import kbench.runs

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(kbench.runs, "list_runs", broken)
    result = CliRunner().invoke(cli, ["runs", "--store", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output == (
        "Error: RuntimeError: a bug (--debug or KBENCH_DEBUG=1 shows the traceback)\n"
    )
    result = CliRunner().invoke(cli, ["--debug", "runs", "--store", str(tmp_path)])
    assert isinstance(result.exception, RuntimeError)  # raised: click prints its traceback
