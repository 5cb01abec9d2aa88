"""The unattended driver of a run's sweeps on the cluster: a CronJob, created with the first
rung's Jobs, that runs `kbench sweep` every few minutes (never two at once) under its own
ServiceAccount, so the next rung starts when the previous one's records are in even with the
submitter's laptop closed. The training pods keep no API token; only this pod has one, bound to
a Role of exactly what `kbench sweep` calls. It deletes itself once every sweep's seeds have
been sent; `kbench cancel --all` deletes it too."""

from __future__ import annotations

from typing import Any

from kbench.storage import STORE_ENV

from .render import MANAGED_BY, RUN_LABEL, dns_name, render_template
from .settings import ClusterSettings

SERVICE_ACCOUNT = "kbench-driver"
# A CronJob's name leaves room for the 11 characters of its Jobs' suffix (the controller's).
MAX_NAME = 52

# What `kbench sweep` calls, nothing else: a test derives the calls from its requests.
RULES = [
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "list"]},
    {"apiGroups": ["jobset.x-k8s.io"], "resources": ["jobsets"], "verbs": ["create", "list"]},
    {"apiGroups": ["batch"], "resources": ["cronjobs"], "verbs": ["delete", "get"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]},
    {"apiGroups": ["kueue.x-k8s.io"], "resources": ["workloads"], "verbs": ["list"]},
]


def driver_name(run_id: str) -> str:
    return dns_name("kb", run_id, "sweep", limit=MAX_NAME)


def driver_manifest(run_id: str, settings: ClusterSettings, store_uri: str) -> dict[str, Any]:
    labels = {MANAGED_BY: "kbench", RUN_LABEL: run_id, **settings.labels}
    env = {STORE_ENV: store_uri, "HOME": "/tmp", "PYTHONUNBUFFERED": "1"}
    if settings.s3_endpoint:
        env["AWS_ENDPOINT_URL"] = settings.s3_endpoint
    if settings.s3_region:
        env["AWS_REGION"] = settings.s3_region
    command = ["kbench", "sweep", "--run", run_id, "--namespace", settings.namespace]
    model = {
        "settings": settings,
        "name": driver_name(run_id),
        "labels": labels,
        "service_account": SERVICE_ACCOUNT,
        "command": command,
        "env": [{"name": k, "value": v} for k, v in env.items()],
    }
    (manifest,) = render_template("sweep_driver.yaml.j2", model)
    return manifest


def delete_driver(batch: Any, namespace: str, run_id: str) -> bool:
    """Delete the run's driver, if there is one; whether there was."""
    return _found(batch.delete_namespaced_cron_job, driver_name(run_id), namespace)


def driver_exists(batch: Any, namespace: str, run_id: str) -> bool:
    return _found(batch.read_namespaced_cron_job, driver_name(run_id), namespace)


def _found(call: Any, name: str, namespace: str) -> bool:
    """Whether `call` found the object (404: it did not); other errors are raised."""
    from kubernetes.client.exceptions import ApiException

    try:
        call(name, namespace)
    except ApiException as e:
        if e.status == 404:
            return False
        raise
    return True
