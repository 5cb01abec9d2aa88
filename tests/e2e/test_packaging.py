"""The client stays torch-free, and an installed (non-editable) wheel finds its data files."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CLIENT_MODULES = [
    "kbench.cli.main",
    "kbench.backends.local",
    "kbench.report",
    "kbench.runs",
    "kbench.spec",
    "kbench.storage",
    "kbench.k8s.backend",
    "kbench.k8s.render",
    "kbench.k8s.doctor",
    "kbench.k8s.setup",
]


def test_the_client_never_imports_torch():
    code = (
        f"import sys, importlib; [importlib.import_module(m) for m in {CLIENT_MODULES!r}]; "
        "from kbench.spec import load_grid; load_grid('all'); "
        "from kbench.cli.main import cli; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', "
        "'open_clip')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_installed_wheel_finds_every_grid_recipe_and_data_file(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("kbench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {n.split("/")[0] for n in names if not n.startswith("kbench-")}
    assert top_level == {"kbench"}  # no bare `cli` or `jobs` in site-packages
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    code = (
        "import kbench, kbench.cli.main, kbench.jobs, kbench.k8s\n"
        "from kbench.spec import builtin_grids, load_grid\n"
        "from kbench.registry import DATASETS, prompts\n"
        "grids = builtin_grids(); [load_grid(g) for g in grids]\n"
        "[prompts(d) for d in DATASETS]\n"
        "print(kbench.__file__); print(','.join(grids))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=True,
    )
    location, grids = out.stdout.split()
    assert location.startswith(str(target))  # the wheel's copy, not the source tree
    assert {"all", "smoke"} <= set(grids.split(","))
