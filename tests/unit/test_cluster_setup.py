"""The image and the cluster set-up: the Dockerfile's contract with the manifests, hadolint,
the set-up manifests' schema, and a Role that grants exactly the API calls kbench makes."""

from __future__ import annotations

import yaml
from click.testing import CliRunner

from kbench.cli.main import cli
from kbench.k8s.render import validate
from kbench.k8s.settings import ClusterSettings
from kbench.k8s.setup import secret_template, setup_manifests


def test_setup_manifests_pass_strict_validation():
    settings = ClusterSettings(namespace="ml", queue="gpu-queue")
    manifests = setup_manifests(settings, ["alice"], ["ml-team"], kueue=True)
    kinds = [m["kind"] for m in manifests]
    assert kinds == [
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ResourceFlavor",
        "ClusterQueue",
        "LocalQueue",
    ]  # no Secret: applying the stream again must not blank credentials someone filled in
    core = [m for m in manifests if not m["apiVersion"].startswith("kueue.")]
    assert validate(core, "1.33.0") == []  # Kueue's CRDs have no schema in kubernetes-validate
    (secret,) = secret_template(settings)
    assert secret["kind"] == "Secret" and secret["metadata"]["namespace"] == "ml"
    assert set(secret["stringData"].values()) == {""}  # a template: no credential in it
    assert validate([secret], "1.33.0") == []
    # Kueue's cluster-wide objects are this namespace's own: nothing a platform has is clobbered
    flavor, cluster_queue = manifests[-3], manifests[-2]
    assert flavor["metadata"]["name"] == cluster_queue["metadata"]["name"] == "kbench-ml"
    assert cluster_queue["spec"]["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "ml"}
    }
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
    assert kinds == ["Namespace", "ServiceAccount", "Role", "RoleBinding"]
    template = CliRunner().invoke(cli, ["setup", "-n", "ml", "--secret-template"])
    assert [d["kind"] for d in yaml.safe_load_all(template.output)] == ["Secret"]
    default = next(yaml.safe_load_all(CliRunner().invoke(cli, ["setup"]).output))
    assert default["metadata"]["name"] == ClusterSettings().namespace == "kbench"  # one default
