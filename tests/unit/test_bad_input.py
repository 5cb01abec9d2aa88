"""Bad input, as users and environments give it: grids, flags, stores, credentials, kubeconfigs
and datasets. Every case is refused before anything is created: the documented exit code, one
line that names what to fix, no traceback, and not one file written anywhere under the test's
folder (which is also the working directory, where default stores and reports would go)."""

from __future__ import annotations

from click.testing import CliRunner

from kbench.cli.main import cli

CONFIG, FAILED = 2, 1  # the README's exit codes: bad input, and a failure that is not


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
