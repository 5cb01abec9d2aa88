"""Cluster settings of a submission: image, namespace, resources and scheduling knobs.

Resolved in layers, later ones winning: the grid's `cluster:` section < a profile file
(`--profile`, YAML with the same keys) < command-line flags.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kbench.errors import ConfigError
from kbench.layers import Layer, fits_type, load_yaml, merge_layers, read_text
from kbench.spec import Grid


@dataclass
class ClusterSettings:
    image: str | None = None  # required to submit; the project's training image
    namespace: str = "default"
    context: str | None = None  # kubeconfig context; None: the current one
    nodes: int = 1  # pods per pair (one per node); > 1 adds a headless Service for rendezvous
    gpus_per_node: int = 1  # training processes per pod, one per GPU
    cpu: str = "8"  # per pod
    memory: str = "64Gi"  # per pod, including /dev/shm
    shm_size: str = "16Gi"  # memory-backed /dev/shm for DataLoader workers
    scratch_size: str = "100Gi"  # emptyDir for the dataset cache and checkpoints in transit
    s3_secret: str | None = "kbench-s3"  # Secret with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY
    s3_endpoint: str | None = None  # AWS_ENDPOINT_URL for the pods (MinIO, Ceph, R2, ...)
    s3_region: str | None = None
    service_account: str | None = None  # e.g. one bound to an IAM role (IRSA) instead of a Secret
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    affinity: dict[str, Any] | None = None
    priority_class: str | None = None
    image_pull_secrets: list[str] = field(default_factory=list)
    queue: str | None = None  # Kueue LocalQueue: Kueue then suspends and admits the Job
    backoff_limit: int = 3  # pod failures (not preemptions) before the Job fails
    ttl_seconds_after_finished: int | None = 7 * 24 * 3600
    active_deadline_seconds: int | None = None
    rendezvous_timeout: int = 900  # seconds torchrun waits for every node (slow image pulls)
    kubernetes_version: str = "1.33.0"  # schema the manifests are validated against


# Resource sizes, checked here: the API server would refuse a bad one only after earlier
# pairs were created.
QUANTITIES = ("cpu", "memory", "shm_size", "scratch_size")
QUANTITY = r"(\d+(\.\d*)?|\.\d+)([eE]\d+|[mkMGTPE]|[KMGTPE]i)?"


def resolve(layers: list[Layer]) -> ClusterSettings:
    """Merge (mapping, where-it-came-from) layers onto the defaults, checking keys and types."""
    settings = ClusterSettings(**merge_layers(ClusterSettings, layers, "cluster settings", _fits))
    for key in ("nodes", "gpus_per_node", "backoff_limit", "rendezvous_timeout"):
        if getattr(settings, key) < (0 if key == "backoff_limit" else 1):
            raise ConfigError(f"cluster settings: {key} must be positive")
    for key in QUANTITIES:
        if not re.fullmatch(QUANTITY, str(getattr(settings, key))):
            raise ConfigError(
                f"cluster settings: {key}: {getattr(settings, key)!r} is not a Kubernetes "
                "quantity (like 8, 500m, 64Gi or 1.5G)"
            )
    return settings


def settings_for(grid: Grid | None, profile: str | None, flags: dict[str, Any]) -> ClusterSettings:
    """A submission's settings: the grid's `cluster:` section < the profile < the flags given."""
    return resolve(
        [
            (grid.document.get("cluster") if grid else None, f"{grid and grid.source}: cluster"),
            (load_profile(profile), str(profile)),
            ({k: v for k, v in flags.items() if v is not None}, "command line"),
        ]
    )


def load_profile(path: str | None) -> dict[str, Any] | None:
    if path is None:
        return None
    return load_yaml(read_text(Path(path), "profile"), path) or {}


def _fits(value: Any, hint: Any) -> bool:
    """As grid keys, except that string settings also take YAML numbers (`cpu: 8`)."""
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return True
    return fits_type(value, hint)
