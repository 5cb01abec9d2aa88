"""The few cluster objects kbench needs, for `kubectl apply`: a namespace, a ServiceAccount for
the pods, a least-privilege Role (and its binding) for whoever runs `kbench`, a Secret template
for S3 credentials, and optionally an example Kueue queue."""

from __future__ import annotations

from typing import Any

from .render import MANAGED_BY, render_template
from .settings import ClusterSettings

NAME = "kbench"

# Every API call the kbench client makes, and nothing else (a test derives the calls from the
# requests kbench sends and checks both ways).
RULES = [
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "delete", "list"]},
    {"apiGroups": [""], "resources": ["services"], "verbs": ["create", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
]


def calls() -> list[tuple[str, str, str]]:
    """(API group, resource, verb) of every call the Role grants."""
    return [
        (group, resource, verb)
        for rule in RULES
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    ]


def setup_manifests(
    settings: ClusterSettings, users: list[str], groups: list[str], kueue: bool = False
) -> list[dict[str, Any]]:
    """Namespace, ServiceAccount, Role, RoleBinding, Secret template (+ Kueue example).

    The Role goes to the people who run `kbench` (users, groups; default: the group
    kbench-users), not to the pods: they talk to S3 only, and their ServiceAccount does not
    even mount an API token."""
    rbac = "rbac.authorization.k8s.io"
    subjects = [{"kind": "User", "name": u, "apiGroup": rbac} for u in users]
    subjects += [{"kind": "Group", "name": g, "apiGroup": rbac} for g in groups or [] if g]
    if not subjects:
        subjects = [{"kind": "Group", "name": "kbench-users", "apiGroup": rbac}]
    model = {
        "settings": settings,
        "name": NAME,
        "labels": {MANAGED_BY: "kbench"},
        "rules": RULES,
        "subjects": subjects,
        "cluster_queue": "kbench-gpus",
    }
    templates = ["namespace", "serviceaccount", "role", "rolebinding"]
    if settings.s3_secret:
        templates.append("secret")
    if kueue and settings.queue:
        templates.append("kueue")
    return [m for t in templates for m in render_template(f"{t}.yaml.j2", model)]
