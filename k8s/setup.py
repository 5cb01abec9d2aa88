"""The few cluster objects kbench needs, for `kubectl apply`: a namespace, a ServiceAccount for
the pods, a least-privilege Role (and its binding) for whoever runs `kbench`, and optionally an
example Kueue queue; apart from them, a template of the pods' S3 Secret."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from kbench.errors import ConfigError

from .driver import RULES as DRIVER_RULES
from .driver import SERVICE_ACCOUNT as DRIVER
from .render import KUEUE_GROUP, KUEUE_VERSION, MANAGED_BY, render_template
from .settings import ClusterSettings

NAME = "kbench"

# Every API call the kbench client and the README's kubectl commands make (`kubectl apply -f`
# of render's output: get, then create or patch), and nothing else: a test derives the calls
# from the requests both send and checks both ways.
RULES = [
    {
        "apiGroups": ["batch"],
        "resources": ["jobs"],
        "verbs": ["create", "delete", "get", "list", "patch"],
    },
    {
        "apiGroups": ["jobset.x-k8s.io"],
        "resources": ["jobsets"],
        "verbs": ["create", "delete", "get", "list", "patch"],
    },
    # A sweep's driver (k8s.driver): created with the first rung, deleted by `cancel --all`.
    {
        "apiGroups": ["batch"],
        "resources": ["cronjobs"],
        "verbs": ["create", "delete", "get", "patch"],
    },
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]},
    # `status` reads why Kueue has not admitted a queued pair from its Workload.
    {"apiGroups": [KUEUE_GROUP], "resources": ["workloads"], "verbs": ["list"]},
]


def calls(rules: list[dict[str, list[str]]] = RULES) -> list[tuple[str, str, str]]:
    """(API group, resource, verb) of every call a Role grants."""
    return [
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    ]


def secret_template(settings: ClusterSettings) -> list[dict[str, Any]]:
    """The S3 Secret with empty keys, to fill in: apart from the re-appliable stream, since
    applying it again would blank the keys someone filled in."""
    return render_template("secret.yaml.j2", _model(settings, [], []))


def setup_manifests(
    settings: ClusterSettings,
    users: list[str],
    groups: list[str],
    kueue: bool = False,
    network_policy: bool = False,
    sweep_driver: bool = False,
) -> list[dict[str, Any]]:
    """Namespace, ServiceAccount, Role, RoleBinding (+ a Kueue example, + a NetworkPolicy for
    namespaces that deny by default): safe to apply again.

    The Role goes to the people who run `kbench` (users, groups; default: the group
    kbench-users), not to the pods: they talk to S3 only, and their ServiceAccount does not
    even mount an API token."""
    model = _model(settings, users, groups)
    templates = ["namespace", "serviceaccount", "role", "rolebinding"]
    if kueue and settings.queue:
        templates.append("kueue")
    if network_policy:
        templates.append("networkpolicy")
    manifests = [m for t in templates for m in render_template(f"{t}.yaml.j2", model)]
    if sweep_driver:  # its own identity: a token, and only what `kbench sweep` calls
        driver = {
            **model,
            "name": DRIVER,
            "rules": DRIVER_RULES,
            "subjects": [
                {"kind": "ServiceAccount", "name": DRIVER, "namespace": settings.namespace}
            ],
            "automount": True,
        }
        for t in ["serviceaccount", "role", "rolebinding"]:
            manifests += render_template(f"{t}.yaml.j2", driver)
    return manifests


def _model(settings: ClusterSettings, users: list[str], groups: list[str]) -> dict[str, Any]:
    rbac = "rbac.authorization.k8s.io"
    subjects = [{"kind": "User", "name": u, "apiGroup": rbac} for u in users]
    subjects += [{"kind": "Group", "name": g, "apiGroup": rbac} for g in groups or [] if g]
    if not subjects:
        subjects = [{"kind": "Group", "name": "kbench-users", "apiGroup": rbac}]
    return {
        "settings": settings,
        "name": NAME,
        "labels": {MANAGED_BY: "kbench"},
        "rules": RULES,
        "subjects": subjects,
        "automount": False,
        # Cluster-wide Kueue objects named after the namespace: they cannot clobber a
        # platform's own (a `default-flavor`, say), and the queue admits this namespace only.
        "cluster_queue": f"kbench-{settings.namespace}",
        "flavor": f"kbench-{settings.namespace}",
        "kueue_api": f"{KUEUE_GROUP}/{KUEUE_VERSION}",
        "store_ports": [{"protocol": "TCP", "port": port} for port in store_ports(settings)],
    }


def store_ports(settings: ClusterSettings) -> list[int]:
    """The ports the pods reach the store on: HTTPS (AWS S3, and the hub where weights are
    downloaded), and the endpoint's own port (MinIO's 9000, say)."""
    ports = {443}
    if settings.s3_endpoint:
        url = urlsplit(settings.s3_endpoint)
        try:
            ports.add(url.port or (80 if url.scheme == "http" else 443))
        except ValueError:
            raise ConfigError(f"s3_endpoint {settings.s3_endpoint!r} has no valid port") from None
    return sorted(ports)
