"""The Kubernetes backend: one Indexed Job per pair, or one JobSet per pair that spans nodes
(JobSet restarts the pods as a gang and owns their DNS).

Its plan is the run's manifests, rendered and strictly validated once; `submit` sends exactly
those, once as a server-side dry run (k8s/admission.py) and then for real, both with strict
field validation. Requests stay few: `states` is two list calls (Jobs or JobSets, and Pods,
selected by the run's labels) whatever the grid size, and one list of Kueue's Workloads while a
pair is queued; `submit` one list call, one dry-run
create per new pair (eight at a time), then one create per pair.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

from kubernetes.client.exceptions import ApiException

from kbench import records
from kbench.backends import Echo, Options, Plan, check_world
from kbench.errors import BackendError, ConfigError, KbenchError
from kbench.image_tree import check_imagefolders
from kbench.pairs import Outcome, PairState
from kbench.records import utc_now
from kbench.runs import Run
from kbench.spec import Grid, Pair
from kbench.staged import require_staged, require_weights, scratch_sizes
from kbench.storage import Store, connect_timeout_s, open_store, write_json

from .admission import STRICT, dry_run, refuse
from .api import api_errors, api_message, connect
from .blockers import failed_creates, not_admitted_by_kueue
from .driver import delete_driver, driver_exists, driver_manifest, driver_name
from .kept_logs import kept_logs, kept_text
from .render import (
    INSTALL_JOBSET,
    JOBSET_GROUP,
    JOBSET_VERSION,
    PAIR_LABEL,
    RUN_LABEL,
    RUNG_LABEL,
    job_name,
    render_validated,
    run_selector,
    validate,
)
from .settings import (
    DEFAULT_NAMESPACE,
    ClusterSettings,
    image_digest,
    mutable_image,
    resolve,
    settings_for,
)
from .state import (
    as_job,
    attempt_order,
    finished,
    job_state,
    labels_of,
    pod_creator,
    queued,
)

INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"


class KubernetesBackend:
    name = "kubernetes"
    resubmits = True  # submitting a run again creates only the Jobs that are missing
    finishes = False  # submit returns once the Jobs are created

    def __init__(
        self,
        settings: ClusterSettings | None = None,
        replace: bool = False,
        api_client: Any = None,
    ) -> None:
        self.settings = settings or ClusterSettings()
        self.replace = replace
        self._api_client = api_client  # injected by tests; else built from the kubeconfig
        self._existing: set[str] | None = None  # the run's Jobs, as `check` found them

    @property
    def gang(self) -> bool:
        """Pairs span nodes: each is a JobSet, not a Job."""
        return self.settings.nodes > 1

    @classmethod
    def for_submit(cls, grid: Grid, options: Options) -> KubernetesBackend:
        settings = settings_for(grid, options.profile, options.cluster)
        return cls(settings=settings, replace=options.replace)

    @classmethod
    def for_run(cls, run: Run, options: Options) -> KubernetesBackend:
        """Where the run went (run.json's `cluster`), unless a flag says otherwise."""
        recorded = run.cluster or {}
        # A sweep's run keeps every setting its later Jobs need, checked as a profile is.
        where = f"{records.run_key(run.run_id)}: cluster.settings"
        settings = resolve([(recorded["settings"], where)]) if "settings" in recorded else None
        settings = dataclasses.replace(
            settings or ClusterSettings(nodes=recorded.get("nodes", 1)),
            namespace=options.cluster.get("namespace")
            or recorded.get("namespace", DEFAULT_NAMESPACE),
            context=options.cluster.get("context") or recorded.get("context"),
        )
        return cls(settings=settings)

    # ------------------------------------------------------------------------------- plan

    def plan(self, run: Run, pairs: list[Pair], store_uri: str) -> Plan:
        check_world(pairs, self.settings.nodes * self.settings.gpus_per_node)
        # Each pair's scratch volume, sized from what it stages unless the settings say. A
        # store that cannot be read is refused by `check` in its own words, after the
        # settings' and the cluster's own checks (a client-side --dry-run shows the fallback).
        scratch = None
        if self.settings.scratch_size is None and store_uri.startswith("s3://"):
            with contextlib.suppress(KbenchError):
                scratch = scratch_sizes(open_store(store_uri), pairs)
        manifests = render_validated(run.run_id, pairs, self.settings, store_uri, scratch)
        if run.sweeps and self.settings.sweep_driver and any(p.rung == 1 for p in pairs):
            driver = driver_manifest(run.run_id, self.settings, store_uri)  # with the 1st rung
            refused = validate([driver], self.settings.kubernetes_version)
            if refused:
                raise ConfigError(f"the sweep's driver fails the schema: {refused[0]}")
            manifests.append(driver)
        cluster: dict[str, Any] = {
            "namespace": self.settings.namespace,
            "context": self.settings.context,
            "nodes": self.settings.nodes,  # which kind of object the pairs are
            # What every pod ran: a digest pins it; a tag alone can move (see `check`).
            "image": self.settings.image,
            "image_digest": image_digest(self.settings.image),
            "gpu_type": self.settings.gpu_type,  # the report's estimate beside the actual
        }
        if run.sweeps:  # `kbench sweep` sends the later rungs and the seeds as these were
            cluster["settings"] = dataclasses.asdict(self.settings)
        return Plan(
            run=dataclasses.replace(run, cluster=cluster),
            pairs=pairs,
            store_uri=store_uri,
            documents=manifests,
        )

    def check(self, store: Store, plan: Plan) -> list[str]:
        self.client()
        require_staged(store, plan.pairs)  # pods read datasets from the store only
        # or an imagefolder under s3:// directly: as they will find it
        check_imagefolders([p for p in plan.pairs if (p.config.data or "").startswith("s3://")])
        if not self.settings.download_weights:  # and pretrained weights, unless told otherwise
            require_weights(store, plan.pairs)
        # One real request before the run is recorded: a cluster that cannot be reached (or
        # refuses this user, or lacks JobSet) leaves no run behind. Its answer is the submit's
        # list of Jobs.
        self._existing = {job.metadata.name for job in self._jobs(plan.run.run_id)}
        drivers = [m for m in plan.documents if m["kind"] == "CronJob"]
        if drivers and driver_exists(self._batch(), self.settings.namespace, plan.run.run_id):
            self._existing.add(drivers[0]["metadata"]["name"])
        # The server's yes before anything exists: every object submit will create, as a dry
        # run (those on the cluster already passed when they were created; --replace
        # recreates them from the same manifests).
        new = [m for m in plan.documents if m["metadata"]["name"] not in self._existing]
        namespace = self.settings.namespace
        admission = dry_run(self.client, namespace, new, jobsets=self.gang)
        refuse(admission, len(new))
        moving = [] if image_digest(self.settings.image) else [mutable_image(self.settings.image)]
        return moving + admission.warnings

    # ------------------------------------------------------------------------------ clients

    def client(self) -> Any:
        if self._api_client is None:
            self._api_client = connect(self.settings.context)
        return self._api_client

    def _batch(self) -> Any:
        from kubernetes import client

        return client.BatchV1Api(self.client())

    def _core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.client())

    def _custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.client())

    # ------------------------------------------------------------------------------- verbs

    def submit(self, store: Store, plan: Plan, echo: Echo) -> dict[str, Outcome]:
        run_id = plan.run.run_id
        existing = self._existing
        if existing is None:  # submitted without a check
            existing = {job.metadata.name for job in self._jobs(run_id)}
        by_pair = {
            m["metadata"]["labels"][PAIR_LABEL]: m
            for m in plan.documents
            if PAIR_LABEL in m["metadata"]["labels"]
        }

        outcomes = {}
        cancelled = cancelled_pairs(store, run_id)
        for pair in plan.pairs:
            job = job_name(run_id, pair.name, self.settings.nodes, pair.rung)
            outcome = self._submit_pair(job, by_pair[pair.name], exists=job in existing)
            if pair.name in cancelled and outcome.detail in ("created", "replaced"):
                store.delete(records.pair_key(run_id, pair.name, records.CANCELLED))
            outcomes[pair.name] = outcome
            kind = "jobset" if self.gang else "job"
            echo(f"{pair.name}: {outcome.text()} ({kind} {job})")
        for driver in (m for m in plan.documents if m["kind"] == "CronJob"):
            name = driver["metadata"]["name"]
            if name not in existing:
                with self._errors("create", "cronjobs", name):
                    self._batch().create_namespaced_cron_job(
                        self.settings.namespace, driver, field_validation=STRICT
                    )
            schedule = driver["spec"]["schedule"]
            done = "exists" if name in existing else "created"
            echo(f"sweep driver: {done} (cronjob {name}, `kbench sweep` at {schedule!r})")
        return outcomes

    def end_driver(self, run_id: str) -> bool:
        """Delete the run's sweep driver (its work is done, or the run was cancelled)."""
        with self._errors("delete", "cronjobs", driver_name(run_id)):
            return delete_driver(self._batch(), self.settings.namespace, run_id)

    def _submit_pair(self, job: str, manifest: dict, exists: bool) -> Outcome:
        if exists and not self.replace:
            return Outcome(PairState.PENDING, "exists, skipped")
        try:
            if exists:
                self._delete(job)
            self._create(manifest)
        except BackendError as e:
            return Outcome(PairState.FAILED, str(e))
        return Outcome(PairState.PENDING, "replaced" if exists else "created")

    @property
    def _resource(self) -> str:
        return "jobsets" if self.gang else "jobs"

    def _create(self, manifest: dict) -> None:
        ns = self.settings.namespace
        with self._errors("create", self._resource, manifest["metadata"]["name"]):
            if self.gang:
                self._custom().create_namespaced_custom_object(
                    JOBSET_GROUP, JOBSET_VERSION, ns, "jobsets", manifest, field_validation=STRICT
                )
            else:
                self._batch().create_namespaced_job(ns, manifest, field_validation=STRICT)

    def _delete(self, job: str) -> None:
        ns = self.settings.namespace
        # Background propagation: the garbage collector removes the pods (and a JobSet's child
        # Jobs and headless Service) too.
        with self._errors("delete", self._resource, job):
            if self.gang:
                self._custom().delete_namespaced_custom_object(
                    JOBSET_GROUP,
                    JOBSET_VERSION,
                    ns,
                    "jobsets",
                    job,
                    propagation_policy="Background",
                )
            else:
                self._batch().delete_namespaced_job(job, ns, propagation_policy="Background")

    def _jobs(self, run_id: str) -> list:
        """The run's Jobs, or its JobSets seen as Jobs (`as_job`)."""
        ns, selector = self.settings.namespace, run_selector(run_id)
        with self._errors("list", self._resource):
            if self.gang:
                jobs = [as_job(js) for js in self._jobsets(ns, selector)]
            else:
                jobs = self._batch().list_namespaced_job(ns, label_selector=selector).items
        return [j for j in jobs if labels_of(j).get(RUN_LABEL) == run_id]  # belt and braces

    def _jobsets(self, ns: str, selector: str) -> list[dict]:
        try:
            answer = self._custom().list_namespaced_custom_object(
                JOBSET_GROUP, JOBSET_VERSION, ns, "jobsets", label_selector=selector
            )
        except ApiException as e:
            if e.status == 404 and "namespaces" not in api_message(e):
                raise ConfigError(
                    f"this cluster has no JobSet ({JOBSET_GROUP}/{JOBSET_VERSION}), which pairs "
                    f"on several nodes run as: install it ({INSTALL_JOBSET}) or use --nodes 1"
                ) from None
            raise
        return answer.get("items", [])

    def _pods(self, run_id: str, pair: str | None = None) -> list:
        selector = run_selector(run_id) + (f",{PAIR_LABEL}={pair}" if pair else "")
        with self._errors("list", "pods"):
            pods = (
                self._core()
                .list_namespaced_pod(self.settings.namespace, label_selector=selector)
                .items
            )
        return [
            p
            for p in pods
            if labels_of(p).get(RUN_LABEL) == run_id
            and pair in (None, labels_of(p).get(PAIR_LABEL))
        ]

    def states(self, store: Store, run: Run) -> dict[str, Outcome]:
        """Every pair's state with what blocks it, in a fixed number of requests whatever the
        number of pairs: one list of Jobs, one of Pods, one of events only while a Job has no
        pods to show why, one of Kueue's Workloads only while a pair is queued, and one of the
        store's cancel marks only while a pair has no Job."""
        # A sweep's trial has a Job a rung: its latest rung's says where it stands.
        by_rung = sorted(self._jobs(run.run_id), key=_rung)
        jobs = {labels_of(j).get(PAIR_LABEL): j for j in by_rung}
        pods_by_pair: dict[str | None, list] = {}
        for pod in self._pods(run.run_id):
            pods_by_pair.setdefault(labels_of(pod).get(PAIR_LABEL), []).append(pod)
        podless = {
            pod_creator(job)
            for pair, job in jobs.items()
            if pair in run.pairs and not pods_by_pair.get(pair) and not finished(job)
        }
        ns, client = self.settings.namespace, self.client()
        refusals = failed_creates(client, ns, podless) if podless else {}
        waiting = any(queued(job) for pair, job in jobs.items() if pair in run.pairs)
        reasons, unknown = not_admitted_by_kueue(client, ns) if waiting else ({}, "")
        jobless = any(pair not in jobs for pair in run.pairs)
        cancelled = cancelled_pairs(store, run.run_id) if jobless else set()
        kind = "JobSet" if self.gang else "Job"
        states = {}
        for pair in run.pairs:
            job = jobs.get(pair)
            if job is not None:
                refused = refusals.get(pod_creator(job), [])
                why = reasons.get((kind, job.metadata.name), unknown)
                states[pair] = job_state(job, pods_by_pair.get(pair, []), refused, why)
            elif pair in cancelled:
                states[pair] = Outcome(PairState.CANCELLED)
            else:  # pair_state keeps a pair with a result succeeded: TTL removes finished Jobs
                states[pair] = Outcome(
                    PairState.GONE,
                    f"no {kind} on the cluster (removed by its TTL, deleted, or never created): "
                    f"`kbench submit --backend kubernetes --run-id {run.run_id}` creates it again",
                )
        return states

    def logs(
        self,
        store: Store,
        run: Run,
        pair: str,
        follow: bool = False,
        node: int | None = 0,
        previous: bool = False,
        tail: int | None = None,
    ) -> Iterator[str] | str:
        """A pod's log: node `node`'s newest pod (the newest that failed with `previous`), or
        every node's, each line prefixed `[node N]`, with `node` None. A node whose pod is gone
        shows its newest output kept in the store (with `previous`: of an attempt that is not
        still running)."""
        pods = self._pods(run.run_id, pair)
        by_node: dict[int, list] = {}
        for pod in pods:
            index = (pod.metadata.annotations or {}).get(INDEX_ANNOTATION, "0")
            if previous and pod.status.phase != "Failed":
                continue
            by_node.setdefault(int(index) if index.isdigit() else 0, []).append(pod)
        kept = kept_logs(store, run.run_id, pair)
        if previous:  # a pod still on the cluster and not failed is no previous attempt
            current = {p.metadata.name for p in pods if p.status.phase != "Failed"}
            kept = {n: [log for log in logs if log[0] not in current] for n, logs in kept.items()}
        nodes = sorted(set(by_node) | {n for n, logs in kept.items() if logs})
        nodes = nodes if node is None else [node]
        attempt = "failed pod" if previous else "pod"
        if not nodes or any(n not in by_node and not kept.get(n) for n in nodes):
            where = "" if node is None else f" (node {node})"
            raise BackendError(f"no {attempt} of {pair}{where} yet: `kbench status` shows why")
        newest = {n: max(by_node[n], key=attempt_order) for n in nodes if n in by_node}
        if follow and nodes[0] in newest:
            return self._follow(newest[nodes[0]].metadata.name)
        texts = []
        for n in nodes:
            if n in newest:
                name = newest[n].metadata.name
                with self._errors("get", "pods/log", name):
                    text = self._core().read_namespaced_pod_log(
                        name, self.settings.namespace, container="train", tail_lines=tail
                    )
            else:
                text = kept_text(store, *kept[n][-1], tail)
            texts.append(text if node is not None else _prefixed(text, f"[node {n}] "))
        return "".join(texts)

    def _follow(self, pod: str) -> Iterator[str]:
        with self._errors("get", "pods/log", pod):
            stream = self._core().read_namespaced_pod_log(
                pod,
                self.settings.namespace,
                container="train",
                follow=True,
                _preload_content=False,
                # A quiet pod may print nothing for long: a day's read timeout, not seconds.
                _request_timeout=(connect_timeout_s(), 24 * 3600.0),
            )
        return (chunk.decode(errors="replace") for chunk in stream.stream())

    def cancel(self, store: Store, run: Run, pairs: list[str]) -> list[str]:
        if run.sweeps and set(run.pairs) <= set(pairs):  # all: no more rungs to send
            self.end_driver(run.run_id)
        stopped = []
        for job in self._jobs(run.run_id):
            pair = labels_of(job).get(PAIR_LABEL)
            if pair in pairs:
                # Marked first: once the Job is gone, the mark is what says it was cancelled.
                mark = records.pair_key(run.run_id, pair, records.CANCELLED)
                cancelled: records.CancelMark = {"cancelled": utc_now()}
                write_json(store, mark, cancelled)
                self._delete(job.metadata.name)
                stopped.append(pair)
        return stopped

    # ------------------------------------------------------------------------------ errors

    def _errors(
        self, verb: str, resource: str, name: str | None = None
    ) -> contextlib.AbstractContextManager[None]:
        return api_errors(verb, resource, self.settings.namespace, self.client, name)


def _prefixed(text: str, prefix: str) -> str:
    return "".join(prefix + line for line in text.splitlines(keepends=True))


def _rung(job: Any) -> int:
    rung = labels_of(job).get(RUNG_LABEL, "0")
    return int(rung) if rung.isdigit() else 0


def cancelled_pairs(store: Store, run_id: str) -> set[str]:
    """The pairs of a run that `kbench cancel` stopped (one list of the run's records)."""
    suffix = "/" + records.CANCELLED
    return {
        key.split("/")[2] for key in store.list(records.run_key(run_id, "")) if key.endswith(suffix)
    }
