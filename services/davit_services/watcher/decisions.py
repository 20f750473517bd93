"""What the watcher should do about one operation, derived from its object alone (pure).

Level-triggered: the decision depends on the object's current ``status`` (and, for a resync, on what is
waiting in the queues), never on which event brought it here, so a replayed or duplicated event leads to
the same decision as the first and a restarted watcher picks up where the last one stopped.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from davit import constants, tenancy, timeutil
from davit.api.objects import RawObject
from davit.api.types import Stage, Status
from davit.constants import Kind, Queue, RetentionAction
from davit.operations import stages
from davit.retention import expiry, location_sync
from davit.validation import Verdict

#: The condition recording that the current stage's message was issued.
QUEUED = "Queued"


@dataclass(frozen=True)
class EventNote:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class Decision:
    #: Status fields to merge into the object; None: write nothing.
    status: dict[str, Any] | None = None
    event: EventNote | None = None
    #: Send the current stage's message to this queue once the status write succeeded.
    enqueue: Queue | None = None
    #: The message's stage when it is not the status' stage (deletion).
    message_stage: str | None = None
    why: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


NOTHING = Decision()


def _condition(status: RawObject, kind: str) -> RawObject | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), None)


def _with_condition(
    status: RawObject, kind: str, value: bool, reason: str, message: str, now: str
) -> list[RawObject]:
    conditions = [c for c in status.get("conditions") or [] if c.get("type") != kind]
    previous = _condition(status, kind)
    flag = "True" if value else "False"
    changed = previous is None or previous.get("status") != flag
    conditions.append(
        {
            "type": kind,
            "status": flag,
            "reason": reason,
            "message": message,
            "lastTransitionTime": now if changed else previous.get("lastTransitionTime", now),  # type: ignore[union-attr]
        }
    )
    return conditions


def _elapsed(obj: RawObject, now: datetime.datetime) -> str:
    created = timeutil.parse_time(obj["metadata"].get("creationTimestamp"))
    return timeutil.format_elapsed((now - created).total_seconds()) if created else "0s"


def _from_verdict(kind: Kind, obj: RawObject, verdict: Verdict, now: datetime.datetime) -> Decision:
    status: RawObject = obj.get("status") or {}
    stamp = timeutil.format_time(now)
    base = {
        "triggerTimestamp": status.get("triggerTimestamp") or stamp,
        "lastUpdateTimestamp": stamp,
        "elapsed": _elapsed(obj, now),
    }
    if verdict.problems:
        reason = "; ".join(verdict.problems)
        return _failed(obj, now, reason, "Invalid", "ValidationFailed", "invalid", base)
    if verdict.waiting is not None:
        if status.get("reason") == verdict.waiting:
            return NOTHING
        return Decision(
            status={
                **base,
                **stages.stage_fields(Stage.INITIAL, Status.PENDING, verdict.waiting, None, status, stamp),
                "conditions": _with_condition(status, QUEUED, False, "Waiting", verdict.waiting, stamp),
            },
            event=EventNote("Normal", "Waiting", verdict.waiting),
            why="waiting",
        )
    step = stages.next_step(kind, Stage.INITIAL, stages.Outcome.ACCEPTED)
    queue, accepted = step.queue, step.status
    assert queue is not None and accepted is not None, f"{kind} has no owner for its first stage"
    message = f"accepted; queued for {queue.value}"
    return Decision(
        status={
            **base,
            **stages.stage_fields(step.stage, accepted, message, None, status, stamp),
            "resourceCount": status.get("resourceCount", 0),
            "volumesProgress": status.get("volumesProgress", "0/0"),
            # The generation just validated: workers refuse to act on any other (davit.tenancy).
            "acceptedGeneration": obj["metadata"].get("generation"),
            "conditions": _with_condition(status, QUEUED, True, "Enqueued", message, stamp),
        },
        event=EventNote("Normal", "Accepted", f"Stage Initial: {message}"),
        enqueue=queue,
        why="accepted",
    )


def _failed(
    obj: RawObject,
    now: datetime.datetime,
    reason: str,
    condition_reason: str,
    event_reason: str,
    why: str,
    extra: dict[str, Any] | None = None,
) -> Decision:
    """End ``obj`` as Failed with ``reason``: its Queued condition turns False, a Warning Event says why."""
    status: RawObject = obj.get("status") or {}
    stamp = timeutil.format_time(now)
    return Decision(
        status={
            "lastUpdateTimestamp": stamp,
            "elapsed": _elapsed(obj, now),
            **(extra or {}),
            **stages.stage_fields(Stage.FINAL, Status.FAILED, reason, stamp, status, stamp),
            "conditions": _with_condition(status, QUEUED, False, condition_reason, reason, stamp),
        },
        event=EventNote("Warning", event_reason, reason),
        why=why,
    )


def _spec_changed(obj: RawObject, reason: str, now: datetime.datetime) -> Decision:
    """An accepted operation whose spec was edited: it ends here, and the workers, which check the same
    rule before they act, do nothing more for it."""
    return _failed(obj, now, reason, tenancy.SPEC_CHANGED, tenancy.SPEC_CHANGED, "spec changed")


def _deletion(kind: Kind, obj: RawObject, in_flight: Callable[[str], bool]) -> Decision:
    finalizers = obj["metadata"].get("finalizers") or []
    if kind != Kind.APPLICATION_BACKUP or constants.BACKUP_FINALIZER not in finalizers:
        return NOTHING
    if in_flight(message_key(obj, RetentionAction.DELETE.value)):
        return NOTHING
    policy = (obj.get("spec") or {}).get("reclaimPolicy") or "Delete"
    return Decision(
        event=EventNote("Normal", "Deleting", f"reclaimPolicy {policy}: queued for {Queue.RETENTION.value}"),
        enqueue=Queue.RETENTION,
        message_stage=RetentionAction.DELETE.value,
        why="deleting",
    )


def _expiry(kind: Kind, obj: RawObject, now: datetime.datetime) -> Decision:
    """On a resync: a finished backup whose ttl passed goes to retention, which deletes it."""
    if kind != Kind.APPLICATION_BACKUP or not expiry.ttl_expired(obj, now):
        return NOTHING
    note = f"ttl {obj['spec']['ttl']} passed; queued for deletion by {Queue.RETENTION.value}"
    return Decision(
        event=EventNote("Normal", "Expired", note),
        enqueue=Queue.RETENTION,
        message_stage=RetentionAction.EXPIRE.value,
        why="ttl",
    )


def message_key(obj: RawObject, stage: str) -> str:
    """The idempotency key of the whole-stage message (see davit.operations.messages.Message.key)."""
    return f"{obj['metadata']['uid']}:{stage}:"


def decide(
    kind: Kind,
    obj: RawObject,
    validate: Callable[[], Verdict],
    *,
    now: datetime.datetime,
    resync: bool,
    in_flight: Callable[[str], bool],
    requeue_grace_seconds: float,
    stall_seconds: float,
    expiry_now: datetime.datetime,
) -> Decision:
    """The one thing to do about ``obj`` now (often nothing).

    ``validate`` is called only for operations not yet accepted; ``in_flight(key)`` only during a
    resync (a watch event never re-sends a message: that is what makes replayed events harmless).
    ``expiry_now`` is what a backup's ttl is compared with (the watcher's ``davit.clocks.Clock``, shifted
    only in tests); ``now``, the real time, stamps the status and measures stalls.
    """
    if obj["metadata"].get("deletionTimestamp"):
        return _deletion(kind, obj, in_flight)
    if kind == Kind.APPLICATION_BACKUP and location_sync.is_imported(obj):
        # An import stands for a backup made elsewhere: never started, never validated or requeued. The
        # location sync writes its status, also when it is (still) missing.
        return NOTHING
    status: RawObject = obj.get("status") or {}
    stage, state = status.get("stage"), status.get("status")
    if not stage:
        return _from_verdict(kind, obj, validate(), now)
    if stage == Stage.FINAL:
        return _expiry(kind, obj, expiry_now) if resync else NOTHING
    queued = _condition(status, QUEUED)
    if stage == Stage.INITIAL and state == Status.PENDING and (queued or {}).get("status") != "True":
        return _from_verdict(kind, obj, validate(), now)
    changed = tenancy.spec_changed(obj)
    if changed is not None:
        return _spec_changed(obj, changed, now)
    if not resync:
        return NOTHING

    try:
        current = Stage(stage)
    except ValueError:
        return NOTHING
    queue = stages.owner(kind, current)
    if queue is None:
        return NOTHING
    updated = timeutil.parse_time(status.get("lastUpdateTimestamp"))
    age = (now - updated).total_seconds() if updated else float("inf")
    stamp = timeutil.format_time(now)
    if state == Status.PENDING and not in_flight(message_key(obj, stage)) and age >= requeue_grace_seconds:
        note = f"the message for stage {stage} was lost; queued again for {queue.value}"
        return Decision(
            status={"lastUpdateTimestamp": stamp},
            event=EventNote("Normal", "Requeued", note),
            enqueue=queue,
            why="lost message",
        )
    # Pending too: its message can be in flight forever, taken (unacknowledged) by a worker that died
    # before it moved the stage on; a stage whose worker keeps no heartbeat while Pending (PostExecRule)
    # would otherwise wait for the broker's visibility timeout, hours.
    if state in (Status.IN_PROGRESS, Status.PENDING) and age >= stall_seconds:
        # No (or an unparsable) lastUpdateTimestamp makes ``age`` infinite, which int() cannot convert.
        quiet = f"for {int(age)}s" if math.isfinite(age) else "since an unknown time (no lastUpdateTimestamp)"
        note = f"no progress in stage {stage} {quiet}; queued again for {queue.value}"
        return Decision(
            status={"lastUpdateTimestamp": stamp},
            event=EventNote("Warning", "Stalled", note),
            enqueue=queue,
            why="stalled",
        )
    return NOTHING
