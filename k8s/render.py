"""Pure rendering: (run, pairs, cluster settings) in, Kubernetes manifests (dicts) out: a Job
per single-node pair, a JobSet per multi-node pair.

One Jinja environment for every template: StrictUndefined (a missing value fails the render
instead of writing `None` into a manifest), every value written through `tojson`.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
from importlib import resources
from typing import Any

import jinja2
import yaml

from kbench.command import CPUS_ENV, DEADLINE_ENV, GPUS_ENV, POD_NAME_ENV, train_command
from kbench.errors import JOB_ERROR_EXIT_CODE, PEER_LOST_EXIT_CODE, ConfigError
from kbench.registry import model_slug
from kbench.spec import Pair
from kbench.storage import STORE_ENV

from .settings import SCRATCH_FALLBACK, ClusterSettings

MANAGED_BY = "app.kubernetes.io/managed-by"
RUN_LABEL = "kbench.dev/run"
PAIR_LABEL = "kbench.dev/pair"
RUNG_LABEL = "kbench.dev/rung"  # a sweep's trial: one Job a rung (kbench.halving)
DATASET_LABEL = "kbench.dev/dataset"
MODEL_LABEL = "kbench.dev/model"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
# Kueue's current API (served from Kueue v0.15; v1beta1 is deprecated and stops being served).
KUEUE_GROUP, KUEUE_VERSION = "kueue.x-k8s.io", "v1beta2"
RENDEZVOUS_PORT = 29500
# A name must leave room for what the controllers derive from it (`derived_names`): a Job's
# pod hostnames "<job>-<index>", DNS labels of 63 characters at most (the Job controller).
MAX_JOB_NAME = 56
REPLICATED_JOB = "node"  # the JobSet's one replicated Job
POD_SUFFIX = "-abcde"  # the 5 random characters of a pod's name, as JobSet's webhook counts them
JOBSET_GROUP, JOBSET_VERSION = "jobset.x-k8s.io", "v1alpha2"
JOBSET_RELEASE = "v0.12.0"  # the JobSet release whose CRD kbench validates against
INSTALL_JOBSET = (
    "kubectl apply --server-side -f https://github.com/kubernetes-sigs/jobset/releases/"
    f"download/{JOBSET_RELEASE}/manifests.yaml"
)
# The oldest JobSet that knows every field kbench renders: its failure policy's rules match the
# Job's failure message (onJobFailureMessagePatterns), from v0.10.0.
OLDEST_JOBSET = "v0.10.0"

_ENV = jinja2.Environment(
    loader=jinja2.FunctionLoader(
        lambda name: resources.files("kbench.k8s").joinpath(f"templates/{name}").read_text("utf-8")
    ),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    autoescape=False,
)
_ENV.filters["pull_secret"] = lambda name: {"name": name}


def dns_name(*parts: str, limit: int = MAX_JOB_NAME) -> str:
    """A valid DNS-1123 label from the parts, deterministic; long ones keep a hash suffix."""
    name = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower())
    name = re.sub(r"-+", "-", name).strip("-")
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-')}-{digest}"


def job_name(run_id: str, pair: str, nodes: int = 1, rung: int = 0) -> str:
    """The name of a pair's Job (one node) or JobSet (several), short enough for every name
    the controllers derive from it (`derived_names`); a sweep's trial has one a rung (`r<k>`),
    so each rung's is created once."""
    parts = ("kb", run_id, pair, *([f"r{rung}"] if rung else []))
    if nodes == 1:
        return dns_name(*parts, limit=MAX_JOB_NAME)
    longest_suffix = len(f"-{REPLICATED_JOB}-0-{nodes - 1}{POD_SUFFIX}")
    return dns_name(*parts, limit=63 - longest_suffix)


def derived_names(name: str, nodes: int) -> list[str]:
    """The longest names the controllers make of a Job's or JobSet's name, each of which must be
    a DNS label of 63 characters at most: an Indexed Job's pod hostname "<job>-<index>"; for a
    JobSet (its validating webhook, pkg/webhooks/jobset_webhook.go) its child Job
    "<jobset>-<replicatedJob>-<jobIndex>" and that Job's pod name with its 5 random characters,
    at the last job and pod index (DNS-1035: starting with a letter)."""
    if nodes == 1:
        return [f"{name}-0"]
    child = f"{name}-{REPLICATED_JOB}-0"
    return [child, f"{child}-{nodes - 1}{POD_SUFFIX}", f"{child}-{nodes - 1}"]


def run_selector(run_id: str) -> str:
    return f"{MANAGED_BY}=kbench,{RUN_LABEL}={run_id}"


def render_validated(
    run_id: str,
    pairs: list[Pair],
    settings: ClusterSettings,
    store_uri: str,
    scratch: dict[str, str] | None = None,
) -> list[dict]:
    """Every manifest of a run, strictly validated: one invalid manifest refuses them all."""
    manifests = render_run(run_id, pairs, settings, store_uri, scratch)
    problems = validate(manifests, settings.kubernetes_version)
    if problems:
        version, first = settings.kubernetes_version, problems[0]
        raise ConfigError(
            f"{len(problems)} manifest(s) fail the Kubernetes {version} schema; first: {first}"
        )
    return manifests


def render_run(
    run_id: str,
    pairs: list[Pair],
    settings: ClusterSettings,
    store_uri: str,
    scratch: dict[str, str] | None = None,
) -> list[dict]:
    """Every manifest of a run: per pair a Job, or a JobSet when nodes > 1; `scratch`: each
    pair's scratch volume where `scratch_size` leaves it to what the pair stages."""
    if not settings.image:
        raise ConfigError(
            "no image to run: set `image` in the grid's cluster section, a --profile, or --image"
        )
    if not store_uri.startswith("s3://"):
        raise ConfigError(
            f"store {store_uri!r} is a local folder the pods cannot reach: "
            "use --store s3://bucket/prefix (or KBENCH_STORE)"
        )
    template = "job.yaml.j2" if settings.nodes == 1 else "jobset.yaml.j2"
    return [
        m
        for pair in pairs
        for m in render_template(
            template, _model(run_id, pair, settings, store_uri, (scratch or {}).get(pair.name))
        )
    ]


def _model(
    run_id: str, pair: Pair, settings: ClusterSettings, store_uri: str, scratch: str | None
) -> dict[str, Any]:
    name = job_name(run_id, pair.name, settings.nodes, pair.rung)
    labels = {
        MANAGED_BY: "kbench",
        RUN_LABEL: run_id,
        PAIR_LABEL: pair.name,
        DATASET_LABEL: pair.config.dataset,
        MODEL_LABEL: model_slug(pair.config.model),  # a label value: no ':' nor '/'
    }
    if pair.rung:
        labels[RUNG_LABEL] = str(pair.rung)
    if settings.queue:
        labels[QUEUE_LABEL] = settings.queue
    _no_overlap("labels", settings.labels, labels)  # status finds pods by kbench's labels
    labels = {**settings.labels, **labels}
    # Kueue admits a JobSet as a whole: its child Jobs and pods must not name the queue too.
    pod_labels = labels if settings.nodes == 1 else without(labels, QUEUE_LABEL)
    env = {
        "PYTHONUNBUFFERED": "1",
        STORE_ENV: store_uri,
        # Every write goes to the scratch volume (the root filesystem is read-only): temporary
        # files, compile caches (TMPDIR), weights, and whatever a library puts under HOME.
        "TMPDIR": "/scratch",
        "HOME": "/scratch/home",
        "XDG_CACHE_HOME": "/scratch/cache",
        "HF_HOME": "/scratch/huggingface",
        "TORCH_HOME": "/scratch/torch",
    }
    if not settings.download_weights:  # weights come from the store: no hub at all
        env["HF_HUB_OFFLINE"] = "1"
    if settings.time_limit_seconds:  # from now, when the pair is sent: every attempt's limit
        deadline = dt.datetime.now(dt.timezone.utc) + dt.timedelta(
            seconds=settings.time_limit_seconds
        )
        env[DEADLINE_ENV] = deadline.isoformat(timespec="seconds")
    if settings.s3_endpoint:
        env["AWS_ENDPOINT_URL"] = settings.s3_endpoint
    if settings.s3_region:
        env["AWS_REGION"] = settings.s3_region
    cpu = settings.per_pod("cpu")
    env[CPUS_ENV] = f"{float(cpu[:-1]) / 1000:g}" if cpu.endswith("m") else cpu
    env[GPUS_ENV] = str(settings.gpus_per_node)
    _no_overlap("env", settings.env, {**env, POD_NAME_ENV: "the pod's name"})
    env.update(settings.env)
    scratch_size = settings.scratch_size or scratch or SCRATCH_FALLBACK
    requests, limits = pod_resources(settings, scratch_size)
    return {
        "settings": settings,
        "name": name,
        "replicated_job": REPLICATED_JOB,
        "labels": labels,
        "pod_labels": pod_labels,
        "command": torchrun_command(run_id, pair, settings, store_uri, name),
        "env": [{"name": k, "value": str(v)} for k, v in env.items()]
        + [{"name": POD_NAME_ENV, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "requests": requests,
        "limits": limits,
        "shm_size": settings.per_pod("shm_size"),
        "scratch_size": scratch_size,
        "config_error_exit_code": JOB_ERROR_EXIT_CODE,
        "peer_lost_exit_code": PEER_LOST_EXIT_CODE,
    }


def pod_resources(
    settings: ClusterSettings, scratch_size: str
) -> tuple[dict[str, str], dict[str, str]]:
    """A pod's (requests, limits): CPU, memory, the GPUs and any extra devices (requested as
    limited), and the scratch volume's ephemeral-storage."""
    limits = {
        "cpu": settings.per_pod("cpu"),
        "memory": settings.per_pod("memory"),
        settings.gpu_resource: str(settings.gpus_per_node),
        **{name: str(count) for name, count in settings.extra_resources.items()},
    }
    # The scratch volume counts against the node's disk: requested, so the scheduler sees it
    # (no limit beyond the volume's own sizeLimit, which logs and the image layer do not share).
    return {**limits, "ephemeral-storage": str(scratch_size)}, limits


def without(mapping: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k != key}


def _no_overlap(key: str, given: dict[str, Any], own: dict[str, Any]) -> None:
    taken = sorted(set(given) & set(own))
    if taken:
        raise ConfigError(f"cluster settings: {key}: {taken[0]!r} is kbench's own; pick another")


def torchrun_command(
    run_id: str, pair: Pair, settings: ClusterSettings, store_uri: str, name: str
) -> list[str]:
    """kbench's torchrun launcher in the pod (it passes a bad-config exit code through to the
    pod's exit code, where the podFailurePolicy's FailJob rule sees it)."""
    torchrun = [f"--nnodes={settings.nodes}", f"--nproc-per-node={settings.gpus_per_node}"]
    if settings.nodes == 1:
        torchrun.append("--standalone")
    else:
        # c10d rendezvous hosted by the first pod, at the name JobSet's Service gives it; pods
        # that start late (image pulls, queues) still join within the timeout.
        torchrun += [
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={name}-{REPLICATED_JOB}-0-0.{name}:{RENDEZVOUS_PORT}",
            f"--rdzv-id={name}",
            # join_timeout: for every node to arrive; read_timeout: for each request to the
            # store, which is how long an early pod waits for a late one (torch's default 60 s
            # gave up while another node was still pulling the image).
            f"--rdzv-conf=join_timeout={settings.rendezvous_timeout},"
            f"read_timeout={settings.rendezvous_timeout}",
        ]
    return train_command("python", torchrun, store_uri, run_id, pair.name, pair.until)


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster when built


def render_template(template: str, model: dict[str, Any]) -> list[dict]:
    """A template's YAML documents, rendered strictly (the template sees `model` as `m`)."""
    text = _ENV.get_template(template).render(m=model)
    return list(yaml.load_all(text, Loader=_YAML_LOADER))


def validate(manifests: list[dict], kubernetes_version: str) -> list[str]:
    """Strict OpenAPI validation (unknown fields fail); one line per problem, empty if none."""
    problems = []
    for manifest in manifests:
        checks = [(manifest, _schema_of(manifest, kubernetes_version), "")]
        if manifest["kind"] == "JobSet":  # its Job as well, by this Kubernetes version's rules
            job = child_job(manifest)
            checks.append((job, _schema_of(job, kubernetes_version), " (its Job)"))
        for checked, validator, which in checks:
            errors = sorted(validator.iter_errors(checked), key=lambda e: list(e.path))
            if errors:
                where = ".".join(str(p) for p in errors[0].path) or "(top)"
                name = f"{manifest['kind']} {manifest['metadata']['name']}{which}"
                problems.append(f"{name}: {where}: {errors[0].message}")
    return problems


def _schema_of(manifest: dict, kubernetes_version: str):
    if manifest["apiVersion"] == f"{JOBSET_GROUP}/{JOBSET_VERSION}":
        return _jobset_validator()
    return _validator(manifest["apiVersion"], manifest["kind"], kubernetes_version)


def child_job(manifest: dict) -> dict:
    """The Job that runs a pair's pods: a Job manifest itself, or the Job a JobSet creates from
    its replicated Job (named as JobSet names it)."""
    if manifest["kind"] == "Job":
        return manifest
    meta = manifest["metadata"]
    (replicated,) = manifest["spec"]["replicatedJobs"]
    template = replicated["template"]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": f"{meta['name']}-{replicated['name']}-0",
            "namespace": meta["namespace"],
            **template.get("metadata", {}),
        },
        "spec": template["spec"],
    }


@functools.cache
def _validator(api_version: str, kind: str, kubernetes_version: str):
    """kubernetes-validate's strict schema for a kind, loaded once: the library reads and
    parses the schema files on every call, three quarters of its time on a large grid."""
    import jsonschema
    from kubernetes_validate import utils
    from referencing import Registry, Resource

    wanted = utils.major_minor(kubernetes_version.removeprefix("v"))
    versions = [v for v in utils.all_versions() if utils.major_minor(v) <= wanted]
    if not versions or wanted > utils.major_minor(utils.latest_version()):
        raise ConfigError(
            f"no schema for Kubernetes {kubernetes_version}: pick a version kubernetes-validate "
            f"ships ({utils.all_versions()[0]} to {utils.latest_version()}) as kubernetes_version"
        )
    folder = f"kubernetes-json-schema/v{versions[-1]}-local-strict"
    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    schema = utils.schema_contents(f"{folder}/{kind.lower()}-{group}.json", kubernetes_version)
    definitions = utils.schema_contents(f"{folder}/_definitions.json", kubernetes_version)
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


@functools.cache
def _jobset_validator():
    """JobSet's own schema (the openAPIV3Schema of its v1alpha2 CRD, kept in kbench.k8s.schemas),
    made strict as kubernetes-validate's are: an object with declared properties takes no others
    unless the schema says it keeps unknown fields. The CRD's CEL rules are the API server's."""
    import jsonschema

    text = resources.files("kbench.k8s").joinpath(f"schemas/{JOBSET_GROUP}_jobsets.yaml")
    crd = yaml.load(text.read_text("utf-8"), Loader=_YAML_LOADER)
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == JOBSET_VERSION]
    return jsonschema.Draft202012Validator(_strict(version["schema"]["openAPIV3Schema"]))


def _strict(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {
        key: {name: _strict(sub) for name, sub in value.items()}
        if key == "properties"
        else _strict(value)
        for key, value in schema.items()
    }
    open_ended = "additionalProperties" in schema or schema.get(
        "x-kubernetes-preserve-unknown-fields"
    )
    if "properties" in schema and not open_ended:
        strict["additionalProperties"] = False
    return strict


def to_yaml(manifests: list[dict]) -> str:
    return yaml.safe_dump_all(manifests, sort_keys=False)
