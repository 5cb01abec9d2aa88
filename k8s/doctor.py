"""`kbench doctor`: is everything in place before GPU-hours are spent? Each check says what it
found and, when it fails, how to fix it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kbench.errors import KbenchError
from kbench.spec import Grid

from .backend import KubernetesBackend, http_problem
from .settings import ClusterSettings
from .setup import calls

GPU = "nvidia.com/gpu"


@dataclass
class Check:
    name: str
    ok: bool | None  # None: could not be checked (not allowed to look); not a failure
    detail: str
    fix: str = ""


def run_checks(
    settings: ClusterSettings, store_uri: str, api_client: Any = None, grid: Grid | None = None
) -> list[Check]:
    backend = KubernetesBackend(settings=settings, api_client=api_client)
    checks = [_image(settings), _store(store_uri)]
    if grid is not None and checks[-1].ok:
        checks.append(_datasets(store_uri, grid))
    try:
        client = backend.client()
    except KbenchError as e:
        fix = "point KUBECONFIG at a kubeconfig, or pick a context with --context"
        return [Check("kubeconfig", False, str(e), fix), *checks]
    from urllib3.exceptions import HTTPError

    host = client.configuration.host
    checks.insert(0, Check("kubeconfig", True, f"API server {host}"))
    try:
        namespace = _namespace(client, settings.namespace)
        checks.insert(1, namespace)
        if namespace.ok is not False:
            checks.insert(2, _permissions(client, settings.namespace))
        checks.append(_gpus(client))
    except HTTPError as e:  # refused, timed out, TLS: the cluster checks cannot run
        reason = f"cannot reach the API server at {host} ({http_problem(e)})"
        checks.insert(1, Check("api server", False, reason, "check --context and the network"))
    return checks


def _image(settings: ClusterSettings) -> Check:
    if settings.image:
        return Check("image", True, settings.image)
    return Check(
        "image",
        False,
        "no training image configured",
        "set `image` in the grid's cluster section, a --profile, or --image",
    )


def _store(uri: str) -> Check:
    from kbench.storage import S3Store, open_store

    try:
        store = open_store(uri)
        if not isinstance(store, S3Store):
            return Check(
                "store",
                False,
                f"{uri} is a local folder: pods cannot reach it",
                "use --store s3://bucket/prefix (or KBENCH_STORE)",
            )
        store.list("runs")  # a real request with the given credentials
    except KbenchError as e:
        return Check("store", False, str(e), "fix the bucket, AWS_ENDPOINT_URL or credentials")
    return Check("store", True, f"{uri} answers with these credentials")


def _datasets(uri: str, grid: Grid) -> Check:
    from kbench.staged import unstaged_datasets
    from kbench.storage import open_store

    missing = unstaged_datasets(open_store(uri), grid.pairs)
    if missing:
        return Check(
            "datasets",
            False,
            f"not staged in the store: {', '.join(missing)}",
            f"kbench data stage NAME --store {uri} (an imagefolder: --root DIR)",
        )
    return Check("datasets", True, f"the grid's datasets are staged in {uri} (or drawn, or s3://)")


def _namespace(client: Any, namespace: str) -> Check:
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException

    try:
        k8s.CoreV1Api(client).read_namespace(namespace)
    except ApiException as e:
        if e.status == 404:
            return Check(
                "namespace",
                False,
                f"namespace {namespace!r} does not exist",
                f"kbench setup -n {namespace} | kubectl apply -f -",
            )
        return Check("namespace", None, f"cannot read namespace {namespace!r} ({e.status})")
    return Check("namespace", True, namespace)


def _permissions(client: Any, namespace: str) -> Check:
    """A SelfSubjectAccessReview for every call kbench makes."""
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException

    api, missing = k8s.AuthorizationV1Api(client), []
    for group, resource, verb in calls():
        plural, _, subresource = resource.partition("/")
        attributes = {
            "namespace": namespace,
            "verb": verb,
            "group": group,
            "resource": plural,
            "subresource": subresource or None,
        }
        # The API server ignores a review's name (reviews are not stored); it keeps each one
        # distinct for API emulators that do store them.
        name = f"kbench-doctor-{verb}-{resource.replace('/', '-')}"
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "metadata": {"name": name},
            "spec": {"resourceAttributes": attributes},
        }
        try:
            answer = api.create_self_subject_access_review(review)
        except ApiException as e:
            return Check("permissions", None, f"cannot ask the API server ({e.status})")
        if not answer.status.allowed:
            missing.append(f"{verb} {resource}")
    if missing:
        return Check(
            "permissions",
            False,
            f"not allowed: {', '.join(missing)}",
            f"kbench setup -n {namespace} --user <you> | kubectl apply -f -",
        )
    return Check("permissions", True, "may create, list and delete what kbench needs")


def _gpus(client: Any) -> Check:
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException

    try:
        nodes = k8s.CoreV1Api(client).list_node().items
    except ApiException as e:
        return Check("gpus", None, f"cannot list nodes ({e.status}); ask an admin")
    gpus = {n.metadata.name: int((n.status.allocatable or {}).get(GPU, "0")) for n in nodes}
    with_gpus = {name: count for name, count in gpus.items() if count}
    if not with_gpus:
        return Check(
            "gpus",
            False,
            f"no node has allocatable {GPU} ({len(nodes)} nodes)",
            "install the NVIDIA device plugin or GPU operator, or add GPU nodes",
        )
    return Check("gpus", True, f"{sum(with_gpus.values())} GPUs on {len(with_gpus)} node(s)")
