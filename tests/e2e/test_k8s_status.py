"""What `kbench status`, `logs` and `cancel` show a cluster user, with pods, events and Jobs in
the states a real cluster produces (set through the API emulator), and what each costs in
requests: the same few whatever the number of pairs."""

from __future__ import annotations

import json
import os
import threading
import time

import yaml
from support.k8s_emulator import NAMESPACE as NS
from support.k8s_emulator import RUN

from kbench import records
from kbench.k8s.render import job_name
from kbench.spec import load_grid
from kbench.storage import open_store, read_json

PAIRS = [p.name for p in load_grid("all").pairs]


def status(kbench) -> tuple[int, dict]:
    result = kbench("status", "-o", "json")
    pairs = json.loads(result.stdout)["pairs"]
    return result.exit_code, {p["pair"]: (p["state"], p["detail"]) for p in pairs}


UNSCHEDULABLE = "0/12 nodes are available: 12 Insufficient nvidia.com/gpu."

PULL = 'Back-off pulling image "registry.example/kbench:1"'

CONFIG = 'secret "kbench-s3" not found'

REFUSED = 'pods "x" is forbidden: violates PodSecurity "restricted:latest": runAsNonRoot != true'


def test_every_blocked_pair_says_why_in_the_words_of_whoever_blocks_it(cluster, kbench):
    assert cluster.submit().exit_code == 0
    unschedulable, pulling, configless, refused, preempted, queued = PAIRS[:6]
    for pair in (unschedulable, pulling, configless, preempted):
        cluster.set_job_status(job_name(RUN, pair), {"active": 1})
    cluster.add_pod(
        unschedulable,
        "Pending",
        name="p-unschedulable",
        conditions=[
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": UNSCHEDULABLE,
            }
        ],
    )
    cluster.add_pod(pulling, "Pending", waiting={"reason": "ImagePullBackOff", "message": PULL})
    cluster.add_pod(
        configless, "Pending", waiting={"reason": "CreateContainerConfigError", "message": CONFIG}
    )
    cluster.add_event(job_name(RUN, refused), "FailedCreate", REFUSED)
    cluster.add_pod(
        preempted,
        "Failed",
        conditions=[
            {
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "PreemptionByScheduler",
                "message": "Kueue: preempted to admit a higher-priority workload",
            }
        ],
        restarts=1,
    )
    cluster.set_job_status(job_name(RUN, queued), {}, suspend=True)

    before = len(cluster.requests("GET"))
    code, seen = status(kbench)
    assert code == 0
    requests = cluster.requests("GET")[before:]
    assert len(requests) == 3  # Jobs, Pods, and the events of the Jobs that have no pods yet
    assert "fieldSelector" in requests[2].url.query and "/events" in str(requests[2].url)
    assert seen[unschedulable] == ("pending", f"Unschedulable: {UNSCHEDULABLE}")
    assert seen[pulling] == ("pending", f"ImagePullBackOff: {PULL}")
    assert seen[configless] == ("pending", f"CreateContainerConfigError: {CONFIG}")
    assert seen[refused] == ("pending", f"FailedCreate: {REFUSED}")
    assert seen[preempted] == (
        "restarting",
        "1 restart(s); preempted: PreemptionByScheduler: Kueue: preempted to admit a "
        "higher-priority workload",
    )
    assert seen[queued] == ("queued", "waiting for admission (suspended)")
    assert seen[PAIRS[-1]] == ("pending", "waiting for pods")

    table = kbench("status")
    line = next(row for row in table.output.splitlines() if row.startswith(unschedulable))
    assert " pending " in line and line.endswith(f"Unschedulable: {UNSCHEDULABLE}")


QUOTA = (
    "couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu in "
    "flavor kbench-ml, 1 more needed"
)


def test_a_queued_pair_says_why_kueue_has_not_admitted_it(cluster, kbench, tmp_path):
    """Kueue's reason is on its Workload, read with one more list only while a pair is queued."""
    profile = tmp_path / "queue.yaml"
    profile.write_text("queue: gpu-queue\n")
    assert cluster.submit("--profile", str(profile)).exit_code == 0
    short, evicted, unseen = PAIRS[:3]
    for pair in (short, evicted, unseen):
        cluster.set_job_status(job_name(RUN, pair), {}, suspend=True)  # as Kueue's webhook does
    quota = {"type": "QuotaReserved", "status": "False", "reason": "Pending", "message": QUOTA}
    cluster.add_workload(job_name(RUN, short), "Job", [quota])
    gone = "Preempted to accommodate a workload (UID: u2) due to prioritization in the ClusterQueue"
    cluster.add_workload(
        job_name(RUN, evicted),
        "Job",
        [
            {"type": "QuotaReserved", "status": "False", "reason": "Pending", "message": "x"},
            {"type": "Evicted", "status": "True", "reason": "Preempted", "message": gone},
        ],
    )
    cluster.add_workload("kb-another-run-dtd-clip", "Job", [quota])  # not this run's

    before = len(cluster.requests("GET"))
    code, seen = status(kbench)
    workloads = [r for r in cluster.requests("GET")[before:] if "/workloads" in str(r.url)]
    assert code == 0 and len(workloads) == 1
    waiting = "waiting for Kueue queue 'gpu-queue': "
    assert seen[short] == ("queued", f"{waiting}Pending: {QUOTA}")
    assert seen[evicted] == ("queued", f"{waiting}Preempted: {gone}")
    assert seen[unseen][0] == "queued"
    assert seen[unseen][1].startswith(f"{waiting}Kueue has made no Workload for it")

    # Admitted: no pair is queued, and the Workloads are not read.
    for pair in (short, evicted, unseen):
        cluster.set_job_status(job_name(RUN, pair), {"active": 1}, suspend=False)
    before = len(cluster.requests("GET"))
    assert status(kbench)[1][short] == ("pending", "waiting for pods")
    assert not [r for r in cluster.requests("GET")[before:] if "/workloads" in str(r.url)]


def test_cancelled_and_removed_pairs_are_finished_and_status_exits_3(cluster, kbench):
    assert cluster.submit().exit_code == 0
    done = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    cancelled, removed, *rest = PAIRS
    for pair in rest:
        cluster.set_job_status(job_name(RUN, pair), done)
    assert kbench("cancel", cancelled).exit_code == 0
    batch, _ = cluster.api()
    batch.delete_namespaced_job(job_name(RUN, removed), NS)  # as its TTL or a colleague would

    result = {}
    watcher = threading.Thread(
        target=lambda: result.setdefault("r", kbench("status", "-w", "--interval", "0.1"))
    )
    watcher.start()
    watcher.join(60)
    assert not watcher.is_alive(), "status --watch did not end once every pair had finished"
    assert result["r"].exit_code == 3  # the command worked; a pair did not succeed
    assert result["r"].output.endswith(
        f"Error: 2 pair(s) did not succeed: {cancelled}, {removed}\n"
    )
    code, seen = status(kbench)
    assert code == 3
    assert seen[cancelled] == ("cancelled", "")
    assert seen[removed][0] == "gone"
    assert seen[removed][1].startswith("no Job on the cluster (removed by its TTL, deleted")

    # Submitting the run again creates what is missing, and the pair is no longer cancelled.
    again = cluster.submit()
    assert again.exit_code == 0, again.output
    assert f"{cancelled}: created" in again.output and f"{removed}: created" in again.output
    assert status(kbench)[1][cancelled] == ("pending", "waiting for pods")
    # The resubmission took the cancel mark away: once this Job is gone too, the pair reads as
    # gone (its Job removed before a result), not as the earlier cancel.
    batch.delete_namespaced_job(job_name(RUN, cancelled), NS)
    assert status(kbench)[1][cancelled][0] == "gone"


def test_cancel_needs_names_or_all(cluster, kbench):
    assert cluster.submit().exit_code == 0
    refused = kbench("cancel")
    assert refused.exit_code == 2
    assert refused.output == "Error: name the pairs to stop, or --all for every pair of the run\n"
    assert cluster.requests("DELETE") == []
    everything = kbench("cancel", "--all")
    assert everything.exit_code == 0
    assert len(cluster.requests("DELETE", "/jobs/")) == len(PAIRS)


def test_logs_of_the_failed_attempt_the_last_lines_and_every_node(cluster, kbench):
    assert cluster.submit("--nodes", "2").exit_code == 0
    pair = PAIRS[0]
    cluster.add_pod(pair, "Failed", name="first-try", index=0)
    time.sleep(0.01)  # the replacement is created after its predecessor
    cluster.add_pod(pair, "Running", name="second-try", index=0)
    cluster.add_pod(pair, "Running", name="other-node", index=1)
    cluster.serve_log(b"line 1\nline 2\n")

    def pods_asked() -> list[str]:
        return [
            str(r.url).split("/pods/")[1].split("/log")[0] for r in cluster.requests("GET", "/log")
        ]

    assert kbench("logs", pair).exit_code == 0
    assert pods_asked() == ["second-try"]  # the newest attempt
    previous = kbench("logs", pair, "--previous", "--tail", "5")
    assert previous.exit_code == 0, previous.output
    assert pods_asked()[-1] == "first-try"
    assert cluster.requests("GET", "/log")[-1].url.query["tailLines"] == "5"
    every = kbench("logs", pair, "--node", "all")
    assert every.exit_code == 0, every.output
    assert pods_asked()[-2:] == ["second-try", "other-node"]
    assert every.output == "[node 0] line 1\n[node 0] line 2\n[node 1] line 1\n[node 1] line 2\n"
    assert kbench("logs", pair, "--node", "all", "-f").exit_code == 2
    missing = kbench("logs", PAIRS[1], "--previous")
    assert missing.exit_code == 1 and "no failed pod of" in missing.output


def test_a_gang_restart_deleted_the_pods_and_their_logs_are_read_from_the_store(cluster, kbench):
    """JobSet's restart deleted the failed attempt's pods: `logs --previous` and `--node all`
    read what the pods kept in the store (as kbench.jobs.pod_log writes it), per node."""
    assert cluster.submit("--nodes", "2").exit_code == 0
    pair = PAIRS[0]
    store = open_store(os.environ["KBENCH_STORE"])
    for node in (0, 1):
        for started, pod, text in (
            ("20261202T100000Z", f"kb-first-{node}", f"node {node} attempt 1\nlost a peer\n"),
            ("20261202T110000Z", f"kb-second-{node}", f"node {node} attempt 2\n"),
        ):
            store.write(records.log_key(RUN, pair, node, started, pod), text.encode())
    store.write(records.pair_key(RUN, pair, "logs/node-0/not-a-log.txt"), b"x")  # left out

    # Every pod is gone (a TTL, say): each node's newest attempt, from the store.
    every = kbench("logs", pair, "--node", "all")
    assert every.exit_code == 0, every.output
    assert every.output == (
        "[node 0] [pod kb-second-0 is gone: its output as kept in the store]\n"
        "[node 0] node 0 attempt 2\n"
        "[node 1] [pod kb-second-1 is gone: its output as kept in the store]\n"
        "[node 1] node 1 attempt 2\n"
    )
    assert cluster.requests("GET", "/log") == []  # no pod to ask
    # The second attempt runs: --previous is the first, whose pods the restart deleted.
    cluster.add_pod(pair, "Running", name="kb-second-0", index=0)
    cluster.add_pod(pair, "Running", name="kb-second-1", index=1)
    previous = kbench("logs", pair, "--previous", "--node", "1", "--tail", "1")
    assert previous.exit_code == 0, previous.output
    assert previous.output == (
        "[pod kb-first-1 is gone: its output as kept in the store]\nlost a peer\n"
    )
    cluster.serve_log(b"live\n")
    assert kbench("logs", pair).output == "live\n"  # a pod on the cluster: its own log


def test_render_records_the_run_so_applied_manifests_train_and_a_submit_adds_nothing(
    cluster, tmp_path, kbench
):
    out = tmp_path / "manifests"
    rendered = kbench(
        "render", "--grid", "all", "--run-id", RUN, "--image", "registry.example/kbench:1",
        "-n", NS, "--out-dir", str(out),
    )  # fmt: skip
    assert rendered.exit_code == 0, rendered.output
    assert f"wrote 18 manifests to {out}; run {RUN} recorded in" in rendered.output
    assert cluster.requests() == []  # nothing sent
    store = open_store(os.environ["KBENCH_STORE"])
    for pair in PAIRS:  # what the pods read first
        assert read_json(store, records.pair_key(RUN, pair, records.CONFIG))["dataset"]
    assert read_json(store, records.run_key(RUN))["backend"] == "kubernetes"

    batch, _ = cluster.api()  # `kubectl apply -f manifests/`
    for path in sorted(out.iterdir()):
        batch.create_namespaced_job(NS, yaml.safe_load(path.read_text()))
    posts = len(cluster.requests("POST"))
    again = cluster.submit()
    assert again.exit_code == 0, again.output
    assert again.output.count("exists, skipped (job") == 18
    assert len(cluster.requests("POST")) == posts  # the submit created nothing more
