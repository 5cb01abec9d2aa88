"""`kbench doctor`: is everything in place before GPU-hours are spent? Each check says what it
found and, when it fails, how to fix it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kbench.errors import KbenchError
from kbench.spec import Grid

from .api import http_problem
from .backend import KubernetesBackend
from .render import (
    INSTALL_JOBSET,
    JOBSET_GROUP,
    JOBSET_VERSION,
    KUEUE_GROUP,
    KUEUE_VERSION,
    pod_resources,
)
from .settings import SCRATCH_FALLBACK, ClusterSettings
from .setup import calls


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
        if not settings.download_weights:
            checks.append(_weights(store_uri, grid))
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
        cluster = [_version(client), namespace]
        if namespace.ok is not False:
            cluster += [_permissions(client, settings.namespace), _credentials(client, settings)]
            if settings.queue:
                cluster.append(_queue(client, settings))
            if settings.nodes > 1:
                cluster.append(_jobset(client, settings.namespace))
            if settings.image and store_uri.startswith("s3://") and cluster[-1].ok is not False:
                cluster.append(_admission(client, settings, store_uri, grid))
        if settings.priority_class:
            cluster.append(_priority_class(client, settings.priority_class))
        checks[1:1] = cluster
        checks.append(_gpus(client, settings, _largest_scratch(settings, store_uri, grid)))
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
    from kbench.s3 import S3Store
    from kbench.storage import open_store

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


def _weights(uri: str, grid: Grid) -> Check:
    from kbench.staged import unstaged_models
    from kbench.storage import open_store

    missing = unstaged_models(open_store(uri), grid.pairs)
    if missing:
        return Check(
            "weights",
            False,
            f"pretrained weights not staged in the store: {', '.join(missing)}",
            f"kbench models stage {' '.join(missing)} --store {uri}",
        )
    return Check("weights", True, f"the grid's pretrained weights are staged in {uri}")


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

    return _exists(
        "namespace",
        lambda: k8s.CoreV1Api(client).read_namespace(namespace),
        f"namespace {namespace!r}",
        f"kbench setup -n {namespace} | kubectl apply -f -",
        namespace,
    )


# The oldest Kubernetes the manifests are for: Indexed Jobs' pod index label (1.28) and
# podFailurePolicy on by default (beta since 1.26, GA in 1.31).
OLDEST = (1, 28)


def _admission(client: Any, settings: ClusterSettings, store_uri: str, grid: Grid | None) -> Check:
    """A server-side dry run (dryRun=All, strict field validation) of one pair's Job or
    JobSet, as submit sends every one: admission webhooks, Pod Security, quotas, Kueue's
    webhook and the installed JobSet's schema answer now, and nothing is created."""
    from kbench.spec import load_grid

    from .admission import dry_run
    from .render import render_run

    pair = (grid or load_grid("smoke")).pairs[0]
    (manifest,) = render_run("doctor", [pair], settings, store_uri)
    kind = manifest["kind"]
    found = dry_run(lambda: client, settings.namespace, [manifest], jobsets=kind == "JobSet")
    if found.refused:
        (refusal,) = found.refused
        if "cannot create resource" in refusal:
            return Check("admission", None, f"not allowed to create {kind}s: see permissions")
        return Check(
            "admission",
            False,
            f"the API server would refuse a pair's {kind}: {refusal}",
            "change what it names (security context: run_as_user; resources; labels), or "
            "upgrade what the message names",
        )
    warned = f"; warnings: {'; '.join(found.warnings)}" if found.warnings else ""
    return Check("admission", True, f"a pair's {kind} passes a strict server-side dry run{warned}")


def _jobset(client: Any, namespace: str) -> Check:
    """Pairs on several nodes are JobSets: the cluster must serve them."""
    from kubernetes import client as k8s

    api = f"{JOBSET_GROUP}/{JOBSET_VERSION}"
    return _exists(
        "jobset",
        lambda: k8s.CustomObjectsApi(client).list_namespaced_custom_object(
            JOBSET_GROUP, JOBSET_VERSION, namespace, "jobsets", limit=1
        ),
        f"JobSet ({api}), which pairs on several nodes run as,",
        f"{INSTALL_JOBSET} (or --nodes 1)",
        f"JobSet ({api}) is installed",
        missing="is not installed",
    )


def _version(client: Any) -> Check:
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException

    try:
        info = k8s.VersionApi(client).get_code()
        found = (int(info.major), int("".join(c for c in info.minor if c.isdigit())))
    except (ApiException, ValueError, TypeError):
        return Check("version", None, "the API server did not say its version")
    shown = f"Kubernetes {found[0]}.{found[1]}"
    if found < OLDEST:
        return Check(
            "version",
            False,
            f"{shown}: kbench's Jobs need {OLDEST[0]}.{OLDEST[1]} or newer",
            "ask for a newer cluster (Indexed Jobs' pod index label, podFailurePolicy)",
        )
    return Check("version", True, shown)


def _credentials(client: Any, settings: ClusterSettings) -> Check:
    """What the pods read S3 with: their ServiceAccount (IRSA and the like) or the Secret."""
    from kubernetes import client as k8s

    core, ns = k8s.CoreV1Api(client), settings.namespace
    if settings.s3_secret:
        name = settings.s3_secret
        return _exists(
            "credentials",
            lambda: core.read_namespaced_secret(name, ns),
            f"secret {name!r} in {ns!r}",
            f"kbench setup -n {ns} --s3-secret {name} --secret-template > s3.yaml, fill in the "
            "keys, kubectl apply -f s3.yaml",
            f"the pods read S3 with secret {name!r}",
        )
    name = settings.service_account
    return _exists(
        "credentials",
        lambda: core.read_namespaced_service_account(name, ns),
        f"service account {name!r} in {ns!r}",
        f"kbench setup -n {ns} (or create the service account the settings name)",
        f"the pods read S3 as service account {name!r}",
    )


def _queue(client: Any, settings: ClusterSettings) -> Check:
    from kubernetes import client as k8s

    name, ns = settings.queue, settings.namespace
    return _exists(
        "queue",
        lambda: k8s.CustomObjectsApi(client).get_namespaced_custom_object(
            KUEUE_GROUP, KUEUE_VERSION, ns, "localqueues", name
        ),
        f"Kueue LocalQueue {name!r} in {ns!r}",
        f"kbench setup -n {ns} --queue {name} (an example), or ask for the queue's name",
        f"Kueue LocalQueue {name!r}",
    )


def _priority_class(client: Any, name: str) -> Check:
    from kubernetes import client as k8s

    return _exists(
        "priority",
        lambda: k8s.SchedulingV1Api(client).read_priority_class(name),
        f"PriorityClass {name!r}",
        "kubectl get priorityclasses lists those there are",
        name,
    )


def _exists(
    check: str,
    read: Callable[[], Any],
    what: str,
    fix: str,
    found: str,
    missing: str = "does not exist",
) -> Check:
    """Whether an object is there: ok, missing (with its fix), or not ours to see (??)."""
    from kubernetes.client.exceptions import ApiException

    try:
        read()
    except ApiException as e:
        if e.status == 404:
            return Check(check, False, f"{what} {missing}", fix)
        return Check(check, None, f"cannot read {what} ({e.status})")
    return Check(check, True, found)


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


def _gpus(client: Any, settings: ClusterSettings, scratch: str | None) -> Check:
    """GPUs on some node, and some node that can hold one pod as the settings size it (what
    its allocatable offers, before other pods' requests, taints and selectors); `scratch`:
    the largest pod's scratch volume, None when unknown (sized per pair, no grid given)."""
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException

    try:
        nodes = k8s.CoreV1Api(client).list_node().items
    except ApiException as e:
        return Check("gpus", None, f"cannot list nodes ({e.status}); ask an admin")
    gpu = settings.gpu_resource
    allocatable = {n.metadata.name: n.status.allocatable or {} for n in nodes}
    with_gpus = {name: have for name, have in allocatable.items() if _amount(have, gpu)}
    if not with_gpus:
        return Check(
            "gpus",
            False,
            f"no node has allocatable {gpu} ({len(nodes)} nodes)",
            "install the NVIDIA device plugin or GPU operator, or add GPU nodes",
        )
    found = f"{sum(_amount(have, gpu) for have in with_gpus.values()):g} GPUs on "
    found += f"{len(with_gpus)} node(s)"
    requests, _ = pod_resources(settings, scratch or "0")
    if scratch is None:
        del requests["ephemeral-storage"]
    short = {name: _short(have, requests) for name, have in with_gpus.items()}
    if all(short.values()):
        name = min(short, key=lambda n: len(short[n]))  # the closest
        asked = ", ".join(f"{k} {v}" for k, v in requests.items())
        return Check(
            "gpus",
            False,
            f"{found}, but none can hold one pod ({asked}): {name} has {'; '.join(short[name])}",
            "ask for less per pod (cpu, memory, shm_size, scratch_size in the cluster settings; "
            "memory includes /dev/shm) or fewer --gpus-per-node",
        )
    fits = sum(not lacking for lacking in short.values())
    return Check("gpus", True, f"{found}; {fits} can hold one pod")


def _largest_scratch(settings: ClusterSettings, store_uri: str, grid: Grid | None) -> str | None:
    """The scratch volume of the grid's largest pod: as set, else sized from what the pairs
    stage (unknown without a grid or a bucket to read)."""
    from kubernetes.utils import parse_quantity

    from kbench.staged import scratch_sizes
    from kbench.storage import open_store

    if settings.scratch_size or grid is None or not store_uri.startswith("s3://"):
        return settings.scratch_size
    try:
        sizes = scratch_sizes(open_store(store_uri), grid.pairs)
    except KbenchError:  # the store check says why
        return None
    return max(sizes.values(), key=parse_quantity, default=SCRATCH_FALLBACK)


def _amount(allocatable: dict[str, str], resource: str) -> float:
    from kubernetes.utils import parse_quantity

    return float(parse_quantity(allocatable.get(resource, "0")))


def _short(allocatable: dict[str, str], requests: dict[str, str]) -> list[str]:
    """What a node lacks for a pod: `resource have < asked` for each one short."""
    from kubernetes.utils import parse_quantity

    return [
        f"{resource} {allocatable.get(resource, '0')} < {asked}"
        for resource, asked in requests.items()
        if _amount(allocatable, resource) < float(parse_quantity(asked))
    ]
