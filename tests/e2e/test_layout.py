"""The layout's two checks, shown to catch what they are there for: `lint-imports` refuses the
pod's modules importing the client, and the type check refuses a record key the contract
(kbench.records) does not declare. Each runs on a copy of the package with one line planted."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture
def copy(tmp_path) -> Path:
    """The package's sources and pyproject.toml, as the repository lays them out."""
    for folder in ("kbench", "cli", "jobs", "k8s"):
        shutil.copytree(
            ROOT / folder, tmp_path / folder, symlinks=True, ignore=shutil.ignore_patterns("__*")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def plant(path: Path, after: str, line: str) -> None:
    text = path.read_text()
    assert after in text, f"{path} has no {after!r} to plant after"
    path.write_text(text.replace(after, after + line, 1))


def run(command: list[str], where: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(where)}  # the copy's kbench, not the installed one
    return subprocess.run(command, cwd=where, env=env, capture_output=True, text=True)


def test_the_pod_importing_the_client_breaks_the_import_contract(copy):
    assert run([str(BIN / "lint-imports"), "--no-cache"], copy).returncode == 0
    plant(
        copy / "jobs" / "train.py",
        "from __future__ import annotations\n",
        ("from kbench.runs import load_run  # noqa: F401\n"),
    )
    found = run([str(BIN / "lint-imports"), "--no-cache"], copy)
    assert found.returncode == 1, found.stdout
    assert "kbench.jobs is not allowed to import kbench.runs" in found.stdout
    assert "kbench.jobs.train -> kbench.runs" in found.stdout


def test_a_misspelled_record_key_in_the_report_fails_the_type_check(copy):
    check = [sys.executable, "-m", "mypy", "-p", "kbench.report", "--cache-dir", str(copy / "c")]
    assert run(check, copy).returncode == 0
    gather = copy / "kbench" / "report" / "gather.py"
    text = gather.read_text()
    assert text.count('"chosen_epoch": chosen["epoch"] if chosen else None,') == 1
    gather.write_text(text.replace('chosen["epoch"] if chosen', 'chosen["epochs"] if chosen'))
    found = run(check, copy)
    assert found.returncode == 1, found.stdout
    assert 'TypedDict "EpochRecord" has no key "epochs"' in found.stdout
