"""Pure rendering: (run, pairs, cluster settings) in, Kubernetes manifests (dicts) out.

One Jinja environment for every template: StrictUndefined (a missing value fails the render
instead of writing `None` into a manifest), every value written through `tojson`.
"""

from __future__ import annotations

import functools
import hashlib
import re
from importlib import resources
from typing import Any

import jinja2
import yaml

from kbench.command import CPUS_ENV, GPUS_ENV, train_command
from kbench.errors import JOB_ERROR_EXIT_CODE, ConfigError
from kbench.spec import Pair
from kbench.storage import STORE_ENV

from .settings import ClusterSettings

MANAGED_BY = "app.kubernetes.io/managed-by"
RUN_LABEL = "kbench.dev/run"
PAIR_LABEL = "kbench.dev/pair"
DATASET_LABEL = "kbench.dev/dataset"
MODEL_LABEL = "kbench.dev/model"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
RENDEZVOUS_PORT = 29500
# Pod hostnames are "<job>-<index>" and must stay DNS labels (63): leave room for the index.
MAX_JOB_NAME = 56

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


def job_name(run_id: str, pair: str) -> str:
    return dns_name("kb", run_id, pair)


def run_selector(run_id: str) -> str:
    return f"{MANAGED_BY}=kbench,{RUN_LABEL}={run_id}"


def render_validated(
    run_id: str, pairs: list[Pair], settings: ClusterSettings, store_uri: str
) -> list[dict]:
    """Every manifest of a run, strictly validated: one invalid manifest refuses them all."""
    manifests = render_run(run_id, pairs, settings, store_uri)
    problems = validate(manifests, settings.kubernetes_version)
    if problems:
        version, first = settings.kubernetes_version, problems[0]
        raise ConfigError(
            f"{len(problems)} manifest(s) fail the Kubernetes {version} schema; first: {first}"
        )
    return manifests


def render_run(
    run_id: str, pairs: list[Pair], settings: ClusterSettings, store_uri: str
) -> list[dict]:
    """Every manifest of a run: per pair a Job, plus a headless Service when nodes > 1."""
    if not settings.image:
        raise ConfigError(
            "no image to run: set `image` in the grid's cluster section, a --profile, or --image"
        )
    if not store_uri.startswith("s3://"):
        raise ConfigError(
            f"store {store_uri!r} is a local folder the pods cannot reach: "
            "use --store s3://bucket/prefix (or KBENCH_STORE)"
        )
    manifests = []
    for pair in pairs:
        model = _model(run_id, pair, settings, store_uri)
        if model["service"]:
            manifests += render_template("service.yaml.j2", model)
        manifests += render_template("job.yaml.j2", model)
    return manifests


def _model(run_id: str, pair: Pair, settings: ClusterSettings, store_uri: str) -> dict[str, Any]:
    job = job_name(run_id, pair.name)
    service = job if settings.nodes > 1 else None
    labels = {
        MANAGED_BY: "kbench",
        RUN_LABEL: run_id,
        PAIR_LABEL: pair.name,
        DATASET_LABEL: pair.config.dataset,
        MODEL_LABEL: pair.config.model,
    }
    if settings.queue:
        labels[QUEUE_LABEL] = settings.queue
    _no_overlap("labels", settings.labels, labels)  # status finds pods by kbench's labels
    labels = {**settings.labels, **labels}
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
    if settings.s3_endpoint:
        env["AWS_ENDPOINT_URL"] = settings.s3_endpoint
    if settings.s3_region:
        env["AWS_REGION"] = settings.s3_region
    cpu = settings.per_pod("cpu")
    env[CPUS_ENV] = f"{float(cpu[:-1]) / 1000:g}" if cpu.endswith("m") else cpu
    env[GPUS_ENV] = str(settings.gpus_per_node)
    _no_overlap("env", settings.env, env)
    env.update(settings.env)
    limits = {
        "cpu": cpu,
        "memory": settings.per_pod("memory"),
        settings.gpu_resource: str(settings.gpus_per_node),
    }
    # The scratch volume counts against the node's disk: requested, so the scheduler sees it
    # (no limit beyond the volume's own sizeLimit, which logs and the image layer do not share).
    requests = {**limits, "ephemeral-storage": str(settings.scratch_size)}
    return {
        "settings": settings,
        "job": job,
        "service": service,
        "port": RENDEZVOUS_PORT,
        "labels": labels,
        "command": torchrun_command(run_id, pair.name, settings, store_uri, job, service),
        "env": [{"name": k, "value": str(v)} for k, v in env.items()],
        "requests": requests,
        "limits": limits,
        "shm_size": settings.per_pod("shm_size"),
        "config_error_exit_code": JOB_ERROR_EXIT_CODE,
    }


def _no_overlap(key: str, given: dict[str, Any], own: dict[str, Any]) -> None:
    taken = sorted(set(given) & set(own))
    if taken:
        raise ConfigError(f"cluster settings: {key}: {taken[0]!r} is kbench's own; pick another")


def torchrun_command(
    run_id: str, pair: str, settings: ClusterSettings, store_uri: str, job: str, service: str | None
) -> list[str]:
    """kbench's torchrun launcher in the pod (it passes a bad-config exit code through to the
    pod's exit code, where the podFailurePolicy's FailJob rule sees it)."""
    torchrun = [f"--nnodes={settings.nodes}", f"--nproc-per-node={settings.gpus_per_node}"]
    if service is None:
        torchrun.append("--standalone")
    else:
        # c10d rendezvous hosted by the first pod; pods that start late (image pulls, queues)
        # still join within the timeout.
        torchrun += [
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={job}-0.{service}:{RENDEZVOUS_PORT}",
            f"--rdzv-id={job}",
            # join_timeout: for every node to arrive; read_timeout: for each request to the
            # store, which is how long an early pod waits for a late one (torch's default 60 s
            # gave up while another node was still pulling the image).
            f"--rdzv-conf=join_timeout={settings.rendezvous_timeout},"
            f"read_timeout={settings.rendezvous_timeout}",
        ]
    return train_command("python", torchrun, store_uri, run_id, pair)


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster when built


def render_template(template: str, model: dict[str, Any]) -> list[dict]:
    """A template's YAML documents, rendered strictly (the template sees `model` as `m`)."""
    text = _ENV.get_template(template).render(m=model)
    return list(yaml.load_all(text, Loader=_YAML_LOADER))


def validate(manifests: list[dict], kubernetes_version: str) -> list[str]:
    """Strict OpenAPI validation (unknown fields fail); one line per problem, empty if none."""
    problems = []
    for manifest in manifests:
        validator = _validator(manifest["apiVersion"], manifest["kind"], kubernetes_version)
        error = next(iter(sorted(validator.iter_errors(manifest), key=lambda e: e.path)), None)
        if error is not None:
            where = ".".join(str(p) for p in error.path) or "(top)"
            problems.append(
                f"{manifest['kind']} {manifest['metadata']['name']}: {where}: {error.message}"
            )
    return problems


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


def to_yaml(manifests: list[dict]) -> str:
    return yaml.safe_dump_all(manifests, sort_keys=False)
