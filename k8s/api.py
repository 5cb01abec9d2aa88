"""The Kubernetes API as kbench talks to it: a client from the kubeconfig (or a pod's service
account) with a timeout on every request, and one line that says what to do for each way the
API server can say no."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import yaml
from kubernetes.client import ApiClient, Configuration
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from kbench.errors import BackendError, ConfigError
from kbench.storage import connect_timeout_s, timeout_s

from .state import one_line


def connect(context: str | None) -> ApiClient:
    """A client for the kubeconfig's `context` (None: its current one), else inside a pod its
    service account."""
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    configuration = Configuration()
    configuration.retries = 1  # urllib3 retries a silent server 3 times by default
    try:
        # KUBECONFIG is read here, not when the kubernetes package was imported.
        config.load_kube_config(
            config_file=os.environ.get("KUBECONFIG"),
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
        return TimedApiClient(configuration)
    except (ConfigException, OSError, ValueError, yaml.YAMLError) as e:
        try:  # inside a pod: its service account
            config.load_incluster_config(client_configuration=configuration)
            return TimedApiClient(configuration)
        except ConfigException:
            raise ConfigError(
                f"no usable kubeconfig ({one_line(e)}): set KUBECONFIG or ~/.kube/config, "
                "or pick one with --context"
            ) from None


@contextlib.contextmanager
def api_errors(
    verb: str, resource: str, namespace: str, client: Callable[[], Any], name: str | None = None
) -> Iterator[None]:
    """One line that says what to do for each way the API server can say no (`client`: the
    API client, asked for its host when the server cannot be reached)."""
    what = f"{resource}/{name}" if name else resource
    try:
        yield
    except ApiException as e:
        message = api_message(e)
        if e.status == 401:
            raise BackendError(
                "the API server rejected the credentials (401 Unauthorized): "
                "log in again or refresh the kubeconfig"
            ) from None
        if e.status == 403:
            raise BackendError(
                f"forbidden (403): you may not {verb} {resource} in namespace {namespace!r}; "
                f"ask for a Role that grants {verb} on {resource}"
            ) from None
        if e.status == 404 and (
            "namespaces" in message and namespace in message or verb == "create"
        ):
            raise BackendError(
                f"namespace {namespace!r} not found: create it (kubectl create namespace "
                f"{namespace}) or pass --namespace"
            ) from None
        if e.status == 409:
            raise BackendError(f"{what} already exists (409): use --replace") from None
        if e.status == 422:
            raise BackendError(f"the API server refused {what} (422): {message}") from None
        raise BackendError(f"{verb} {what} failed ({e.status}): {message}") from None
    except HTTPError as e:
        host = client().configuration.host
        raise BackendError(
            f"cannot reach the Kubernetes API server at {host} ({http_problem(e)}): "
            "check --context, the kubeconfig and the network"
        ) from None


def http_problem(e: HTTPError) -> str:
    """What went wrong under urllib3's retries: refused, timed out, TLS."""
    return type(getattr(e, "reason", None) or e).__name__


class TimedApiClient(ApiClient):
    """The kubernetes client with a timeout on every request that sets none
    ($KBENCH_TIMEOUT_S): its own default waits forever on a server that never answers."""

    def call_api(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["_request_timeout"] = kwargs.get("_request_timeout") or (
            connect_timeout_s(),
            timeout_s(),
        )
        return super().call_api(*args, **kwargs)


def api_message(e: Any) -> str:
    try:
        return json.loads(e.body).get("message", "") or str(e.reason)
    except (TypeError, ValueError):
        return str(e.reason)
