"""Moving an operation through its stages: one status write and one Event per change, from any worker.

Workers call ``advance`` with what happened (an ``Outcome``); the stage machine's table
(``davit.operations.stages``) says which stage and status follow and where the next message goes.
``fail`` is the one way to fail an operation.
"""

from __future__ import annotations

from typing import Any

import structlog

from davit import constants, timeutil
from davit.api.objects import RawObject
from davit.api.types import Stage, Status
from davit.constants import Kind
from davit.kube.client import ApiException
from davit.operations import recording, scratch, stages
from davit.operations.messages import Message
from davit.operations.ports import Moving

log = structlog.get_logger(__name__)


def _elapsed(obj: RawObject) -> str:
    status = obj.get("status") or {}
    start = timeutil.parse_time(status.get("triggerTimestamp") or obj["metadata"].get("creationTimestamp"))
    return timeutil.format_elapsed((timeutil.utcnow() - start).total_seconds()) if start else "0s"


def set_stage(
    ports: Moving,
    kind: Kind,
    obj: RawObject,
    stage: Stage,
    status: Status,
    reason: str,
    extra: dict[str, Any] | None = None,
    check_version: bool = False,
    event_reason: str | None = None,
) -> RawObject:
    """Write the new stage and status, and record an Event when the stage changed (``event_reason``
    names a failure's Event when it has a reason of its own, e.g. ``SpecChanged``)."""
    now = timeutil.format_time(timeutil.utcnow())
    previous = (obj.get("status") or {}).get("stage")
    patch: dict[str, Any] = {
        **stages.stage_fields(
            stage, status, reason, finished_at=now, current=obj.get("status") or {}, at=now
        ),
        "lastUpdateTimestamp": now,
        "elapsed": _elapsed(obj),
        **(extra or {}),
    }
    updated = ports.cluster.patch_status(kind, obj, patch, check_version=check_version)
    if previous != stage.value or stage == Stage.FINAL:
        failed = status == Status.FAILED
        ports.cluster.record_event(
            obj,
            "Warning" if failed else "Normal",
            event_reason
            or ("Failed" if failed else ("Completed" if stage == Stage.FINAL else "StageChanged")),
            f"Stage {stage.value}: {status.value}" + (f": {reason}" if reason else ""),
            constants.COMPONENT_WORKER,
        )
    log.info("stage.changed", stage=stage.value, status=status.value, reason=reason)
    if stage == Stage.FINAL:
        if ports.scratch is not None:
            recording.try_record_outcome(ports.scratch.metrics(), kind, updated)
        clear_scratch(ports, obj)
    return updated


def heartbeat_fields(obj: RawObject) -> dict[str, Any]:
    """The status fields that tell the watcher's stall detection the work on ``obj`` is alive."""
    return {"lastUpdateTimestamp": timeutil.format_time(timeutil.utcnow()), "elapsed": _elapsed(obj)}


def heartbeat(ports: Moving, kind: Kind, obj: RawObject, extra: dict[str, Any]) -> None:
    """Show progress and tell the watcher's stall detection that the work is alive."""
    ports.cluster.patch_status(kind, obj, {**heartbeat_fields(obj), **extra})


def advance(
    ports: Moving,
    kind: Kind,
    obj: RawObject,
    stage: Stage,
    outcome: stages.Outcome,
    reason: str | None = None,
    extra: dict[str, Any] | None = None,
    check_version: bool = False,
    event_reason: str | None = None,
) -> RawObject | None:
    """Move ``obj``, in ``stage``, on after ``outcome``: write the table's stage and status with
    ``reason`` (and ``extra`` status fields; see ``set_stage``) and send the next stage's message to the
    table's queue through ``ports.dispatch``. Without ``reason``: "queued for <queue>" when a message is
    sent, else none.

    Returns the updated object, or None when nothing was done: ``obj`` is no longer in ``stage`` (a stale
    or duplicate message), or, with ``check_version``, another worker changed it first (409)."""
    current = (obj.get("status") or {}).get("stage")
    if current != stage.value:
        log.info("advance.stale", expected_stage=stage.value, current_stage=current, outcome=outcome.value)
        return None
    step = stages.next_step(kind, stage, outcome)
    if reason is None:
        reason = f"queued for {step.queue.value}" if step.send and step.queue is not None else ""
    if step.status is not None:
        try:
            obj = set_stage(
                ports, kind, obj, step.stage, step.status, reason, extra=extra, check_version=check_version,
                event_reason=event_reason,
            )  # fmt: skip
        except ApiException as exc:
            if check_version and exc.status == 409:  # another worker took the same message
                log.info("message.duplicate", stage=stage.value, outcome=outcome.value)
                return None
            raise
    if step.send and step.queue is not None:
        meta = obj["metadata"]
        message = Message(kind, meta["namespace"], meta["name"], meta["uid"], step.stage.value, step.part)
        ports.dispatch.send(message, step.queue.value)
    return obj


def fail(
    ports: Moving, kind: Kind, obj: RawObject, reason: str, event_reason: str | None = None
) -> RawObject | None:
    """End ``obj`` Failed with ``reason`` (and an Event named ``event_reason``, by default ``Failed``),
    from whichever stage it is in; an operation already at Final is left as it ended."""
    current = (obj.get("status") or {}).get("stage")
    step = stages.find_step(kind, current, stages.Outcome.FAILED)
    if step is None or not isinstance(current, str):
        log.warning("fail.no_step", current_stage=current, reason=reason)
        return None
    return advance(ports, kind, obj, Stage(current), stages.Outcome.FAILED, reason, event_reason=event_reason)


# --- scratch state ends at Final ------------------------------------------------------------------


def clear_scratch(ports: Moving, obj: RawObject) -> None:
    """Final, whatever the result: the operation's scratch keys go, all but its log, which its handler
    still stores in the location (then clears) or which stays, under its TTL, for ``davit <kind> logs``
    when the operation failed before that (``davit.operations.scratch``)."""
    if ports.scratch is None:  # a process without Redis (the CLI) has no scratch state
        return
    try:
        ports.scratch.operation(obj["metadata"]["uid"]).clear_at_final()
    except scratch.RedisError as exc:
        log.warning("scratch.not_cleared", error=str(exc))  # the keys' TTL ends them anyway
