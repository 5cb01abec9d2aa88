"""`kbench collect` on fixture records: complete, running and failed pairs, a missing epoch, a
NaN, a zero-shot number far from the published one, and data that tries to inject HTML."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import pytest

NAN = float("nan")


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("Chromium is missing: `make test` installs Debian's chromium package")
    return found


def test_html_report_renders_in_chromium(report_run, tmp_path, collect):
    collect(report_run, tmp_path / "report")
    page = (tmp_path / "report" / "report.html").as_uri()
    flags = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
    ]
    shot = tmp_path / "report.png"
    # Chromium puts a Unix socket in TMPDIR, whose path may be at most 107 bytes: a short one.
    short = tempfile.TemporaryDirectory(prefix="chromium-", dir="/tmp")
    env = {**os.environ, "TMPDIR": short.name}
    screenshot = subprocess.run(
        [*flags, "--window-size=1200,2400", f"--screenshot={shot}", page],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert shot.stat().st_size > 20_000, screenshot.stderr[-2000:]  # a real page, not blank
    dom = subprocess.run(
        [*flags, "--dump-dom", page], capture_output=True, text=True, timeout=120, env=env
    )
    short.cleanup()
    assert "CONSOLE" not in screenshot.stderr + dom.stderr  # no console messages or errors
    for dataset in ("cifar10", "dtd", "flowers102"):
        section = dom.stdout.split(f'data-dataset="{dataset}"')[1].split("</section>")[0]
        assert '<svg class="chart"' in section, dataset
        assert section.count("<polyline") >= 1 and "data-y=" in section, dataset
    assert dom.stdout.count("zero-shot</text>") == 3  # CLIP's epoch 0 marked in every plot
    assert dom.stdout.count('id="wiseft-') == 1  # the WiSE-FT curve where there is one
