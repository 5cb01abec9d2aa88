"""Pairs that span nodes run as JobSets: what `submit`, `status`, `logs`, `cancel` and `doctor`
send and show, through the real `kubernetes` client against the API emulator (JobSets moved
through the states the JobSet controller gives them), and a cluster without JobSet refused
before anything is created."""

from __future__ import annotations

import json
import os

from kubernetes import client as k8s
from kubernetes import config as kubeconfig
from support.k8s_emulator import NAMESPACE as NS
from support.k8s_emulator import RUN, kubernetes_emulator

from kbench.k8s.render import job_name
from kbench.spec import load_grid
from kbench.storage import open_store

PAIRS = [p.name for p in load_grid("all").pairs]

JOBSETS = f"/apis/jobset.x-k8s.io/v1alpha2/namespaces/{NS}/jobsets"

GANG = ("--nodes", "2", "--gpus-per-node", "8")


def jobset(pair: str) -> str:
    return job_name(RUN, pair, nodes=2)


def set_jobset(pair: str, status: dict, suspend: bool | None = None) -> None:
    api = k8s.CustomObjectsApi(kubeconfig.new_client_from_config(os.environ["KUBECONFIG"]))
    name, where = jobset(pair), ("jobset.x-k8s.io", "v1alpha2", NS, "jobsets")
    api.patch_namespaced_custom_object_status(*where, name, {"status": status})
    if suspend is not None:
        api.patch_namespaced_custom_object(*where, name, {"spec": {"suspend": suspend}})


def condition(kind: str, reason: str = "", message: str = "") -> dict:
    return {"type": kind, "status": "True", "reason": reason, "message": message}


def test_submit_creates_one_jobset_a_pair_and_resubmitting_duplicates_nothing(cluster):
    result = cluster.submit(*GANG)
    assert result.exit_code == 0, result.output
    posts = cluster.requests("POST", JOBSETS)
    assert len(posts) == 18 and len(cluster.requests("POST")) == 18  # no Jobs, no Services
    sent = {p.data["metadata"]["name"]: p.data for p in posts}
    assert sent[jobset("dtd_resnet50")]["kind"] == "JobSet"
    assert f"dtd_resnet50: created (jobset {jobset('dtd_resnet50')})" in result.output
    (listed,) = cluster.requests("GET", JOBSETS)
    assert listed.url.query["labelSelector"].endswith(f"kbench.dev/run={RUN}")

    again = cluster.submit(*GANG)
    assert again.exit_code == 0 and again.output.count("exists, skipped (jobset") == 18
    assert len(cluster.requests("POST")) == 18
    replaced = cluster.submit(*GANG, "--replace")
    assert replaced.exit_code == 0, replaced.output
    deletes = cluster.requests("DELETE", JOBSETS)
    assert len(deletes) == 18 and len(cluster.requests("POST", JOBSETS)) == 36
    # Background propagation: the garbage collector takes the child Jobs, pods and Service.
    assert all(d.url.query["propagationPolicy"] == "Background" for d in deletes)


def test_status_reads_the_gang_from_the_jobset_in_two_requests(cluster, kbench):
    assert cluster.submit(*GANG).exit_code == 0
    done, failed, restarting, queued, running, refused = PAIRS[:6]
    set_jobset(done, {"conditions": [condition("Completed", "AllJobsCompleted")]})
    message = "jobset failed due to reaching max number of restarts"
    set_jobset(failed, {"conditions": [condition("Failed", "MaxRestartsExceeded", message)]})
    set_jobset(restarting, {"restarts": 2, "replicatedJobsStatus": [{"name": "node", "active": 1}]})
    cluster.add_pod(restarting, "Running", index=0)
    set_jobset(queued, {}, suspend=True)
    set_jobset(running, {"replicatedJobsStatus": [{"name": "node", "active": 1}]})
    cluster.add_pod(running, "Running", index=0, name="r-0")
    cluster.add_pod(running, "Running", index=1, name="r-1")
    # The child Job (not the JobSet) is what could not create its pods.
    cluster.add_event(f"{jobset(refused)}-node-0", "FailedCreate", "exceeded quota: gpu")
    before = len(cluster.requests())

    result = kbench("status", "-o", "json")
    assert result.exit_code == 3  # a pair failed
    states = {p["pair"]: (p["state"], p["detail"]) for p in json.loads(result.stdout)["pairs"]}
    assert states[done] == ("succeeded", "")
    assert states[failed] == ("failed", f"MaxRestartsExceeded: {message}")
    assert states[restarting] == ("restarting", "2 restart(s)")
    assert states[queued][0] == "queued"
    assert states[running] == ("running", "")
    assert states[refused] == ("pending", "FailedCreate: exceeded quota: gpu")
    asked = [str(r.url.path) for r in cluster.requests()[before:] if r.method.value == "GET"]
    assert sorted(p.rsplit("/", 1)[1] for p in asked if "/namespaces/" in p) == [
        "events",  # only because some JobSets have no pods yet
        "jobsets",
        "pods",
    ]


def test_logs_come_from_the_newest_pod_of_each_node(cluster, kbench):
    assert cluster.submit(*GANG).exit_code == 0
    pair = PAIRS[0]
    cluster.add_pod(pair, "Running", name="gang-0", index=0)
    cluster.add_pod(pair, "Running", name="gang-1", index=1)
    cluster.serve_log(b"epoch 1\n")
    every = kbench("logs", pair, "--node", "all")
    assert every.exit_code == 0, every.output
    assert every.output == "[node 0] epoch 1\n[node 1] epoch 1\n"


def test_cancel_deletes_the_jobset_and_status_says_cancelled(cluster, kbench):
    assert cluster.submit(*GANG).exit_code == 0
    cancelled, removed = PAIRS[:2]
    result = kbench("cancel", cancelled)
    assert result.exit_code == 0, result.output
    (deleted,) = cluster.requests("DELETE")
    assert str(deleted.url.path).endswith(f"{JOBSETS}/{jobset(cancelled)}")
    api = k8s.CustomObjectsApi(kubeconfig.new_client_from_config(os.environ["KUBECONFIG"]))
    api.delete_namespaced_custom_object(  # as its TTL or a colleague would
        "jobset.x-k8s.io", "v1alpha2", NS, "jobsets", jobset(removed)
    )
    seen = {p["pair"]: p for p in json.loads(kbench("status", "-o", "json").stdout)["pairs"]}
    assert seen[cancelled]["state"] == "cancelled"
    assert seen[removed]["state"] == "gone"
    assert seen[removed]["detail"].startswith("no JobSet on the cluster (removed by its TTL")


def test_a_cluster_without_jobset_is_refused_before_anything_is_created(
    tmp_path, monkeypatch, s3_env, kbench
):
    uri = s3_env.uri(f"k8s/{tmp_path.name}")
    monkeypatch.setenv("KBENCH_STORE", uri)
    with kubernetes_emulator(tmp_path, without=("jobset.x-k8s.io/v1alpha2/jobsets",)) as bare:
        monkeypatch.setenv("KUBECONFIG", str(bare.kubeconfig))
        result = kbench(
            "submit", "--grid", "smoke", "--backend", "kubernetes", "--run-id", RUN,
            "--image", "registry.example/kbench:1", "-n", NS, *GANG,
        )  # fmt: skip
        assert result.exit_code == 2, result.output
        (line,) = result.output.splitlines()
        assert "this cluster has no JobSet (jobset.x-k8s.io/v1alpha2)" in line
        assert "kubectl apply --server-side -f https://github.com/kubernetes-sigs/jobset" in line
        assert "or use --nodes 1" in line
        assert bare.requests("POST") == []
    assert open_store(uri).list("runs/") == []  # no run recorded


def test_a_run_keeps_its_node_count(cluster):
    """Resubmitting with another --nodes would leave Jobs and JobSets of one run side by side."""
    assert cluster.submit().exit_code == 0
    result = cluster.submit(*GANG)
    assert result.exit_code == 2, result.output
    (line,) = result.output.splitlines()
    assert f"run {RUN} was submitted with --nodes 1: submit it again with that" in line
    assert cluster.requests("POST", JOBSETS) == []
