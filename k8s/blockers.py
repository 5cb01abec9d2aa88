"""What keeps a pair from starting, asked of the cluster where the pair's own objects do not
say: the Job controller's FailedCreate events (admission webhooks, quotas, Pod Security) and
Kueue's Workloads (why a queued pair is not admitted). One list request each, made only while
some pair needs it."""

from __future__ import annotations

from typing import Any

from kubernetes.client.exceptions import ApiException

from .api import api_errors
from .render import KUEUE_GROUP, KUEUE_VERSION
from .state import event_time, not_admitted


def failed_creates(client: Any, namespace: str, jobs: set[str]) -> dict[str, list[str]]:
    """Job name -> why the Job controller could not create its pods, oldest first."""
    from kubernetes.client import CoreV1Api

    with api_errors("list", "events", namespace, lambda: client):
        events = (
            CoreV1Api(client)
            .list_namespaced_event(
                namespace, field_selector="involvedObject.kind=Job,reason=FailedCreate"
            )
            .items
        )
    refusals: dict[str, list[str]] = {}
    for event in sorted(events, key=event_time):
        involved = event.involved_object
        if event.reason == "FailedCreate" and involved and involved.name in jobs:
            refusals.setdefault(involved.name, []).append(event.message or "")
    return refusals


def not_admitted_by_kueue(client: Any, namespace: str) -> tuple[dict[tuple[str, str], str], str]:
    """(kind, name) of each queued Job or JobSet -> why Kueue has not admitted it, from the
    Workload Kueue made for it (`not_admitted`); and what to say of one without a Workload."""
    from kubernetes.client import CustomObjectsApi

    with api_errors("list", "workloads", namespace, lambda: client):
        try:
            answer = CustomObjectsApi(client).list_namespaced_custom_object(
                KUEUE_GROUP, KUEUE_VERSION, namespace, "workloads"
            )
        except ApiException as e:  # said in the pair's line; every other pair is still shown
            if e.status == 403:
                return {}, "cannot read Kueue's Workloads: ask for the Role `kbench setup` prints"
            if e.status == 404:
                return {}, (
                    f"this cluster serves no {KUEUE_GROUP}/{KUEUE_VERSION} Workloads: "
                    "install Kueue v0.15 or newer"
                )
            raise
    return not_admitted(answer.get("items", [])), (
        "Kueue has made no Workload for it (is Kueue running, and does the LocalQueue exist? "
        "`kbench doctor` checks)"
    )
