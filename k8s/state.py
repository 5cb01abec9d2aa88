"""What the cluster says of a pair, read from its Job (or JobSet), its pods and the Job's events:
its state, and what blocks it in the words of whoever blocks it (the scheduler, the kubelet,
admission, Kueue, a preemption). Pure: objects in, an Outcome out."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from kbench.pairs import Outcome, PairState

from .render import QUEUE_LABEL, REPLICATED_JOB


def one_line(text: Any) -> str:
    return " ".join(str(text).split())


# JobSet's condition types, in a Job's words where they differ.
_JOB_CONDITIONS = {"Completed": "Complete"}


def as_job(jobset: dict) -> Any:
    """A JobSet, as `job_state` reads Jobs: its conditions, suspension and gang restarts (as
    failures); the Job its pods come from, whose FailedCreate events say why there are none."""
    meta, status = jobset.get("metadata") or {}, jobset.get("status") or {}
    conditions = [
        SimpleNamespace(
            type=_JOB_CONDITIONS.get(c.get("type"), c.get("type")),
            status=c.get("status"),
            reason=c.get("reason"),
            message=c.get("message"),
        )
        for c in status.get("conditions") or []
    ]
    active = sum(r.get("active") or 0 for r in status.get("replicatedJobsStatus") or [])
    return SimpleNamespace(
        metadata=SimpleNamespace(name=meta.get("name"), labels=meta.get("labels") or {}),
        spec=SimpleNamespace(suspend=bool((jobset.get("spec") or {}).get("suspend"))),
        status=SimpleNamespace(conditions=conditions, active=active, failed=status.get("restarts")),
        pod_creator=f"{meta.get('name')}-{REPLICATED_JOB}-0",
    )


def pod_creator(job: Any) -> str:
    """The Job that creates the pods (a JobSet's child Job), named in FailedCreate events."""
    return getattr(job, "pod_creator", None) or job.metadata.name


class _EmptyStatus:
    """A Job the controller has not touched yet."""

    conditions = active = failed = None


def labels_of(obj: Any) -> dict[str, str]:
    return obj.metadata.labels or {}


def job_state(
    job: Any, pods: list, refusals: list[str] | None = None, not_admitted: str = ""
) -> Outcome:
    """A pair's state from its Job, its pods, the Job's FailedCreate events and (queued) why
    Kueue has not admitted it, with what blocks it in the words of whoever blocks it
    (scheduler, kubelet, admission, Kueue)."""
    status = job.status or _EmptyStatus()
    conditions = conditions_held(job)
    if "Complete" in conditions:
        return Outcome(PairState.SUCCEEDED)
    if "Failed" in conditions:
        return Outcome(PairState.FAILED, reason_of(conditions["Failed"]))
    if job.spec.suspend:
        queue = labels_of(job).get(QUEUE_LABEL)
        if not queue:
            return Outcome(PairState.QUEUED, "waiting for admission (suspended)")
        return Outcome(PairState.QUEUED, f"waiting for Kueue queue {queue!r}: {not_admitted}")
    restarts = (status.failed or 0) + sum(
        cs.restart_count or 0 for p in pods for cs in (p.status.container_statuses or [])
    )
    blocked = what_blocks(pods)
    phases = {p.status.phase for p in pods}
    if restarts:
        detail = f"{restarts} restart(s)"
        return Outcome(PairState.RESTARTING, f"{detail}; {blocked}" if blocked else detail)
    if (status.active or 0) and "Running" in phases and "Pending" not in phases:
        return Outcome(PairState.RUNNING)
    if blocked:
        return Outcome(PairState.PENDING, blocked)
    if not pods and refusals:
        return Outcome(PairState.PENDING, f"FailedCreate: {refusals[-1]}")
    return Outcome(PairState.PENDING, "waiting for pods" if not pods else "starting")


def queued(job: Any) -> bool:
    """Suspended for a Kueue queue, not yet admitted."""
    return bool(job.spec.suspend and labels_of(job).get(QUEUE_LABEL) and not finished(job))


# Kueue's Workload conditions that say why it is not admitted, the first that holds wins.
_NOT_ADMITTED = (("Evicted", "True"), ("QuotaReserved", "False"), ("Admitted", "False"))


def not_admitted(workloads: list[dict]) -> dict[tuple[str, str], str]:
    """(owner kind, owner name) -> why Kueue has not admitted the Workload it made for that Job
    or JobSet, in Kueue's words (quota, flavors, admission checks)."""
    reasons = {}
    for workload in workloads:
        conditions = {
            c.get("type"): c for c in (workload.get("status") or {}).get("conditions") or []
        }
        reason = next(
            (
                reason_of(SimpleNamespace(**{k: c.get(k) for k in ("reason", "message")}))
                for kind, status in _NOT_ADMITTED
                if (c := conditions.get(kind)) and c.get("status") == status
            ),
            "its Workload has no condition yet (Kueue has not looked at it)",
        )
        for owner in (workload.get("metadata") or {}).get("ownerReferences") or []:
            reasons[(owner.get("kind"), owner.get("name"))] = reason
    return reasons


# A container waiting for these is on its way, not stuck.
_STARTING = {"ContainerCreating", "PodInitializing"}


def what_blocks(pods: list) -> str:
    """What keeps the newest stuck pod from running, as reason: message."""
    for pod in sorted(pods, key=attempt_order, reverse=True):
        conditions = {c.type: c for c in (pod.status.conditions or [])}
        target = conditions.get("DisruptionTarget")
        if target is not None and target.status == "True":
            return f"preempted: {reason_of(target)}"
        for cs in pod.status.container_statuses or []:
            waiting = cs.state.waiting if cs.state else None
            if waiting and waiting.reason and waiting.reason not in _STARTING:
                return reason_of(waiting)
        scheduled = conditions.get("PodScheduled")
        if scheduled is not None and scheduled.status == "False":
            return reason_of(scheduled)
    return ""


def reason_of(condition: Any) -> str:
    """`reason: message` of a condition or a container state, on one line."""
    reason, message = condition.reason or "", one_line(condition.message or "")
    return f"{reason}: {message}" if reason and message else reason or message


def conditions_held(job: Any) -> dict[str, Any]:
    """The Job's conditions that hold, by type."""
    held = (job.status.conditions if job.status else None) or []
    return {c.type: c for c in held if c.status == "True"}


def finished(job: Any) -> bool:
    return bool({"Complete", "Failed"} & conditions_held(job).keys())


def event_time(event: Any) -> Any:
    when = event.last_timestamp or event.event_time or event.metadata.creation_timestamp
    return when.timestamp() if when else 0.0


def attempt_order(pod: Any) -> tuple:
    """Later attempts sort last: by creation time (whole seconds), then a live pod after one
    that ended (a replacement is created once its predecessor failed)."""
    created = pod.metadata.creation_timestamp
    return (created.timestamp() if created else 0.0, pod.status.phase not in ENDED)


ENDED = ("Failed", "Succeeded")
