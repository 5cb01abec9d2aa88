"""The Kubernetes backend through the real `kubernetes` client, over HTTP, against an API
emulator, with a real kubeconfig and a real S3 server: what is sent, and what the user sees."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest
from support.k8s_emulator import NAMESPACE as NS
from support.k8s_emulator import OLD_JOBSET, RUN, write_kubeconfig
from support.s3server import free_ports

from kbench.k8s.render import job_name
from kbench.records import dataset_key, weights_key
from kbench.runs import check_run_id
from kbench.spec import load_grid
from kbench.storage import open_store, read_json, write_json

SELECTOR = "app.kubernetes.io/managed-by=kbench,kbench.dev/run=study"


def test_submit_creates_one_job_per_pair_and_resubmitting_duplicates_nothing(cluster):
    result = cluster.submit()
    assert result.exit_code == 0, result.output
    assert "18 of 18 pairs on the cluster" in result.output
    posts = cluster.requests("POST", f"/apis/batch/v1/namespaces/{NS}/jobs")
    assert len(posts) == 18
    bodies = {p.data["metadata"]["name"]: p.data for p in posts}
    job = bodies[job_name(RUN, "dtd_resnet50")]
    assert job["metadata"]["labels"]["kbench.dev/pair"] == "dtd_resnet50"
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/kbench:1"
    lists = cluster.requests("GET", f"/apis/batch/v1/namespaces/{NS}/jobs")
    assert len(lists) == 1
    assert lists[0].url.query["labelSelector"] == SELECTOR

    again = cluster.submit()
    assert again.exit_code == 0, again.output
    assert again.output.count("exists, skipped (job") == 18  # progress, then the table
    assert len(cluster.requests("POST", "/jobs")) == 18  # nothing new was created

    replaced = cluster.submit("--replace")
    assert replaced.exit_code == 0, replaced.output
    assert replaced.output.count(": replaced (job") == 18
    deletes = cluster.requests("DELETE", "/jobs/")
    assert len(deletes) == 18 and all("propagationPolicy=Background" in str(d.url) for d in deletes)
    assert len(cluster.requests("POST", "/jobs")) == 36


def test_submit_renders_each_manifest_once_and_sends_exactly_its_plan(cluster, monkeypatch):
    """Plan, then send: every manifest is rendered (and validated) once per submission, and
    what reaches the API server is what `--dry-run` prints, in the same order."""
    from kbench.k8s import render

    rendered, original = [], render.render_template

    def counted(name: str, model: dict) -> list[dict]:
        rendered.append(name)
        return original(name, model)

    monkeypatch.setattr(render, "render_template", counted)
    dry = cluster.submit("--nodes", "2", "--dry-run", "-o", "json")
    assert dry.exit_code == 0, dry.output
    planned = json.loads(dry.stdout)["items"]
    assert len(rendered) == len(planned) == 18  # a JobSet per pair
    assert cluster.requests() == []  # a dry run sends nothing

    rendered.clear()
    result = cluster.submit("--nodes", "2")
    assert result.exit_code == 0, result.output
    assert rendered == ["jobset.yaml.j2"] * 18  # once each
    assert [r.data for r in cluster.requests("POST")] == planned


WEBHOOK_NO = (
    'admission webhook "vjobset.kb.io" denied the request: JobSet name is too long, pod names '
    "generated for this JobSet will exceed 63 characters"
)


def test_the_server_checks_every_manifest_before_anything_is_created(cluster):
    """One JobSet of 18 refused by a webhook in the dry run: nothing is created, no run is
    recorded, and the refusal is shown in the server's words."""
    refused = job_name(RUN, "fgvc-aircraft_clip-vit-b32", nodes=2)
    cluster.emulator.refusals[refused] = (403, WEBHOOK_NO)
    result = cluster.submit("--nodes", "2")
    assert result.exit_code == 1, result.output
    assert "the API server refused 1 of 18 object(s) in a dry run; nothing was created" in (
        result.output
    )
    assert f"jobset {refused}: {WEBHOOK_NO} (403)" in result.output
    assert "Traceback" not in result.output
    dry = cluster.requests("POST", "/jobsets", dry_run=True)
    assert len(dry) == 18
    assert all(r.params.get("fieldValidation") == "Strict" for r in dry)
    assert cluster.requests("POST") == []  # nothing created
    store = open_store(os.environ["KBENCH_STORE"])
    assert store.list(f"runs/{RUN}/") == []  # no run recorded

    # Accepted, with a warning: shown, then every create strict too
    del cluster.emulator.refusals[refused]
    cluster.emulator.warnings[refused] = "spec.foo: unknown field, ignored"
    created = cluster.submit("--nodes", "2")
    assert created.exit_code == 0, created.output
    assert f"warning: jobset {refused}: spec.foo: unknown field, ignored" in created.output
    creates = cluster.requests("POST", "/jobsets")
    assert len(creates) == 18
    assert all(r.params.get("fieldValidation") == "Strict" for r in creates)


def test_each_pods_scratch_is_sized_from_what_its_pair_stages(cluster, tmp_path):
    """Read from the staged manifests at submit: a pod asks the node's disk for what it
    keeps, not 100Gi whatever its data (which no 100 GB boot disk could give)."""
    store = open_store(os.environ["KBENCH_STORE"])
    shards = [{"key": "k", "sha256": "0" * 64, "bytes": 20 * 1024**3}]
    manifest = {"name": "food101", "splits": {"train": {"samples": 1, "shards": shards}}}
    write_json(store, dataset_key("food101"), manifest)
    write_json(store, weights_key("resnet50"), {"model": "resnet50", "bytes": 100 * 1024**2})
    assert cluster.submit().exit_code == 0
    asked = {}
    for request in cluster.requests("POST", "/jobs"):
        pod = request.data["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        scratch = next(v for v in pod["volumes"] if v["name"] == "scratch")
        assert (
            scratch["emptyDir"]["sizeLimit"]
            == container["resources"]["requests"]["ephemeral-storage"]
        )
        asked[request.data["metadata"]["labels"]["kbench.dev/pair"]] = scratch["emptyDir"][
            "sizeLimit"
        ]
    assert asked["food101_resnet50"] == "27Gi"  # 1.1 x 20 GiB + 7 x 100 MiB -> 23, + 4
    assert asked["food101_clip-vit-b32"] == "33Gi"  # weights' size not recorded: 1 GiB taken
    assert asked["dtd_resnet50"] == "5Gi"  # no shard listed in this stand-in's manifest
    profile = tmp_path / "p.yaml"
    profile.write_text("scratch_size: 50Gi\n")
    set_by_hand = cluster.submit("--run-id", "by-hand", "--profile", str(profile), "--dry-run")
    assert set_by_hand.exit_code == 0 and "sizeLimit: 50Gi" in set_by_hand.output


DIGEST = "sha256:" + "ab" * 32


def test_the_image_is_recorded_and_a_tag_that_can_move_is_warned_of(cluster):
    store = open_store(os.environ["KBENCH_STORE"])
    tagged = cluster.submit()  # registry.example/kbench:1
    assert tagged.exit_code == 0, tagged.output
    assert "warning: image registry.example/kbench:1 is a tag, which can move" in tagged.output
    run = read_json(store, f"runs/{RUN}/run.json")
    assert run["cluster"]["image"] == "registry.example/kbench:1"
    assert run["cluster"]["image_digest"] is None

    pinned = f"registry.example/kbench@{DIGEST}"
    result = cluster.submit("--run-id", "pinned", "--image", pinned)
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output
    run = read_json(store, "runs/pinned/run.json")
    assert (run["cluster"]["image"], run["cluster"]["image_digest"]) == (pinned, DIGEST)


def test_a_jobset_too_old_for_kbenchs_manifests_is_refused_with_the_fix(cluster):
    cluster.emulator.refusals["*"] = (400, OLD_JOBSET)
    result = cluster.submit("--nodes", "2")
    assert result.exit_code == 1
    assert "the API server refused 18 of 18 object(s) in a dry run; nothing was created" in (
        result.output
    )
    assert "the installed JobSet predates v0.10.0, whose failure policy kbench renders: " in (
        result.output
    )
    assert cluster.requests("POST") == []


def test_dry_run_server_checks_without_creating_anything(cluster):
    result = cluster.submit("--dry-run=server", "-o", "json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["items"]) == 18
    assert "every check passed; nothing was created" in result.stderr
    assert len(cluster.requests("POST", "/jobs", dry_run=True)) == 18
    assert cluster.requests("POST") == []
    cluster.emulator.refusals[job_name(RUN, "dtd_resnet50")] = (422, 'Job.batch "x" is invalid')
    refused = cluster.submit("--dry-run=server")
    assert refused.exit_code == 1 and 'Job.batch "x" is invalid (422)' in refused.output
    assert cluster.requests("POST") == []


def states(kbench) -> dict:
    result = kbench("status", "-o", "json")
    assert result.exit_code in (0, 3), result.output  # 3: a pair did not succeed
    return {p["pair"]: (p["state"], p["detail"]) for p in json.loads(result.stdout)["pairs"]}


def test_status_follows_jobs_through_their_states_with_three_requests(cluster, kbench):
    assert cluster.submit().exit_code == 0
    queued, pending, running = "cifar10_clip-vit-b32", "cifar10_resnet50", "dtd_clip-vit-b32"
    restarting, done, failed = "dtd_resnet50", "food101_clip-vit-b32", "food101_resnet50"
    cluster.set_job_status(job_name(RUN, queued), {}, suspend=True)
    cluster.set_job_status(job_name(RUN, pending), {"active": 1})
    cluster.add_pod(pending, "Pending", waiting="ImagePullBackOff")
    cluster.set_job_status(job_name(RUN, running), {"active": 1})
    cluster.add_pod(running, "Running")
    cluster.set_job_status(job_name(RUN, restarting), {"active": 1, "failed": 2})
    cluster.add_pod(restarting, "Running")
    cluster.set_job_status(
        job_name(RUN, done),
        {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]},
    )
    cluster.set_job_status(
        job_name(RUN, failed),
        {
            "failed": 4,
            "conditions": [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                }
            ],
        },
    )

    before = len(cluster.requests("GET"))
    seen = states(kbench)
    # One list of Jobs, one of Pods, one of events (some Jobs have no pod yet), whatever the
    # number of pairs.
    assert len(cluster.requests("GET")) - before == 3
    assert seen[queued] == ("queued", "waiting for admission (suspended)")
    assert seen[pending] == ("pending", "ImagePullBackOff")
    assert seen[running] == ("running", "")
    assert seen[restarting] == ("restarting", "2 restart(s)")
    assert seen[done][0] == "succeeded"
    assert seen[failed] == (
        "failed",
        "BackoffLimitExceeded: Job has reached the specified backoff limit",
    )
    assert seen["stl10_resnet50"] == ("pending", "waiting for pods")
    assert [r.url.query.get("labelSelector") for r in cluster.requests("GET")[before:]] == [
        SELECTOR,
        SELECTOR,
        None,  # events: by field selector (involvedObject.kind=Job, reason=FailedCreate)
    ]


def test_logs_and_cancel(cluster, kbench):
    assert cluster.submit().exit_code == 0
    cluster.add_pod("dtd_resnet50", "Running")
    cluster.serve_log(b"epoch 1/20 top1 61.0%\n")
    logs = kbench("logs", "dtd_resnet50")
    assert logs.exit_code == 0, logs.output
    assert "epoch 1/20 top1 61.0%" in logs.output
    assert "container=train" in str(cluster.requests("GET", "/log")[-1].url)

    cancelled = kbench("cancel", "dtd_resnet50", "stl10_clip-vit-b32")
    assert cancelled.exit_code == 0, cancelled.output
    deletes = [str(r.url) for r in cluster.requests("DELETE", "/jobs/")]
    assert sorted(d.split("/jobs/")[1].split("?")[0] for d in deletes) == sorted(
        [job_name(RUN, "dtd_resnet50"), job_name(RUN, "stl10_clip-vit-b32")]
    )
    assert all("propagationPolicy=Background" in d for d in deletes)


ERRORS = [
    (401, "Unauthorized", "the API server rejected the credentials (401 Unauthorized)"),
    (
        403,
        'jobs.batch is forbidden: User "u" cannot create resource "jobs"',
        f"forbidden (403): you may not create jobs in namespace '{NS}'",
    ),
    (404, f'namespaces "{NS}" not found', f"namespace '{NS}' not found: create it"),
    (
        422,
        'Job.batch "x" is invalid: spec.template: Required value',
        '(422): Job.batch "x" is invalid: spec.template: Required value',
    ),
]


@pytest.mark.parametrize(("status", "message", "shown"), ERRORS)
def test_api_errors_are_one_line_each(cluster, status, message, shown):
    cluster.fail("post", "batch/v1/jobs", status, message)
    result = cluster.submit()
    assert result.exit_code == 1
    assert shown in result.output
    assert "Traceback" not in result.output
    assert result.output.rstrip().splitlines()[-1].startswith("Error: 18 pair(s) did not succeed")


def test_a_job_of_the_same_name_from_elsewhere_is_a_conflict(cluster):
    batch, _ = cluster.api()
    name = job_name(RUN, "dtd_resnet50")
    template = {"spec": {"containers": [{"name": "c", "image": "i"}], "restartPolicy": "Never"}}
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"template": template},
    }
    batch.create_namespaced_job(NS, job)
    result = cluster.submit()
    assert result.exit_code == 1
    assert f"jobs/{name} already exists (409): use --replace" in result.output
    assert "17 of 18 pairs on the cluster" in result.output


def test_unreachable_api_server(cluster, monkeypatch, tmp_path):
    dead = write_kubeconfig(tmp_path / "dead", f"http://127.0.0.1:{free_ports(1)[0]}")
    monkeypatch.setenv("KUBECONFIG", str(dead))
    result = cluster.submit()
    assert result.exit_code == 1
    assert "cannot reach the Kubernetes API server at http://127.0.0.1:" in result.output
    assert "Traceback" not in result.output
    assert open_store(os.environ["KBENCH_STORE"]).list("runs") == []  # no ghost run left


def test_local_store_is_refused_before_anything_is_sent(cluster, tmp_path):
    result = cluster.submit("--store", str(tmp_path / "local"))
    assert result.exit_code == 2
    assert "is a local folder the pods cannot reach" in result.output
    assert cluster.requests() == []


def test_datasets_not_staged_in_the_store_are_refused_before_any_job(cluster, tmp_path):
    store = open_store(os.environ["KBENCH_STORE"])
    store.delete(dataset_key("dtd"))
    grid = tmp_path / "mine.yaml"
    grid.write_text(
        "datasets: [dtd, cifar10, imagefolder, synthetic]\nmodels: [resnet50]\n"
        "overrides: {imagefolder_resnet50: {data: ./pets}}\n"
    )
    result = cluster.submit("--grid", str(grid))
    assert result.exit_code == 2, result.output
    (line,) = result.output.splitlines()
    assert line.startswith(f"Error: not staged in {store.uri}: dtd, imagefolder {tmp_path}/pets;")
    assert f"run `kbench data stage NAME --store {store.uri}`" in line
    assert cluster.requests("POST") == []  # no Job, nothing half-done
    assert store.list("runs") == []


def test_status_watch_refreshes_with_the_same_requests_each_until_all_finish(cluster, kbench):
    assert cluster.submit().exit_code == 0
    done = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    names = [job_name(RUN, p.name) for p in load_grid("all").pairs]
    for name in names[:-1]:
        cluster.set_job_status(name, done)
    before = len(cluster.requests("GET"))
    result = {}
    watcher = threading.Thread(
        target=lambda: result.setdefault("r", kbench("status", "--watch", "--interval", "0.1"))
    )
    watcher.start()
    deadline = time.monotonic() + 60
    while len(cluster.requests("GET")) - before < 9 and time.monotonic() < deadline:
        time.sleep(0.05)  # let it refresh at least three times with one pair still running
    cluster.set_job_status(names[-1], done)
    watcher.join(60)
    output = result["r"].output
    assert result["r"].exit_code == 0, output
    refreshes = output.count(f"run {RUN} (grid all")
    assert refreshes >= 4
    # Jobs, Pods and the events of the one Job without a pod, every time; the last refresh,
    # every Job finished, needs no events.
    assert len(cluster.requests("GET")) - before == 3 * refreshes - 1
    assert output.rsplit(f"run {RUN} (grid all", 1)[1].count("succeeded") == 18


def test_context_picks_the_cluster(cluster, monkeypatch, tmp_path, kbench):
    """Two contexts in one kubeconfig: the current one is dead, --context picks the live one."""
    import yaml

    config = yaml.safe_load(cluster.kubeconfig.read_text())
    dead = f"http://127.0.0.1:{free_ports(1)[0]}"
    config["clusters"].append({"name": "dead", "cluster": {"server": dead}})
    config["contexts"].append({"name": "dead", "context": {"cluster": "dead", "user": "emulator"}})
    config["current-context"] = "dead"
    both = tmp_path / "two-contexts"
    both.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("KUBECONFIG", str(both))
    assert "cannot reach the Kubernetes API server" in cluster.submit().output
    result = cluster.submit("--context", "emulator")
    assert result.exit_code == 0, result.output
    assert kbench("status", "--context", "emulator").exit_code == 0


def test_logs_follow_streams(cluster, kbench):
    assert cluster.submit().exit_code == 0
    cluster.add_pod("dtd_resnet50", "Running")
    cluster.serve_log(b"epoch 1/20\nepoch 2/20\n")
    followed = kbench("logs", "dtd_resnet50", "-f")
    assert followed.exit_code == 0, followed.output
    assert followed.output == "epoch 1/20\nepoch 2/20\n"
    assert "follow=true" in str(cluster.requests("GET", "/log")[-1].url)


def test_a_grid_with_a_60_character_name_submits_under_its_default_run_id(
    cluster, tmp_path, kbench
):
    grid = tmp_path / "g.yaml"
    grid.write_text(f"name: {'x' * 60}\ndatasets: [cifar10]\nmodels: [resnet50]\n")
    image = "registry.example/kbench:1"
    result = kbench("submit", "--grid", str(grid), "--backend", "kubernetes", "--image", image)
    assert result.exit_code == 0, result.output
    (post,) = cluster.requests("POST", "/jobs")
    run_id = post.data["metadata"]["labels"]["kbench.dev/run"]
    assert check_run_id(run_id) == run_id and run_id.startswith("x" * 24 + "-")
