"""Cluster settings of a submission: image, namespace, resources and scheduling knobs.

Resolved in layers, later ones winning: the grid's `cluster:` section < a profile file
(`--profile`, YAML with the same keys) < command-line flags.
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kbench.errors import ConfigError
from kbench.layers import Layer, fits_type, load_yaml, merge_layers, read_text
from kbench.spec import Grid

DEFAULT_NAMESPACE = "kbench"  # what `kbench setup` creates, and where everything goes by default
# Per GPU, so a pod's resources follow the GPUs it asks for (an 8-GPU pod: 64 CPUs, 320Gi),
# sized to fit the common GPU nodes' allocatable share per GPU (README: the node table): the
# tightest, 4 x L4 or A10G on 48 vCPUs and 192 GiB, leaves about 11 CPUs and 46Gi per GPU.
CPU_PER_GPU, MEMORY_GI_PER_GPU, SHM_GI_PER_GPU = 8, 40, 8
SCRATCH_FALLBACK = "100Gi"  # a pair's scratch when nothing it reads is staged (s3:// folders)


@dataclass
class ClusterSettings:
    image: str | None = None  # required to submit; the project's training image
    namespace: str = DEFAULT_NAMESPACE
    context: str | None = None  # kubeconfig context; None: the current one
    nodes: int = 1  # pods per pair (one per node); > 1: a JobSet, which the cluster must have
    gpus_per_node: int = 1  # training processes per pod, one per GPU
    cpu: str | None = None  # per pod; None: CPU_PER_GPU per GPU
    memory: str | None = None  # per pod, including /dev/shm; None: MEMORY_GI_PER_GPU per GPU
    shm_size: str | None = None  # memory-backed /dev/shm for DataLoader workers; None: per GPU
    # emptyDir for the dataset cache, weights and checkpoints in transit; None: sized per pair
    # from what it stages (kbench.staged.scratch_sizes), SCRATCH_FALLBACK where nothing is
    scratch_size: str | None = None
    s3_secret: str | None = "kbench-s3"  # Secret with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY
    s3_endpoint: str | None = None  # AWS_ENDPOINT_URL for the pods (MinIO, Ceph, R2, ...)
    s3_region: str | None = None
    # The pods' ServiceAccount (no API token is mounted): `kbench setup`'s, or one bound to an
    # IAM role (IRSA; then s3_secret: null).
    service_account: str = "kbench"
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    affinity: dict[str, Any] | None = None
    priority_class: str | None = None
    image_pull_secrets: list[str] = field(default_factory=list)
    queue: str | None = None  # Kueue LocalQueue: Kueue then suspends and admits the Job
    backoff_limit: int = 3  # pod failures (not preemptions) before a single-node Job fails
    max_restarts: int = 3  # gang restarts (not preemptions) before a multi-node JobSet fails
    ttl_seconds_after_finished: int | None = 7 * 24 * 3600
    active_deadline_seconds: int | None = None  # per attempt (a JobSet's child Job)
    # A pair's whole life, every attempt and restart together, counted from its submission:
    # its pods stop at that time, whatever attempt they are in, and the pair fails.
    time_limit_seconds: int | None = None
    rendezvous_timeout: int = 900  # seconds torchrun waits for every node (slow image pulls)
    # Pods load pretrained weights from the store (`kbench models stage`), offline; true lets
    # them download instead (through `env`'s HTTPS_PROXY or HF_ENDPOINT, if any).
    download_weights: bool = False
    kubernetes_version: str = "1.33.0"  # schema the manifests are validated against
    # The platform's own rules, passed through (each checked as strictly as the rest):
    labels: dict[str, str] = field(default_factory=dict)  # on Jobs, Services and pods
    annotations: dict[str, str] = field(default_factory=dict)  # on pods (sidecars, Kueue)
    env: dict[str, str] = field(default_factory=dict)  # e.g. AWS_CA_BUNDLE, HTTPS_PROXY
    volumes: list[dict[str, Any]] = field(default_factory=list)  # Kubernetes Volume objects
    volume_mounts: list[dict[str, Any]] = field(default_factory=list)  # of the train container
    runtime_class: str | None = None  # runtimeClassName, e.g. nvidia
    gpu_resource: str = "nvidia.com/gpu"  # amd.com/gpu, nvidia.com/mig-3g.40gb, ...
    # A run with sweeps: the schedule of the CronJob that drives them on the cluster (k8s.driver;
    # `kbench setup --sweep-driver` makes its identity); null: none, run `kbench sweep --watch`.
    sweep_driver: str | None = "*/5 * * * *"
    # The GPUs' type, for the budget: one of data/budget.yaml's measured types (nvidia-h100).
    gpu_type: str | None = None
    # The pod's user and group; None leaves them to the platform (OpenShift's restricted SCC
    # assigns its own and refuses fixed ones). The image's user is 1000.
    run_as_user: int | None = 1000
    # Escape hatches for what multi-node training on fast networks needs:
    extra_resources: dict[str, int] = field(default_factory=dict)  # per pod, e.g. EFA, RDMA
    capabilities: list[str] = field(default_factory=list)  # added to the container: IPC_LOCK
    jobset_annotations: dict[str, str] = field(default_factory=dict)  # exclusive placement

    def per_pod(self, key: str) -> str:
        """cpu, memory or shm_size: as set, else the per-GPU default times the GPUs."""
        value = getattr(self, key)
        if value is not None:
            return str(value)
        per_gpu = {"cpu": (CPU_PER_GPU, ""), "memory": (MEMORY_GI_PER_GPU, "Gi")}
        count, unit = {**per_gpu, "shm_size": (SHM_GI_PER_GPU, "Gi")}[key]
        return f"{count * self.gpus_per_node}{unit}"


# Resource sizes, checked here: the API server would refuse a bad one only after earlier
# pairs were created.
QUANTITIES = ("cpu", "memory", "shm_size", "scratch_size")
QUANTITY = r"(\d+(\.\d*)?|\.\d+)([eE]\d+|[mkMGTPE]|[KMGTPE]i)?"


def resolve(layers: list[Layer]) -> ClusterSettings:
    """Merge (mapping, where-it-came-from) layers onto the defaults, checking keys and types."""
    settings = ClusterSettings(**merge_layers(ClusterSettings, layers, "cluster settings", _fits))
    for key in ("nodes", "gpus_per_node", "backoff_limit", "max_restarts", "rendezvous_timeout"):
        if getattr(settings, key) < (0 if key in ("backoff_limit", "max_restarts") else 1):
            raise ConfigError(f"cluster settings: {key} must be positive")
    for key in ("active_deadline_seconds", "time_limit_seconds"):
        if getattr(settings, key) is not None and getattr(settings, key) < 1:
            raise ConfigError(f"cluster settings: {key} must be positive (or null: none)")
    for key in QUANTITIES:
        value = getattr(settings, key)
        if value is not None and not re.fullmatch(QUANTITY, str(value)):
            raise ConfigError(
                f"cluster settings: {key}: {value!r} is not a Kubernetes "
                "quantity (like 8, 500m, 64Gi or 1.5G)"
            )
    if settings.sweep_driver is not None and not re.fullmatch(
        r"@\w+|\S+( \S+){4}", settings.sweep_driver
    ):
        raise ConfigError(
            f"cluster settings: sweep_driver: {settings.sweep_driver!r} is not a cron schedule "
            "(five fields, like */5 * * * *), or null"
        )
    check_names(settings)
    return settings


# Kubernetes' own rules (apimachinery's validation), so a bad name is refused here, in one line,
# before a request is sent, rather than by the API server after earlier pairs were created.
DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
DNS_SUBDOMAIN = rf"(?=.{{1,253}}$){DNS_LABEL}(\.{DNS_LABEL})*"
_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
QUALIFIED_NAME = rf"({DNS_SUBDOMAIN}/)?{_NAME}"
LABEL_VALUE = rf"({_NAME})?"
ENV_NAME = r"[-._a-zA-Z][-._a-zA-Z0-9]*"
# A container image reference: [registry[:port]/]path[:tag][@digest], lower-case path.
IMAGE = (
    r"([a-zA-Z0-9.-]+(:[0-9]+)?/)?[a-z0-9]+([._-]+[a-z0-9]+)*(/[a-z0-9]+([._-]+[a-z0-9]+)*)*"
    r"(:[\w][\w.-]{0,127})?(@[A-Za-z][A-Za-z0-9]*:[0-9a-fA-F]{32,})?"
)


def check_names(settings: ClusterSettings) -> None:
    """Every name, label, annotation and image of the settings, by Kubernetes' rules."""
    one = [
        (
            "namespace",
            settings.namespace,
            DNS_LABEL,
            "a DNS label: lower-case letters, digits, '-'",
        ),
        ("image", settings.image, IMAGE, "an image reference like registry/name:tag"),
        ("queue", settings.queue, LABEL_VALUE, "a label value"),
        ("priority_class", settings.priority_class, DNS_SUBDOMAIN, "a DNS subdomain"),
        ("s3_secret", settings.s3_secret, DNS_SUBDOMAIN, "a DNS subdomain"),
        ("service_account", settings.service_account, DNS_SUBDOMAIN, "a DNS subdomain"),
        ("runtime_class", settings.runtime_class, DNS_SUBDOMAIN, "a DNS subdomain"),
        ("gpu_resource", settings.gpu_resource, QUALIFIED_NAME, "a resource name"),
    ]
    one += [
        ("image_pull_secrets", n, DNS_SUBDOMAIN, "a DNS subdomain")
        for n in settings.image_pull_secrets
    ]
    for mapping, value_rule in (("labels", LABEL_VALUE), ("node_selector", LABEL_VALUE)):
        for key, value in getattr(settings, mapping).items():
            one.append((f"{mapping} key", key, QUALIFIED_NAME, "a qualified name like a.io/b"))
            one.append(
                (
                    f"{mapping}.{key}",
                    value,
                    value_rule,
                    "a label value (63 characters, [-_.A-Za-z0-9])",
                )
            )
    for mapping in ("annotations", "jobset_annotations"):
        for key in getattr(settings, mapping):
            one.append((f"{mapping} key", key, QUALIFIED_NAME, "a qualified name like a.io/b"))
    for name, count in settings.extra_resources.items():
        one.append(("extra_resources key", name, QUALIFIED_NAME, "a resource name like a.io/b"))
        if count < 1:
            raise ConfigError(f"cluster settings: extra_resources.{name} must be positive")
    for capability in settings.capabilities:
        one.append(("capabilities", capability, r"[A-Z][A-Z_]*", "a capability like IPC_LOCK"))
    for key in settings.env:
        one.append(("env", key, ENV_NAME, "an environment variable name"))
    for where, value, rule, what in one:
        if value is not None and not re.fullmatch(rule, str(value)):
            raise ConfigError(f"cluster settings: {where}: {value!r} is not {what}")
    if settings.run_as_user is not None and settings.run_as_user < 0:
        raise ConfigError("cluster settings: run_as_user must be 0 or more, or null")


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
    strings = hint is str or str in typing.get_args(hint)
    if strings and isinstance(value, (int, float)) and not isinstance(value, bool):
        return True
    return fits_type(value, hint)


def image_digest(image: str | None) -> str | None:
    """The digest an image reference pins (`name@sha256:...`), or None."""
    return image.rpartition("@")[2] if image and "@" in image else None


def mutable_image(image: str | None) -> str:
    return (
        f"image {image} is a tag, which can move while a study runs (pairs, restarts and "
        "nodes may then run different images): pin it by digest, registry/name@sha256:..."
    )
