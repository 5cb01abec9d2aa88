"""The image and the cluster set-up: the Dockerfile's contract with the manifests, hadolint,
the set-up manifests' schema, and a Role that grants exactly the API calls kbench makes."""

from __future__ import annotations

import dataclasses

import yaml
from click.testing import CliRunner
from kubernetes.utils import parse_quantity

from kbench.cli.main import cli
from kbench.k8s.render import child_job, render_run, validate
from kbench.k8s.settings import ClusterSettings
from kbench.k8s.setup import secret_template, setup_manifests
from kbench.spec import load_grid


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


def test_the_kueue_example_can_admit_every_pod_kbench_renders():
    """Kueue admits a pod only if its ClusterQueue covers every resource the pod requests, with
    quota for it: the example covers what every built-in grid's pods request, at 1 and 2 nodes."""
    settings = ClusterSettings(
        namespace="ml",
        queue="gpu-queue",
        gpus_per_node=8,
        extra_resources={"vpc.amazonaws.com/efa": 4},
    )
    manifests = setup_manifests(settings, [], [], kueue=True)
    assert {m["apiVersion"] for m in manifests[-3:]} == {"kueue.x-k8s.io/v1beta2"}
    (group,) = manifests[-2]["spec"]["resourceGroups"]
    (flavor,) = group["flavors"]
    quota = {r["name"]: parse_quantity(r["nominalQuota"]) for r in flavor["resources"]}
    assert set(group["coveredResources"]) == set(quota)
    for grid in ("all", "study", "smoke"):
        for nodes in (1, 2):
            pods = render_run(
                "r",
                load_grid(grid).pairs,
                dataclasses.replace(settings, nodes=nodes, image="i"),
                "s3://b",
            )
            for manifest in pods:
                spec = manifest["spec"]
                template = (
                    spec["replicatedJobs"][0]["template"]["spec"]["template"]
                    if manifest["kind"] == "JobSet"
                    else spec["template"]
                )
                for container in template["spec"]["containers"]:
                    requests = container["resources"]["requests"]
                    assert set(requests) <= set(quota), manifest["metadata"]["name"]
                    for name, amount in requests.items():
                        assert parse_quantity(amount) * nodes <= quota[name], (name, amount)


def test_the_network_policy_lets_a_pairs_pods_reach_each_other_dns_and_the_store():
    """For namespaces that deny by default: schema-valid, selecting exactly kbench's pods (of
    Jobs and JobSets), peers on any port, DNS, and the store's ports."""
    settings = ClusterSettings(namespace="ml", s3_endpoint="http://minio.storage:9000")
    (policy,) = [
        m
        for m in setup_manifests(settings, [], [], network_policy=True)
        if m["kind"] == "NetworkPolicy"
    ]
    assert validate([policy], "1.33.0") == []
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    selector = spec["podSelector"]["matchLabels"]
    for nodes in (1, 2):
        rendered = render_run(
            "r",
            load_grid("smoke").pairs,
            dataclasses.replace(settings, nodes=nodes, image="i"),
            "s3://b",
        )
        for manifest in rendered:
            template = child_job(manifest)["spec"]["template"]
            assert selector.items() <= template["metadata"]["labels"].items()
    (peers,) = spec["ingress"]
    assert peers == {"from": [{"podSelector": {"matchLabels": selector}}]}  # any port
    assert spec["egress"][0] == {"to": [{"podSelector": {"matchLabels": selector}}]}
    ports = [p for rule in spec["egress"][1:] for p in rule["ports"]]
    assert {(p["protocol"], p["port"]) for p in ports} == {
        ("UDP", 53),
        ("TCP", 53),
        ("TCP", 443),
        ("TCP", 9000),
    }
    assert "NetworkPolicy" not in {m["kind"] for m in setup_manifests(settings, [], [])}
