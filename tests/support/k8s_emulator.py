"""A Kubernetes API stand-in for tests: kmock's KubernetesEmulator served over real HTTP from a
background thread, so the real `kubernetes` client talks to it through a real kubeconfig.

What it does not do (see DESIGN section 8): filter by label selector, run anything, or know
resources that were not declared; tests move Jobs through their states by patching status.
kmock stores every create; `DryRunEmulator` teaches it the server-side dry run (a create with
dryRun=All is answered, or refused as a test says a webhook would, and stores nothing) and the
API server's reason for a missing object (NotFound).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import kmock
import yaml


def _resource(kind: str, subresources: list[str], namespaced: bool = True) -> dict:
    verbs = ["list", "get", "create", "patch", "delete"]
    return {
        "namespaced": namespaced,
        "kind": kind,
        "singular": kind.lower(),
        "verbs": verbs,
        "shortnames": [],
        "categories": [],
        "subresources": subresources,
    }


# The resources kbench uses; an emulator knows only those declared.
RESOURCES = {
    "batch/v1/jobs": _resource("Job", ["status"]),
    "batch/v1/cronjobs": _resource("CronJob", ["status"]),
    "jobset.x-k8s.io/v1alpha2/jobsets": _resource("JobSet", ["status"]),  # JobSet installed
    "v1/pods": _resource("Pod", ["log", "status"]),
    "v1/services": _resource("Service", []),
    "v1/events": _resource("Event", []),
    "v1/secrets": _resource("Secret", []),
    "v1/serviceaccounts": _resource("ServiceAccount", []),
    "scheduling.k8s.io/v1/priorityclasses": _resource("PriorityClass", [], namespaced=False),
    "kueue.x-k8s.io/v1beta2/localqueues": _resource("LocalQueue", []),
    "kueue.x-k8s.io/v1beta2/workloads": _resource("Workload", ["status"]),
    "v1/namespaces": _resource("Namespace", [], namespaced=False),
    "v1/nodes": _resource("Node", ["status"], namespaced=False),
    "authorization.k8s.io/v1/selfsubjectaccessreviews": _resource(
        "SelfSubjectAccessReview", [], namespaced=False
    ),
}


# kmock's name of a request's action -> the RBAC verb it needs.
VERBS = {
    "LIST": "list",
    "FETCH": "get",
    "CREATE": "create",
    "UPDATE": "patch",
    "DELETE": "delete",
    "WATCH": "watch",
}


@attrs.define(kw_only=True)
class DryRunEmulator(kmock.KubernetesEmulator):
    """kmock's emulator with the API server's dry run: a create with dryRun=All answers 201
    with the object (and a Warning header where `warnings` names it), or the Status of a
    refusal where `refusals` names it, and stores nothing."""

    # name ("*": any) -> the status and message of the refusal
    refusals: dict[str, tuple[int, str]] = attrs.field(factory=dict)
    warnings: dict[str, str] = attrs.field(factory=dict)  # name -> the warning's text

    async def _handle(self, request: Any) -> aiohttp.web.StreamResponse:
        if request.method.value != "POST" or request.params.get("dryRun") != "All":
            try:
                return await super()._handle(request)
            except kmock.KubernetesObjectNotFoundError as e:
                # The API server's reason, by which clients (kubectl 1.20) tell "not found".
                raise attrs.evolve(e, reason="NotFound", message="not found") from None
        name = (request.data or {}).get("metadata", {}).get("name", "")
        refused = self.refusals.get(name) or self.refusals.get("*")
        if refused:
            status, message = refused
            body = {"kind": "Status", "apiVersion": "v1", "status": "Failure"}
            body |= {"message": message, "code": status}
            return aiohttp.web.json_response(body, status=status)
        headers = {"Warning": f'299 - "{self.warnings[name]}"'} if name in self.warnings else {}
        return aiohttp.web.json_response(request.data, status=201, headers=headers)


# What an API server answers, with strict field validation, for a JobSet whose CRD predates
# the failure policy's onJobFailureMessagePatterns (JobSet < v0.10.0)
OLD_JOBSET = (
    'JobSet in version "v1alpha2" cannot be handled as a JobSet: strict decoding error: '
    'unknown field "spec.failurePolicy.rules[0].onJobFailureMessagePatterns", unknown field '
    '"spec.failurePolicy.rules[1].onJobFailureMessagePatterns"'
)


NAMESPACE = "ml"  # where the tests' submits go
RUN = "study"  # the run id they submit under


@dataclass
class Cluster:
    emulator: Any  # kmock.KubernetesEmulator: requests and objects, for assertions
    url: str
    kubeconfig: Path

    def api(self) -> tuple[Any, Any]:
        """The real client's BatchV1Api and CoreV1Api, through the kubeconfig."""
        from kubernetes import client, config

        api_client = config.new_client_from_config(config_file=str(self.kubeconfig))
        return client.BatchV1Api(api_client), client.CoreV1Api(api_client)

    def set_job_status(self, name: str, status: dict, suspend: bool | None = None) -> None:
        """What the Job controller would write (nothing runs here)."""
        batch, _ = self.api()
        batch.patch_namespaced_job_status(name, NAMESPACE, {"status": status})
        if suspend is not None:
            batch.patch_namespaced_job(name, NAMESPACE, {"spec": {"suspend": suspend}})

    def add_pod(
        self,
        pair: str,
        phase: str,
        restarts: int = 0,
        waiting: str | dict | None = None,
        name: str | None = None,
        index: int = 0,
        conditions: list | None = None,
    ) -> None:
        """A pod of the pair's Job as the kubelet reports it: `waiting` a reason, or a reason
        and message; `conditions` the pod's (PodScheduled, DisruptionTarget, ...)."""
        from kbench.k8s.render import job_name

        _, core = self.api()
        labels = {
            "app.kubernetes.io/managed-by": "kbench",
            "kbench.dev/run": RUN,
            "kbench.dev/pair": pair,
        }
        if isinstance(waiting, str):
            waiting = {"reason": waiting}
        state = {"waiting": waiting} if waiting else {"running": {}}
        core.create_namespaced_pod(
            NAMESPACE,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name or f"{job_name(RUN, pair)}-{index}-x{restarts}",
                    "labels": labels,
                    "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
                },
                "spec": {"containers": [{"name": "train", "image": "i"}]},
                "status": {
                    "phase": phase,
                    "conditions": conditions or [],
                    "containerStatuses": [
                        {
                            "name": "train",
                            "image": "i",
                            "imageID": "",
                            "ready": phase == "Running",
                            "restartCount": restarts,
                            "state": state,
                        }
                    ],
                },
            },
        )

    def add_workload(self, owner: str, kind: str, conditions: list[dict]) -> None:
        """The Workload Kueue makes for a queued Job or JobSet (owned by it), with the
        conditions Kueue writes (QuotaReserved, Admitted, Evicted ...)."""
        from kubernetes import client

        client.CustomObjectsApi(self.api()[0].api_client).create_namespaced_custom_object(
            "kueue.x-k8s.io",
            "v1beta2",
            NAMESPACE,
            "workloads",
            {
                "apiVersion": "kueue.x-k8s.io/v1beta2",
                "kind": "Workload",
                "metadata": {
                    "name": f"{kind.lower()}-{owner}-1a2b3",
                    "ownerReferences": [
                        {"apiVersion": "batch/v1", "kind": kind, "name": owner, "uid": "u"}
                    ],
                },
                "spec": {"queueName": "gpu-queue"},
                "status": {"conditions": conditions},
            },
        )

    def add_event(self, job: str, reason: str, message: str) -> None:
        """A Warning event about a Job, as its controller reports FailedCreate."""
        _, core = self.api()
        core.create_namespaced_event(
            NAMESPACE,
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": f"{job}.{reason.lower()}"},
                "involvedObject": {"kind": "Job", "name": job, "namespace": NAMESPACE},
                "reason": reason,
                "message": message,
                "type": "Warning",
            },
        )

    def requests(
        self, method: str | None = None, path_part: str = "", dry_run: bool = False
    ) -> list:
        """The requests served, those that change something (or, `dry_run`, their dry runs)."""
        return [
            r
            for r in list(self.emulator)
            if (method is None or r.method.value == method)
            and path_part in str(r.url)
            and (r.params.get("dryRun") == "All") == dry_run
        ]

    def serve_log(self, text: bytes) -> None:
        """What every pods/log request answers."""
        view = self.emulator["get", kmock.resource("v1/pods"), kmock.subresource("log")]
        view << kmock.Response(status=200, payload=text, headers={"Content-Type": "text/plain"})

    def fail(self, method: str, resource: str, status: int, message: str) -> None:
        """Make every such request fail as the API server fails: with a Status object."""
        body = {
            "apiVersion": "v1",
            "kind": "Status",
            "status": "Failure",
            "code": status,
            "message": message,
            "reason": "Failure",
        }
        view = self.emulator[method, kmock.resource(resource)]
        view << kmock.Response(status=status, payload=body)


def write_kubeconfig(path: Path, url: str, context: str = "emulator") -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": context,
                "clusters": [{"name": context, "cluster": {"server": url}}],
                "users": [{"name": context, "user": {"token": "test-token"}}],
                "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
            }
        )
    )
    return path


@contextlib.contextmanager
def kubernetes_emulator(folder: Path, without: tuple[str, ...] = ()) -> Iterator[Cluster]:
    """An emulator that knows RESOURCES but those named in `without` (a CRD not installed)."""
    ready, stop, box = threading.Event(), threading.Event(), {}

    async def serve() -> None:
        async with DryRunEmulator() as emulator, kmock.Server(emulator) as server:
            for name, resource in RESOURCES.items():
                if name not in without:
                    emulator.resources[name] = resource
            box["emulator"], box["url"] = emulator, str(server.url).rstrip("/")
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.02)

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    if not ready.wait(30):
        raise RuntimeError("the Kubernetes emulator did not start")
    try:
        kubeconfig = write_kubeconfig(folder / "kubeconfig", box["url"])
        yield Cluster(emulator=box["emulator"], url=box["url"], kubeconfig=kubeconfig)
    finally:
        stop.set()
        thread.join(10)
