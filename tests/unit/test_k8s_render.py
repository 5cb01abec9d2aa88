"""Rendered manifests: golden files, field by field checks, and strict schema validation.

Regenerate the goldens after an intended change with `make goldens`."""

from __future__ import annotations

import copy
import datetime as dt
import os
import re
from pathlib import Path

import jinja2
import pytest
import yaml
from click.testing import CliRunner

from kbench.cli.main import cli
from kbench.errors import ConfigError
from kbench.k8s import render as k8s_render
from kbench.k8s.render import (
    child_job,
    derived_names,
    dns_name,
    job_name,
    render_run,
    to_yaml,
    validate,
)
from kbench.k8s.settings import ClusterSettings, resolve
from kbench.runs import new_run_id
from kbench.spec import load_grid, parse_grid

GOLDEN = Path(__file__).parents[1] / "golden"

STORE = "s3://kbench-results/study"

PROFILE = {
    "image": "registry.example/kbench:0.1.0",
    "namespace": "ml",
    "gpus_per_node": 4,
    "queue": "gpu-queue",
    "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "priority_class": "research",
    "image_pull_secrets": ["regcred"],
    "s3_endpoint": "https://minio.example:9000",
    "active_deadline_seconds": 172800,
}

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def manifests(nodes: int = 1, **changes) -> list[dict]:
    settings = resolve([({**PROFILE, "nodes": nodes, **changes}, "test profile")])
    return render_run("study-golden", load_grid("all").pairs, settings, STORE)


@pytest.mark.parametrize(("nodes", "golden"), [(1, "all.yaml"), (2, "all-2-nodes.yaml")])
def test_golden_manifests(nodes, golden):
    text = to_yaml(manifests(nodes))
    path = GOLDEN / golden
    if os.environ.get("KBENCH_UPDATE_GOLDENS"):
        path.write_text(text)
        pytest.skip(f"rewrote {golden}: nothing was compared")  # never a pass
    assert text == path.read_text(), f"{golden} changed: `make goldens` if that was intended"


@pytest.mark.parametrize("nodes", [1, 2])
@pytest.mark.parametrize("version", ["1.29.0", "1.33.0", "1.37.0"])
def test_every_manifest_passes_strict_schema_validation(nodes, version):
    assert validate(manifests(nodes), version) == []


def test_strict_validation_catches_unknown_fields():
    job = manifests()[0]
    job["spec"]["template"]["spec"]["containers"][0]["gpu"] = 1
    (problem,) = validate([job], "1.33.0")
    assert "containers.0" in problem and "'gpu'" in problem


def test_job_fields():
    jobs = manifests()
    assert [m["kind"] for m in jobs] == ["Job"] * 18  # one node: no Services
    job = next(m for m in jobs if m["metadata"]["labels"]["kbench.dev/pair"] == "dtd_resnet50")
    labels = job["metadata"]["labels"]
    assert labels == {
        "app.kubernetes.io/managed-by": "kbench",
        "kbench.dev/run": "study-golden",
        "kbench.dev/pair": "dtd_resnet50",
        "kbench.dev/dataset": "dtd",
        "kbench.dev/model": "resnet50",
        "kueue.x-k8s.io/queue-name": "gpu-queue",
    }
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 1, 1)
    assert "suspend" not in spec  # Kueue suspends and admits by itself
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "Ignore",
        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
    }
    assert rules[1]["action"] == "FailJob" and rules[1]["onExitCodes"]["values"] == [2]
    assert len(rules) == 2  # one pod: a peer it loses is its own process, which crashed
    assert spec["activeDeadlineSeconds"] == 172800 and spec["ttlSecondsAfterFinished"] > 0
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["priorityClassName"] == "research" and pod["imagePullSecrets"] == [
        {"name": "regcred"}
    ]
    (container,) = pod["containers"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert container["command"][:6] == [
        "python",
        "-m",
        "kbench.jobs.launch",
        "--nnodes=1",
        "--nproc-per-node=4",
        "--standalone",
    ]
    assert container["command"][-8:] == [
        "-m",
        "kbench.jobs.train",
        "--store",
        STORE,
        "--run-id",
        "study-golden",
        "--pair",
        "dtd_resnet50",
    ]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "32Gi"}  # 8Gi per GPU
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {"/dev/shm", "/scratch", "/tmp"}  # the only writable places
    # S3 credentials only by reference, never as literal values.
    assert container["envFrom"] == [{"secretRef": {"name": "kbench-s3"}}]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert not any("SECRET" in k or "ACCESS_KEY" in k for k in env)
    assert env["AWS_ENDPOINT_URL"] == "https://minio.example:9000"


def test_a_multi_node_pair_is_a_jobset_that_restarts_as_a_gang():
    objects = manifests(nodes=2)
    assert {m["kind"] for m in objects} == {"JobSet"} and len(objects) == 18  # nothing else
    jobset = objects[0]
    name, spec = jobset["metadata"]["name"], jobset["spec"]
    # Kueue admits the JobSet: the queue is named on it, not on its Jobs or pods.
    assert jobset["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    (replicated,) = spec["replicatedJobs"]
    assert replicated["name"] == "node" and replicated["replicas"] == 1
    job = replicated["template"]
    pod = job["spec"]["template"]
    for labels in (job["metadata"]["labels"], pod["metadata"]["labels"]):
        assert labels["kbench.dev/pair"] == jobset["metadata"]["labels"]["kbench.dev/pair"]
        assert "kueue.x-k8s.io/queue-name" not in labels
    # Any pod failure fails the Job at once; the JobSet then recreates every pod.
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 2
    assert job["spec"]["completionMode"] == "Indexed"
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert [r["action"] for r in rules] == ["FailJob", "FailJob", "Ignore"]
    assert rules[0]["onPodConditions"] == [{"type": "DisruptionTarget", "status": "True"}]
    assert rules[1]["onExitCodes"]["values"] == [2]
    # A pod whose peer went away is replaced without failing the Job: the peer's own failure
    # (preempted: free; crashed: counted) decides the gang's restart.
    assert rules[2]["onExitCodes"] == {"containerName": "train", "operator": "In", "values": [3]}
    # A bad config fails the JobSet; a preemption restarts it without spending a restart.
    policy = spec["failurePolicy"]
    assert policy["maxRestarts"] == 3
    assert [(r["name"], r["action"]) for r in policy["rules"]] == [
        ("BadConfig", "FailJobSet"),
        ("Disruption", "RestartJobSetAndIgnoreMaxRestarts"),
    ]
    assert all(r["onJobFailureReasons"] == ["PodFailurePolicy"] for r in policy["rules"])
    # The patterns match the Job controller's messages for the rules above.
    bad = "Container train for pod ml/p-0 failed with exit code 2 matching FailJob rule at index 1"
    preempted = "Pod ml/p-0 has condition DisruptionTarget matching FailJob rule at index 0"
    for rule, message in zip(policy["rules"], (bad, preempted), strict=True):
        (pattern,) = rule["onJobFailureMessagePatterns"]
        assert re.search(pattern, message)
        assert not re.search(pattern, bad if message == preempted else preempted)
    # JobSet's own headless Service names pod 0 (it owns the Service: deleted with it).
    assert spec["network"] == {"enableDNSHostnames": True, "publishNotReadyAddresses": True}
    assert "subdomain" not in pod["spec"]
    assert (
        spec["ttlSecondsAfterFinished"] == 604800 and "ttlSecondsAfterFinished" not in job["spec"]
    )
    command = pod["spec"]["containers"][0]["command"]
    assert f"--rdzv-endpoint={name}-node-0-0.{name}:29500" in command
    assert f"--rdzv-id={name}" in command
    assert (
        "--rdzv-backend=c10d" in command
        and "--rdzv-conf=join_timeout=900,read_timeout=900" in command
    )


def test_a_single_node_pair_stays_a_plain_job():
    objects = manifests(nodes=1)
    assert {m["kind"] for m in objects} == {"Job"}
    spec = objects[0]["spec"]
    assert spec["backoffLimit"] == 3 and spec["ttlSecondsAfterFinished"] == 604800
    assert spec["podFailurePolicy"]["rules"][0]["action"] == "Ignore"  # preemption: retry
    assert "--standalone" in spec["template"]["spec"]["containers"][0]["command"]


def test_jobset_validation_is_strict():
    jobset = manifests(nodes=2)[0]
    assert validate([jobset], "1.33.0") == []
    typo = copy.deepcopy(jobset)
    typo["spec"]["failurePolicy"]["maxRestart"] = 3
    pod = copy.deepcopy(jobset)
    container = pod["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    container["containers"][0]["gpu"] = 1
    wrong_type = copy.deepcopy(jobset)
    wrong_type["spec"]["replicatedJobs"][0]["replicas"] = "one"
    (problem,) = validate([typo], "1.33.0")
    assert "spec.failurePolicy" in problem and "'maxRestart'" in problem
    # The pod template: by JobSet's schema, and again as its Job by Kubernetes'.
    problems = validate([pod], "1.33.0")
    assert len(problems) == 2 and all("containers.0" in p and "'gpu'" in p for p in problems)
    assert "(its Job)" in problems[1]
    (problem,) = validate([wrong_type], "1.33.0")
    assert "replicas" in problem and "'one' is not of type 'integer'" in problem


def test_names_are_dns_labels_short_enough_for_pod_hostnames():
    for nodes, prefix in ((1, ""), (2, "-node-0")):
        for manifest in manifests(nodes=nodes):
            name = manifest["metadata"]["name"]
            assert DNS_LABEL.match(name) and len(f"{name}{prefix}-99") <= 63, name
    run, pair = "a-very-long-run-identifier-0123456789", "fgvc-aircraft_clip-vit-b32"
    long = job_name(run, pair)
    assert len(long) <= 56 and DNS_LABEL.match(long)
    assert len(f"{job_name(run, pair, nodes=2)}-node-0-999") <= 63
    assert long == job_name(run, pair)
    assert long != job_name(run, "fgvc-aircraft_resnet50")
    assert dns_name("Kb", "Run_1", "x") == "kb-run-1-x"


# The rules as the controllers state them: a DNS-1123 label (an Indexed Job's pod hostname,
# the Job controller) and a DNS-1035 label (JobSet's webhook: its child Jobs and their pods).
DNS_1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def webhook_refusals(name: str, nodes: int) -> list[str]:
    """What the Job controller or JobSet's validating webhook (jobset_webhook.go: the longest
    child Job "<jobset>-<replicatedJob>-<jobIndex>" and pod name
    "<jobset>-<replicatedJob>-<jobIndex>-<podIndex>" + "-abcde", at the last indices; one
    replicated Job "node", replicas 1, completions = nodes) would refuse of `name`."""
    if nodes == 1:
        checked = [(name, DNS_1123), (f"{name}-0", DNS_1123)]
    else:
        job = f"{name}-node-0"
        checked = [(name, DNS_1035), (job, DNS_1035), (f"{job}-{nodes - 1}-abcde", DNS_1035)]
    return [n for n, rule in checked if len(n) > 63 or not rule.fullmatch(n)]


def test_every_name_passes_the_controllers_rules_at_1_to_999_nodes():
    """Every pair of the built-in grids, with seeds and library models, under the longest
    default run ids and a run id of the longest allowed length."""
    library = (
        "[clip-vit-b32, resnet50, 'open_clip:ViT-B-16/laion2b_s34b_b88k', "
        "torchvision:convnext_tiny]"
    )
    seeded = parse_grid(
        f"datasets: [fgvc-aircraft, flowers102]\nmodels: {library}\nseeds: [0, 7, 123456]\n",
        "g.yaml",
        "a-grid-with-a-long-name-for-its-seeds",
    )
    pairs = [p.name for grid in ("all", "study", "smoke") for p in load_grid(grid).pairs]
    pairs += [p.name for p in seeded.pairs]
    run_ids = [new_run_id(name) for name in ("all", "study", "x" * 60)] + ["r" * 40]
    refused = [
        (run_id, pair, nodes, webhook_refusals(job_name(run_id, pair, nodes), nodes))
        for run_id in run_ids
        for pair in pairs
        for nodes in (1, 2, 9, 10, 99, 100, 999)
    ]
    assert len(refused) == len(run_ids) * len(pairs) * 7 > 1000
    assert [r for r in refused if r[3]] == []
    # As the manifests carry them: what render derives agrees with the rules
    for name, nodes in [(job_name(run_ids[-1], pairs[0], 999), 999), (job_name("r", "p"), 1)]:
        assert all(len(n) <= 63 for n in derived_names(name, nodes))


def test_a_jobset_name_long_enough_for_a_hostname_alone_is_shortened_for_the_webhook():
    """The old rule (52 characters, room for "-node-0-<index>") let through names whose pod
    names JobSet's webhook refuses ("...-node-0-1-abcde" over 63)."""
    for grid in ("all", "study"):  # their default run ids: <grid>-YYYYMMDD-HHMMSS
        run_id = new_run_id(grid)
        old = f"kb-{run_id}-fgvc-aircraft-clip-vit-b32"
        assert len(old) <= 52 and webhook_refusals(old, 2)  # fitted the old limit, refused
        name = job_name(run_id, "fgvc-aircraft_clip-vit-b32", nodes=2)
        assert webhook_refusals(name, 2) == [] and len(name) <= 63 - len("-node-0-1-abcde")


def test_optional_blocks_are_left_out_when_unset():
    job = render_run("r", load_grid("all").pairs[:1], ClusterSettings(image="i"), STORE)[0]
    pod = job["spec"]["template"]["spec"]
    for key in (
        "nodeSelector",
        "tolerations",
        "affinity",
        "priorityClassName",
        "imagePullSecrets",
        "subdomain",
        "runtimeClassName",
    ):
        assert key not in pod, key
    # Least privilege whatever is set: kbench's ServiceAccount, no API token, a read-only root.
    assert pod["serviceAccountName"] == "kbench" and pod["automountServiceAccountToken"] is False
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert "kueue.x-k8s.io/queue-name" not in job["metadata"]["labels"]
    assert "None" not in to_yaml([job]) and "null" not in to_yaml([job])


def test_values_are_quoted_safely():
    settings = ClusterSettings(image='evil": {x}\n  hostNetwork: true', namespace="ml")
    job = render_run("r", load_grid("all").pairs[:1], settings, STORE)[0]
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == settings.image
    assert "hostNetwork" not in job["spec"]["template"]["spec"]


def test_rendering_is_strict_about_undefined_values():
    with pytest.raises(jinja2.UndefinedError):
        k8s_render._ENV.from_string("{{ m.nothing_here }}").render(m={})


def test_kbench_render_writes_one_file_per_manifest(tmp_path):
    profile = tmp_path / "profile.yaml"
    profile.write_text(yaml.safe_dump(PROFILE))
    args = ["render", "--grid", "all", "--store", STORE, "--profile", str(profile), "--nodes", "2"]
    result = CliRunner().invoke(cli, [*args, "--dry-run", "--out-dir", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    files = sorted((tmp_path / "out").iterdir())
    assert len(files) == 18  # a JobSet a pair
    assert yaml.safe_load(files[0].read_text())["metadata"]["namespace"] == "ml"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--store", STORE], "no image to run: set `image` in the grid's cluster section"),
        (["--store", "./local", "--image", "i"], "is a local folder the pods cannot reach"),
        (
            ["--store", STORE, "--image", "i", "--profile", "nope.yaml"],
            "profile nope.yaml: no such file",
        ),
    ],
)
def test_render_refuses_what_cannot_run(args, message):
    result = CliRunner().invoke(cli, ["render", "--grid", "all", *args])
    assert result.exit_code == 2
    assert message in result.output and result.output.count("\n") == 1


def test_grid_cluster_section_then_profile_then_flags(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text(
        "datasets: [dtd]\nmodels: [resnet50]\n"
        "cluster: {image: from-grid, namespace: grid-ns, nodes: 2}\n"
    )
    profile = tmp_path / "p.yaml"
    profile.write_text("namespace: profile-ns\nimage: from-profile\n")
    args = ["--store", STORE, "--profile", str(profile), "--image", "from-flag", "--dry-run"]
    result = CliRunner().invoke(cli, ["render", "--grid", str(grid), *args])
    assert result.exit_code == 0, result.output
    (jobset,) = list(yaml.safe_load_all(result.stdout))
    job = child_job(jobset)
    assert job["metadata"]["namespace"] == "profile-ns"  # the profile beats the grid
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "from-flag"
    assert job["spec"]["completions"] == 2  # from the grid, untouched by the others
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: [dtd]\nmodels: [resnet50]\ncluster: {gpus: 4}\n")
    result = CliRunner().invoke(cli, ["render", "--grid", str(bad), "--store", STORE])
    assert result.exit_code == 2 and "cluster: unknown key 'gpus'; allowed: image" in result.output


def test_cached_validation_agrees_with_kubernetes_validate():
    import kubernetes_validate

    good = [manifests(nodes=1)[0], child_job(manifests(nodes=2)[0])]
    bad = copy.deepcopy(good[1])
    bad["spec"]["completions"] = "two"
    for manifest in good:
        kubernetes_validate.validate(manifest, "1.33.0", strict=True)  # raises if invalid
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, "1.33.0", strict=True)
    assert validate(good, "1.33.0") == []
    (problem,) = validate([bad], "1.33.0")
    assert "spec.completions: 'two' is not of type 'integer'" in problem


def test_unknown_kubernetes_version_is_one_clear_error():

    with pytest.raises(ConfigError, match="no schema for Kubernetes 9.99"):
        validate(manifests()[:1], "9.99")


@pytest.mark.parametrize(("layer", "message"), [
    ({"nodes": "two"}, "profile: nodes: expected an integer, got 'two'"),
    ({"nodes": True}, "profile: nodes: expected an integer, got True"),
    ({"tolerations": "gpu"}, "profile: tolerations: expected a list, got 'gpu'"),
    ({"node_selector": ["gpu"]}, "profile: node_selector: expected a mapping, got ['gpu']"),
])  # fmt: skip
def test_cluster_settings_of_the_wrong_type_are_refused(layer, message):

    with pytest.raises(ConfigError, match=re.escape(message)):
        resolve([(layer, "profile")])
    assert resolve([({"cpu": 8}, "profile")]).cpu == 8  # quantities may be YAML numbers


ESCAPE_HATCHES = {
    "labels": {"cost-centre": "ml-42", "example.com/team": "vision"},
    "annotations": {
        "sidecar.istio.io/inject": "false",
        "kueue.x-k8s.io/podset-preferred-topology": "rack",
    },
    "env": {"AWS_CA_BUNDLE": "/etc/ssl/corp/ca.pem", "HTTPS_PROXY": "http://proxy:3128"},
    "volumes": [{"name": "corp-ca", "configMap": {"name": "corp-ca"}}],
    "volume_mounts": [{"name": "corp-ca", "mountPath": "/etc/ssl/corp", "readOnly": True}],
    "runtime_class": "nvidia",
    "gpu_resource": "nvidia.com/mig-3g.40gb",
    "run_as_user": None,
}


@pytest.mark.parametrize("nodes", [1, 2])
def test_every_escape_hatch_is_rendered_and_strictly_valid(nodes):
    rendered = manifests(nodes, **ESCAPE_HATCHES)
    assert validate(rendered, "1.33.0") == []
    job = child_job(rendered[0])
    pod = job["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    for manifest in [*rendered, job]:  # Jobs, JobSets and their Jobs
        assert manifest["metadata"]["labels"]["cost-centre"] == "ml-42"
    assert pod["metadata"]["labels"]["example.com/team"] == "vision"
    assert pod["metadata"]["annotations"] == ESCAPE_HATCHES["annotations"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["AWS_CA_BUNDLE"] == "/etc/ssl/corp/ca.pem" and env["KBENCH_STORE"] == STORE
    assert {"name": "corp-ca", "configMap": {"name": "corp-ca"}} in pod["spec"]["volumes"]
    assert ESCAPE_HATCHES["volume_mounts"][0] in container["volumeMounts"]
    assert pod["spec"]["runtimeClassName"] == "nvidia"
    assert container["resources"]["limits"]["nvidia.com/mig-3g.40gb"] == "4"
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    security = pod["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True
    assert not {"runAsUser", "runAsGroup", "fsGroup"} & set(security)  # the platform's to set


@pytest.mark.parametrize(
    ("gpus", "cpu", "memory", "shm"), [(1, "8", "40Gi", "8Gi"), (8, "64", "320Gi", "64Gi")]
)
def test_resources_follow_the_gpus_unless_set(gpus, cpu, memory, shm):
    job = manifests(gpus_per_node=gpus)[0]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    resources = container["resources"]
    assert resources["limits"] == {"cpu": cpu, "memory": memory, "nvidia.com/gpu": str(gpus)}
    assert resources["requests"] == {**resources["limits"], "ephemeral-storage": "100Gi"}
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["dshm"]["emptyDir"]["sizeLimit"] == shm
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KBENCH_CPUS"] == cpu  # the processes size their DataLoader workers by it
    set_by_hand = manifests(gpus_per_node=gpus, cpu="1500m", memory="100Gi")[0]
    (container,) = set_by_hand["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["cpu"] == "1500m"
    assert {"name": "KBENCH_CPUS", "value": "1.5"} in container["env"]


@pytest.mark.parametrize("nodes", [1, 2])
def test_a_time_limit_is_a_deadline_every_attempt_of_a_pair_knows(nodes):
    """Counted from the submission: a JobSet's restart starts a new Job (and a new
    activeDeadlineSeconds), but its pods keep the same deadline."""
    sent = dt.datetime.now(dt.timezone.utc)
    for manifest in manifests(nodes, time_limit_seconds=3600):
        (container,) = child_job(manifest)["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        deadline = dt.datetime.fromisoformat(env["KBENCH_DEADLINE"])
        assert abs((deadline - sent).total_seconds() - 3600) < 60
    (container,) = child_job(manifests(nodes)[0])["spec"]["template"]["spec"]["containers"]
    assert "KBENCH_DEADLINE" not in {e["name"] for e in container["env"]}  # none by default
    for bad in (0, -5):
        with pytest.raises(ConfigError, match="time_limit_seconds must be positive"):
            manifests(nodes, time_limit_seconds=bad)


# Common GPU nodes: (name, GPUs, vCPUs, GiB of memory), as their providers list them. What a
# pod may request is less (the kubelet's reservations and eviction threshold, daemonsets):
# taken here as 1 CPU and 8% of the memory, more than EKS, GKE and AKS reserve on these sizes.
NODE_SHAPES = [
    ("AWS g5.12xlarge / g6.12xlarge (4 x A10G / L4)", 4, 48, 192),
    ("AWS g5.48xlarge / g6.48xlarge (8 x A10G / L4)", 8, 192, 768),
    ("AWS g6.4xlarge (1 x L4)", 1, 16, 64),
    ("AWS p4d.24xlarge (8 x A100 40GB)", 8, 96, 1152),
    ("AWS p5.48xlarge (8 x H100)", 8, 192, 2048),
    ("GCP g2-standard-48 (4 x L4)", 4, 48, 192),
    ("GCP a2-highgpu-1g (1 x A100 40GB)", 1, 12, 85 * 1000**3 / 1024**3),
    ("GCP a2-highgpu-8g (8 x A100 40GB)", 8, 96, 680 * 1000**3 / 1024**3),
    ("GCP a3-highgpu-8g (8 x H100)", 8, 208, 1872 * 1000**3 / 1024**3),
    ("Azure NC24ads A100 v4 (1 x A100 80GB)", 1, 24, 220),
    ("Azure ND96isr H100 v5 (8 x H100)", 8, 96, 1900),
]


@pytest.mark.parametrize(("shape", "gpus", "vcpus", "gib"), NODE_SHAPES)
def test_the_default_pod_fits_common_gpu_nodes(shape, gpus, vcpus, gib):
    """A pod taking every GPU of the node, with the per-GPU defaults, fits what it may request
    (the 64Gi per GPU of before did not fit 4 x L4 or A10G nodes, nor one-L4 nodes)."""
    from kubernetes.utils import parse_quantity

    settings = resolve([({"gpus_per_node": gpus}, "test")])
    requests, _ = k8s_render.pod_resources(settings, "100Gi")
    assert parse_quantity(requests["cpu"]) <= vcpus - 1, shape
    assert parse_quantity(requests["memory"]) <= parse_quantity(f"{gib * 0.92:.0f}Gi"), shape


def test_escape_hatches_for_fast_networks():
    """Extra devices (EFA, RDMA) requested as limited, capabilities added after dropping all,
    annotations on the JobSet; each checked by Kubernetes' rules before anything is sent."""
    hatches = {
        "extra_resources": {"vpc.amazonaws.com/efa": 4},
        "capabilities": ["IPC_LOCK"],
        "jobset_annotations": {
            "alpha.jobset.sigs.k8s.io/exclusive-topology": "kubernetes.io/hostname"
        },
    }
    jobset = manifests(2, **hatches)[0]
    assert jobset["metadata"]["annotations"] == hatches["jobset_annotations"]
    (container,) = child_job(jobset)["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["vpc.amazonaws.com/efa"] == "4"
    assert container["resources"]["requests"]["vpc.amazonaws.com/efa"] == "4"
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["IPC_LOCK"]}
    (plain,) = child_job(manifests(2)[0])["spec"]["template"]["spec"]["containers"]
    assert "add" not in plain["securityContext"]["capabilities"]  # none unless asked
    for bad, message in [
        ({"extra_resources": {"efa": 0}}, "extra_resources.efa must be positive"),
        ({"extra_resources": {"not a name": 1}}, "extra_resources key"),
        ({"capabilities": ["ipc_lock"]}, "is not a capability like IPC_LOCK"),
        ({"jobset_annotations": {"bad key!": "x"}}, "jobset_annotations key"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            manifests(2, **bad)
