"""What the API server says of a run's manifests before any exists: each is sent once as a
server-side dry run (`dryRun=All`), which runs everything a real create runs — the schema
with strict field validation (an unknown or dropped field is an error, as on every real
create), the admission webhooks (JobSet's name rules, a policy engine's), quotas — and stores
nothing. One request per manifest, a few at a time; a refusal of any refuses the submit."""

from __future__ import annotations

import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException

from kbench.errors import BackendError

from .api import api_errors, api_message
from .render import INSTALL_JOBSET, JOBSET_GROUP, JOBSET_VERSION, OLDEST_JOBSET

STRICT = "Strict"  # fieldValidation: an unknown or duplicate field fails the request
CONCURRENT = 8  # dry runs in flight at once
# RFC 7234 warnings as the API server sends them (code 299): `299 - "text"`.
WARNING = re.compile(r'299 [^ ]+ "((?:[^"\\]|\\.)*)"')


@dataclass
class Admission:
    refused: list[str] = field(default_factory=list)  # one line per object, the server's words
    warnings: list[str] = field(default_factory=list)  # the same


def dry_run(
    client: Callable[[], Any], namespace: str, manifests: list[dict], jobsets: bool
) -> Admission:
    """Every manifest through the API server without storing it; refusals (validation, a
    webhook, a quota, RBAC) and warnings in the server's own words, one line each. A server
    that cannot be reached raises, as a real create would."""
    from kubernetes import client as k8s

    api = k8s.CustomObjectsApi(client()) if jobsets else k8s.BatchV1Api(client())
    kind = "jobset" if jobsets else "job"

    def send(manifest: dict) -> tuple[str | None, list[str]]:
        name = manifest["metadata"]["name"]
        what = manifest["kind"].lower()  # job, jobset, or a sweep's driver: cronjob
        options = {"dry_run": "All", "field_validation": STRICT}
        try:
            if manifest["kind"] == "CronJob":  # a sweep's driver (k8s.driver)
                _, _, headers = k8s.BatchV1Api(client()).create_namespaced_cron_job_with_http_info(
                    namespace, manifest, **options
                )
            elif jobsets:
                _, _, headers = api.create_namespaced_custom_object_with_http_info(
                    JOBSET_GROUP, JOBSET_VERSION, namespace, "jobsets", manifest, **options
                )
            else:
                _, _, headers = api.create_namespaced_job_with_http_info(
                    namespace, manifest, **options
                )
        except ApiException as e:
            return f"{what} {name}: {explained(api_message(e))} ({e.status})", []
        return None, [f"{what} {name}: {w}" for w in warnings(headers)]

    found = Admission()
    with (
        api_errors("create", f"{kind}s", namespace, client),  # unreachable: one line
        ThreadPoolExecutor(CONCURRENT) as pool,
    ):
        for refusal, warned in pool.map(send, manifests):
            if refusal:
                found.refused.append(refusal)
            found.warnings += warned
    return found


def refuse(admission: Admission, total: int) -> None:
    """Raise, naming every refused object, unless the server accepted them all."""
    if admission.refused:
        lines = "\n  ".join(admission.refused)
        raise BackendError(
            f"the API server refused {len(admission.refused)} of {total} object(s) in a dry "
            f"run; nothing was created:\n  {lines}"
        )


def explained(message: str) -> str:
    """The server's words, and the fix where kbench knows it: a JobSet older than the fields
    kbench renders refuses them as unknown (strict field validation)."""
    if "unknown field" in message and "onJobFailureMessagePatterns" in message:
        return (
            f"{message}; the installed JobSet predates {OLDEST_JOBSET}, whose failure policy "
            f"kbench renders: upgrade it ({INSTALL_JOBSET})"
        )
    return message


def warnings(headers: Any) -> list[str]:
    """The API server's warnings in a response's Warning headers."""
    given = headers.get("Warning") if headers is not None else None
    return [text.replace('\\"', '"') for text in WARNING.findall(given or "")]
