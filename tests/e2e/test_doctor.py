"""`kbench doctor` against the API emulator and a real S3 server: all green, then each check
failing on its own, with its fix."""

from __future__ import annotations

import os

import kmock
import pytest
from click.testing import CliRunner
from kubernetes import client as k8s
from kubernetes import config as kubeconfig
from support.k8s_emulator import OLD_JOBSET

from kbench.cli.main import cli
from kbench.records import dataset_key
from kbench.storage import open_store

NS = "ml"


def answer_access_reviews(cluster, denied: set[tuple[str, str]]) -> None:
    """The API server's SelfSubjectAccessReview: allowed unless (verb, resource) is denied."""

    def review(request):
        attributes = request.data["spec"]["resourceAttributes"]
        resource = attributes["resource"] + (
            f"/{attributes['subresource']}" if attributes.get("subresource") else ""
        )
        allowed = (attributes["verb"], resource) not in denied
        return {**request.data, "status": {"allowed": allowed}}

    view = cluster.emulator[
        "post", kmock.resource("authorization.k8s.io/v1/selfsubjectaccessreviews")
    ]
    view << review


def serve_version(cluster, served: dict[str, str]) -> None:
    """GET /version as an API server answers it (the client requires every field); the
    version is read from `served` at each request, so a test may change it."""

    def version(request) -> dict:
        major, minor = served["major"], served["minor"]
        return {
            "major": major,
            "minor": minor,
            "gitVersion": f"v{major}.{minor.rstrip('+')}.1",
            "gitCommit": "0" * 40,
            "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z",
            "goVersion": "go1.24",
            "compiler": "gc",
            "platform": "linux/amd64",
        }

    cluster.emulator["get /version/"] << version


VERSION = {"major": "1", "minor": "33"}


@pytest.fixture
def doctor_cluster(cluster):
    """The emulator with the namespace and two nodes, one of them with GPUs."""
    core = k8s.CoreV1Api(kubeconfig.new_client_from_config(config_file=str(cluster.kubeconfig)))
    # kmock 0.8 cannot create a Namespace (its path parser fails on POST /api/v1/namespaces),
    # so the existing one is served as a fixed reply; others get the emulator's 404.
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}
    cluster.emulator[f"get /api/v1/namespaces/{NS}"] << kmock.Response(
        status=200, payload=namespace
    )
    served = dict(VERSION)
    serve_version(cluster, served)
    cluster.served_version = served
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "kbench-s3"}}
    core.create_namespaced_secret(NS, {**secret, "stringData": {"AWS_ACCESS_KEY_ID": "k"}})
    for name, gpus in [("cpu-node", "0"), ("gpu-node", "8")]:
        core.create_node(node(name, gpus))
    return cluster


def node(name: str, gpus: str, memory: str = "1000Gi") -> dict:
    """A Node as the kubelet reports what pods may request of it."""
    allocatable = {"nvidia.com/gpu": gpus, "cpu": "64", "memory": memory}
    allocatable["ephemeral-storage"] = "400Gi"
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name},
        "status": {"allocatable": allocatable},
    }


def doctor(*extra: str):
    return CliRunner().invoke(
        cli, ["doctor", "-n", NS, "--image", "registry.example/kbench:1", *extra]
    )


def lines(output: str) -> dict[str, str]:
    return {
        line.split()[1]: line
        for line in output.splitlines()
        if line[:4] in ("ok  ", "FAIL", "??  ")
    }


def test_all_green(doctor_cluster):
    answer_access_reviews(doctor_cluster, denied=set())
    result = doctor()
    assert result.exit_code == 0, result.output
    checks = lines(result.output)
    assert set(checks) == {
        "kubeconfig",
        "version",
        "namespace",
        "permissions",
        "credentials",
        "admission",
        "image",
        "store",
        "gpus",
    }
    assert all(line.startswith("ok") for line in checks.values()), result.output
    assert "8 GPUs on 1 node(s); 1 can hold one pod" in checks["gpus"]
    reviews = doctor_cluster.requests("POST", "selfsubjectaccessreviews")
    assert {
        (
            r.data["spec"]["resourceAttributes"]["verb"],
            r.data["spec"]["resourceAttributes"]["resource"],
        )
        for r in reviews
    } >= {("create", "jobs"), ("list", "pods"), ("get", "pods")}
    (dry_run,) = doctor_cluster.requests("POST", "/jobs", dry_run=True)
    assert dry_run.url.query["fieldValidation"] == "Strict"
    assert doctor_cluster.requests("POST", "/jobs") == []  # nothing created
    assert dry_run.data["metadata"]["namespace"] == NS


def test_missing_namespace(doctor_cluster):
    answer_access_reviews(doctor_cluster, denied=set())
    result = doctor("-n", "nowhere")
    assert result.exit_code == 1
    assert (
        "FAIL namespace" in result.output and "namespace 'nowhere' does not exist" in result.output
    )
    assert "fix: kbench setup -n nowhere | kubectl apply -f -" in result.output


def test_missing_permission(doctor_cluster):
    answer_access_reviews(doctor_cluster, denied={("create", "jobs"), ("get", "pods/log")})
    result = doctor()
    assert result.exit_code == 1
    assert "not allowed: create jobs, get pods/log" in result.output
    assert "fix: kbench setup -n ml --user <you>" in result.output


def test_missing_image_bucket_and_gpus(doctor_cluster, s3_env):
    answer_access_reviews(doctor_cluster, denied=set())
    k8s.CoreV1Api(
        kubeconfig.new_client_from_config(config_file=str(doctor_cluster.kubeconfig))
    ).delete_node("gpu-node")
    result = CliRunner().invoke(cli, ["doctor", "-n", NS, "--store", "s3://no-such-bucket/x"])
    assert result.exit_code == 1
    checks = lines(result.output)
    assert checks["image"].startswith("FAIL") and checks["store"].startswith("FAIL")
    assert checks["gpus"].startswith("FAIL")
    assert "bucket 'no-such-bucket' does not exist" in result.output
    assert "fix: install the NVIDIA device plugin" in result.output
    assert result.output.rstrip().endswith("3 check(s) failed: image, store, gpus")


def test_no_node_can_hold_one_pod(doctor_cluster):
    """GPUs exist, but every GPU node has less memory than one pod asks for: said before a
    Job waits for ever as unschedulable, with what the closest node lacks."""
    answer_access_reviews(doctor_cluster, denied=set())
    core = k8s.CoreV1Api(
        kubeconfig.new_client_from_config(config_file=str(doctor_cluster.kubeconfig))
    )
    core.delete_node("gpu-node")
    core.create_node(node("small-gpu-node", "4", memory="120Gi"))
    result = doctor("--gpus-per-node", "4")
    checks = lines(result.output)
    assert result.exit_code == 1, result.output
    assert checks["gpus"].startswith("FAIL")
    assert "4 GPUs on 1 node(s), but none can hold one pod (cpu 32, memory 160Gi" in result.output
    assert "small-gpu-node has memory 120Gi < 160Gi" in result.output
    assert "fix: ask for less per pod" in result.output
    assert doctor("--gpus-per-node", "2").exit_code == 0  # 80Gi fits


def test_no_kubeconfig(doctor_cluster, monkeypatch, tmp_path):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    result = doctor()
    assert result.exit_code == 1
    assert "FAIL kubeconfig" in result.output and "no usable kubeconfig" in result.output
    assert "fix: point KUBECONFIG at a kubeconfig" in result.output


def test_datasets_of_a_grid_that_are_not_staged(doctor_cluster):
    answer_access_reviews(doctor_cluster, denied=set())
    assert lines(doctor("--grid", "all").output)["datasets"].startswith("ok")  # all staged
    store = open_store(os.environ["KBENCH_STORE"])
    store.delete(dataset_key("fmow"))
    result = doctor("--grid", "all")
    assert result.exit_code == 1
    assert lines(result.output)["datasets"].endswith("not staged in the store: fmow")
    assert f"fix: kbench data stage NAME --store {store.uri}" in result.output


def test_the_pods_secret_queue_priority_class_and_version(doctor_cluster, tmp_path):
    answer_access_reviews(doctor_cluster, denied=set())
    profile = tmp_path / "profile.yaml"
    profile.write_text("s3_secret: other-s3\nqueue: gpu-queue\npriority_class: research\n")
    result = doctor("--profile", str(profile))
    assert result.exit_code == 1
    checks = lines(result.output)
    assert checks["credentials"].endswith("secret 'other-s3' in 'ml' does not exist")
    assert (
        "fix: kbench setup -n ml --s3-secret other-s3 --secret-template > s3.yaml" in result.output
    )
    assert checks["queue"].endswith("Kueue LocalQueue 'gpu-queue' in 'ml' does not exist")
    assert checks["priority"].endswith("PriorityClass 'research' does not exist")
    assert checks["version"].startswith("ok") and checks["version"].endswith("Kubernetes 1.33")
    assert result.output.rstrip().endswith("3 check(s) failed: credentials, queue, priority")


def test_too_old_a_cluster(doctor_cluster):
    answer_access_reviews(doctor_cluster, denied=set())
    doctor_cluster.served_version["minor"] = "27+"
    checks = lines(doctor().output)
    assert checks["version"].startswith("FAIL")
    assert "Kubernetes 1.27: kbench's Jobs need 1.28 or newer" in checks["version"]


def test_admission_refusing_a_pair_says_why(doctor_cluster):
    answer_access_reviews(doctor_cluster, denied=set())
    refusal = (
        'admission webhook "validate.kyverno.svc" denied the request: '
        "require-team-label: label 'team' is required"
    )
    doctor_cluster.emulator.refusals["*"] = (400, refusal)  # to any dry run
    result = doctor()
    assert result.exit_code == 1
    checks = lines(result.output)
    assert "the API server would refuse a pair's Job: job kb-doctor-" in checks["admission"]
    assert checks["admission"].endswith(f": {refusal} (400)")


def test_a_jobset_older_than_kbenchs_failure_policy_is_refused_with_the_fix(doctor_cluster):
    """What strict field validation answers for a JobSet CRD without the rule's
    onJobFailureMessagePatterns (added in v0.10.0): the fix is to upgrade JobSet."""
    answer_access_reviews(doctor_cluster, denied=set())
    doctor_cluster.emulator.refusals["*"] = (400, OLD_JOBSET)
    result = doctor("--nodes", "2")
    assert result.exit_code == 1
    admission = lines(result.output)["admission"]
    assert admission.startswith("FAIL") and OLD_JOBSET in admission
    assert "the installed JobSet predates v0.10.0" in admission
    assert "upgrade it (kubectl apply --server-side -f https://github.com/kubernetes-sigs/" in (
        admission
    )


def test_pairs_on_several_nodes_need_jobset(doctor_cluster):
    answer_access_reviews(doctor_cluster, denied=set())
    assert "jobset" not in lines(doctor().output)  # one node: not needed, not asked
    present = doctor("--nodes", "2")
    assert present.exit_code == 0, present.output
    checks = lines(present.output)
    assert checks["jobset"].startswith("ok") and "is installed" in checks["jobset"]
    (dry_run,) = doctor_cluster.requests("POST", "/jobsets", dry_run=True)  # admission's
    assert dry_run.url.query["dryRun"] == "All" and dry_run.data["kind"] == "JobSet"
    # A cluster without JobSet's CRD answers its paths as any unknown path: 404.
    doctor_cluster.fail(
        "list",
        "jobset.x-k8s.io/v1alpha2/jobsets",
        404,
        "the server could not find the requested resource",
    )
    missing = doctor("--nodes", "2")
    assert missing.exit_code == 1
    checks = lines(missing.output)
    assert checks["jobset"].startswith("FAIL") and "is not installed" in checks["jobset"]
    assert "fix: kubectl apply --server-side -f https://github.com/kubernetes-sigs/jobset" in (
        missing.output
    )
    assert "admission" not in checks  # nothing to dry-run it against
