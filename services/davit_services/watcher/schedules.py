"""Firing ApplicationBackupSchedules: the watcher's schedule loop (while leading) and its pure planner.

Every tick the loop reads the SchedulePolicies, the schedules and their backups, and for each schedule
and policy type asks ``davit.backup.schedules`` for the latest slot at or before now (the time the loop's
``davit.clocks.Clock`` reads: the real time, shifted only in tests). A slot fires when it is
newer than the last one fired (``status.lastTriggered``) and not older than the schedule itself:

* **exactly once per slot**: the backup's name is ``<schedule>-<policytype>-<slot>``, so creating it is
  idempotent across watcher restarts and between two watchers (the second create is refused as
  AlreadyExists); ``lastTriggered`` then keeps a slot from firing again even after its backup was
  deleted by retention or by hand;
* **one catch-up after downtime, not a burst**: only the latest slot is considered, so a watcher that
  was down for ten slots fires one backup, for the last of them;
* ``suspend: true`` fires nothing (the slots passed while suspended are not caught up on resume, except
  the latest: resuming is like coming back from downtime);
* a schedule naming a SchedulePolicy that does not exist, or one whose values cannot be computed with
  (an ``expireAfter`` or ``intervalMinutes`` past what a date can hold), gets the condition
  ``PolicyFound=False`` and a Warning Event (once, when the condition changes), and fires nothing;
* **each schedule on its own**: a schedule whose template cannot be used (a ``ttl`` too long to compute
  with) or whose backup the API server refuses gets ``Scheduling=False`` with the reason and a Warning
  Event, and the loop goes on with the other schedules: one tenant's schedule never stops another's.

The schedule's name goes into the ``davit.dev/schedule`` label of its backups through
``davit.labels.label_value`` (a name longer than a label value's 63 characters is cut and ends with a
hash), and the backups are found again by that same value.

The planner also works out what the schedule's retention would delete now (``davit.retention.rules``,
the retention service's own rules): only then is the retention service asked to apply it (a ``Retain``
message on ``davit.retention``), at once when that changes and at most once a minute while it stays. A
backup past its ``expireAfter`` is so deleted at the first tick after its expiry, and a schedule with
nothing to delete costs the retention service nothing.
"""

from __future__ import annotations

import datetime
import json
import threading
from dataclasses import dataclass, field
from typing import Any

import structlog
from pydantic import ValidationError

from davit import clocks, constants, labels, timeutil
from davit.api.objects import RawObject
from davit.api.types import PolicySpec
from davit.backup import schedules
from davit.constants import Kind, Queue, RetentionAction
from davit.kube import client, events
from davit.kube.client import ApiException
from davit.kube.operations import Operations
from davit.operations import queueing
from davit.operations.messages import Message
from davit.retention import rules

log = structlog.get_logger(__name__)

POLICY_TYPE_LABEL = rules.POLICY_TYPE_LABEL
SLOT_ANNOTATION = f"{constants.ANNOTATION_PREFIX}schedule-slot"
POLICY_FOUND = "PolicyFound"
#: Whether the schedule's backups can be made: False when its template cannot be used or firing failed.
SCHEDULING = "Scheduling"
#: The longest error text put in a condition (the Event's message is cut by ``events.record``).
_MAX_ERROR = 512


@dataclass(frozen=True)
class Fire:
    policy_type: str
    slot: datetime.datetime
    name: str


@dataclass(frozen=True)
class SchedulePlan:
    fire: list[Fire] = field(default_factory=list)
    #: Status fields to write (only when they differ from the current ones).
    status: dict[str, Any] = field(default_factory=dict)
    #: A Warning Event to record, as (reason, message), if any.
    event: tuple[str, str] | None = None
    #: The backups the schedule's retention would delete now (``rules.to_delete``), oldest first: the
    #: retention service is asked to act only while there are some.
    retention_due: tuple[str, ...] = ()


def _condition(
    found: bool,
    message: str,
    previous: list[RawObject],
    now: datetime.datetime,
    reason: str = "",
    kind: str = POLICY_FOUND,
) -> RawObject:
    status = "True" if found else "False"
    old = next((c for c in previous if c.get("type") == kind), None)
    unchanged = old is not None and old.get("status") == status
    default_reason = {POLICY_FOUND: ("Found", "PolicyMissing"), SCHEDULING: ("Scheduled", "SchedulingFailed")}
    return {
        "type": kind,
        "status": status,
        "reason": reason or default_reason[kind][0 if found else 1],
        "message": message,
        "lastTransitionTime": old.get("lastTransitionTime")
        if old and unchanged
        else timeutil.format_time(now),
    }


def _replace_condition(conditions: list[RawObject], condition: RawObject) -> list[RawObject]:
    return [c for c in conditions if c.get("type") != condition["type"]] + [condition]


def _failing(conditions: list[RawObject], kind: str, reason: str) -> bool:
    """Whether the condition already says ``False`` for this reason (its Event was recorded then)."""
    return any(
        c.get("type") == kind and c.get("status") == "False" and c.get("reason") == reason for c in conditions
    )


def _validation_message(exc: ValidationError) -> str:
    """Pydantic's errors as ``field: problem; ...``, without its multi-line layout and links."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()
    )


def _check_durations(body: PolicySpec) -> None:
    """``ValueError`` naming the entry whose ``expireAfter`` retention could not compute with."""
    for policy_type, entry in schedules.entries(body).items():
        if entry.expire_after is not None:
            try:
                rules.parse_duration(entry.expire_after)
            except ValueError as exc:
                raise ValueError(f"{policy_type}.expireAfter: {exc}") from None


def template_problem(spec: RawObject) -> str | None:
    """Why the backups of this template could not be made or kept, or None.

    The CRD checks the template's shape; what it cannot check is whether a ``ttl`` of the right shape is
    one Davit can count with ("999999w" is 19,000 years).
    """
    ttl = (((spec.get("template") or {}).get("spec")) or {}).get("ttl")
    if not ttl:
        return None
    try:
        rules.parse_duration(str(ttl))
    except ValueError as exc:
        return f"template.spec.ttl: {exc}"
    return None


def _items(backups: list[RawObject]) -> dict[str, list[RawObject]]:
    items: dict[str, list[RawObject]] = {}
    for backup in sorted(
        backups, key=lambda b: (b["metadata"].get("creationTimestamp") or "", b["metadata"]["name"])
    ):
        kind = (backup["metadata"].get("labels") or {}).get(POLICY_TYPE_LABEL, "")
        status = backup.get("status") or {}
        entry = {"name": backup["metadata"]["name"], "status": status.get("status") or "Pending",
                 "creationTimestamp": backup["metadata"].get("creationTimestamp")}  # fmt: skip
        if status.get("finishTimestamp"):
            entry["finishTimestamp"] = status["finishTimestamp"]
        items.setdefault(kind, []).append(entry)
    return items


def _successful(backup: RawObject) -> bool:
    return (backup.get("status") or {}).get("status") == "Successful"


def _last_success(backups: list[RawObject]) -> dict[str, Any]:
    done = [b for b in backups if _successful(b) and b["status"].get("finishTimestamp")]
    if not done:
        return {}
    last = max(done, key=lambda b: b["status"]["finishTimestamp"])
    finished = timeutil.parse_time(last["status"]["finishTimestamp"])
    started = timeutil.parse_time(
        last["status"].get("triggerTimestamp") or last["metadata"].get("creationTimestamp")
    )
    fields: dict[str, Any] = {"lastSuccessfulBackup": last["metadata"]["name"],
                              "lastSuccessTime": last["status"]["finishTimestamp"]}  # fmt: skip
    if finished and started:
        fields["lastSuccessDuration"] = timeutil.format_elapsed((finished - started).total_seconds())
    return fields


def _slots(
    name: str,
    body: PolicySpec,
    spec: RawObject,
    current: RawObject,
    created: datetime.datetime,
    now: datetime.datetime,
) -> tuple[list[Fire], dict[str, str], dict[str, str]]:
    """The slots due per policy type, the next trigger of each, and ``lastTriggered`` after firing."""
    last_triggered = dict(current.get("lastTriggered") or {})
    fire: list[Fire] = []
    next_trigger: dict[str, str] = {}
    for policy_type, entry in schedules.entries(body).items():
        next_trigger[policy_type] = timeutil.format_time(
            schedules.next_trigger(policy_type, entry, body.time_zone, now)
        )
        if spec.get("suspend"):
            continue
        last = timeutil.parse_time(last_triggered.get(policy_type))
        slot = schedules.due_slot(policy_type, entry, body.time_zone, now, last, not_before=created)
        if slot is None:
            continue
        fire.append(Fire(policy_type, slot, schedules.backup_name(name, policy_type, slot)))
        last_triggered[policy_type] = timeutil.format_time(slot)
    return fire, next_trigger, last_triggered


def _retention_due(body: PolicySpec, backups: list[RawObject], now: datetime.datetime) -> tuple[str, ...]:
    """What retention would delete now: the same rules on the same backups the retention service
    applies (``davit_services.retention.expiry``), which decides again before it deletes anything."""
    live = [b for b in backups if not b["metadata"].get("deletionTimestamp")]
    records = [rules.record_of(b, now) for b in live]
    return tuple(d.name for d in rules.to_delete(records, schedules.entries(body), now))


def _unschedulable(
    status: dict[str, Any],
    conditions: list[RawObject],
    reason: str,
    message: str,
    now: datetime.datetime,
    kind: str = POLICY_FOUND,
    retention_due: tuple[str, ...] = (),
) -> SchedulePlan:
    """Nothing fires: the condition says why, and a Warning Event says so once, when it starts."""
    was_failing = (
        any(c.get("type") == kind and c.get("status") == "False" for c in conditions)
        if kind == POLICY_FOUND
        else _failing(conditions, kind, reason)
    )
    condition = _condition(False, message, conditions, now, reason=reason, kind=kind)
    status["conditions"] = _replace_condition(conditions, condition)
    status["nextTrigger"] = None  # null, not {}: a merge patch would keep the old keys of a map
    return SchedulePlan(
        status=status, event=None if was_failing else (reason, message), retention_due=retention_due
    )


def plan_schedule(
    schedule: RawObject, policy: RawObject | None, backups: list[RawObject], now: datetime.datetime
) -> SchedulePlan:
    """What to do about one schedule now (pure): which slots to fire, the status to show."""
    meta, spec = schedule["metadata"], schedule.get("spec") or {}
    current = schedule.get("status") or {}
    conditions = list(current.get("conditions") or [])
    status: dict[str, Any] = {"items": _items(backups), **_last_success(backups)}
    if policy is None:
        message = f"SchedulePolicy {spec.get('schedulePolicyName')} not found: nothing is scheduled"
        return _unschedulable(status, conditions, "PolicyMissing", message, now)
    try:
        body = PolicySpec.model_validate(policy.get("policy") or {})
        _check_durations(body)
        # A schedule fires no slot from before it existed: creating one never fires at once.
        created = timeutil.parse_time(meta.get("creationTimestamp")) or now
        plan = _slots(meta["name"], body, spec, current, created, now)
        due = _retention_due(body, backups, now)
    except (ValueError, OverflowError) as exc:  # ValidationError and ScheduleError are ValueErrors
        problem = _validation_message(exc) if isinstance(exc, ValidationError) else str(exc)
        message = f"SchedulePolicy {spec.get('schedulePolicyName')} cannot be evaluated: {problem}"
        return _unschedulable(status, conditions, "PolicyInvalid", message, now)
    found = _condition(True, f"SchedulePolicy {spec.get('schedulePolicyName')}", conditions, now)
    conditions = _replace_condition(conditions, found)
    unusable = template_problem(spec)
    if unusable is not None:
        return _unschedulable(
            status, conditions, "TemplateInvalid", unusable, now, kind=SCHEDULING, retention_due=due
        )
    fire, next_trigger, last_triggered = plan
    scheduled = _condition(True, "backups are made as the policy says", conditions, now, kind=SCHEDULING)
    status["conditions"] = _replace_condition(conditions, scheduled)
    status["nextTrigger"] = None if spec.get("suspend") or not next_trigger else next_trigger
    status["lastTriggered"] = last_triggered
    return SchedulePlan(fire=fire, status=status, retention_due=due)


def describe_error(exc: Exception) -> str:
    """An error while firing a schedule, in words for its condition and Event: the API server's own
    message when it refused something (a create over a quota, a name it does not take)."""
    if isinstance(exc, ApiException):
        text = str(exc.reason or "")
        try:
            body = json.loads(exc.body or "{}")
        except (TypeError, ValueError):
            body = {}
        if isinstance(body, dict) and body.get("message"):
            text = str(body["message"])
        message = f"the API server answered {exc.status}: {text}"
    else:
        message = f"{type(exc).__name__}: {exc}"
    return message[:_MAX_ERROR]


def failure_plan(schedule: RawObject, message: str, now: datetime.datetime) -> SchedulePlan:
    """What to write when handling one schedule failed (pure): ``Scheduling=False`` with the error, and a
    Warning Event only when the condition turns False (not on every tick it stays so)."""
    conditions = list((schedule.get("status") or {}).get("conditions") or [])
    reason = "SchedulingFailed"
    condition = _condition(False, message, conditions, now, reason=reason, kind=SCHEDULING)
    unchanged = _failing(conditions, SCHEDULING, reason)
    return SchedulePlan(
        status={"conditions": _replace_condition(conditions, condition)},
        event=None if unchanged else (reason, message),
    )


def backup_for(schedule: RawObject, fire: Fire) -> RawObject:
    """The ApplicationBackup a slot fires: the template's spec, named and labelled for the schedule."""
    meta, spec = schedule["metadata"], schedule.get("spec") or {}
    backup_spec = dict(((spec.get("template") or {}).get("spec")) or {})
    if spec.get("reclaimPolicy"):
        backup_spec["reclaimPolicy"] = spec["reclaimPolicy"]
    return {
        "apiVersion": constants.API_GROUP_VERSION,
        "kind": Kind.APPLICATION_BACKUP.value,
        "metadata": {
            "name": fire.name,
            "namespace": meta["namespace"],
            # The name may be up to 253 characters, a label value only 63.
            "labels": {
                constants.SCHEDULE_LABEL: labels.label_value(meta["name"]),
                POLICY_TYPE_LABEL: fire.policy_type,
            },
            "annotations": {SLOT_ANNOTATION: timeutil.format_time(fire.slot)},
        },
        "spec": backup_spec,
    }


class Scheduler:
    """The schedule loop: one tick every ``tick_seconds`` while this watcher leads."""

    def __init__(
        self, api: client.ApiClient, celery: Any, tick_seconds: float, clock: clocks.Clock = clocks.SYSTEM
    ) -> None:
        self.api = api
        self.ops = Operations(api)
        self.celery = celery
        self.tick_seconds = tick_seconds
        #: What "now" is for the slots (``davit.clocks``): the real time except in tests.
        self.clock = clock
        #: Per schedule uid, the minute and the backups of the last Retain message sent.
        self.retention_asked: dict[str, tuple[str, tuple[str, ...]]] = {}

    def run(self, lost: threading.Event) -> None:
        while not lost.is_set():
            try:
                self.tick(self.clock.now())
            except Exception:
                log.exception("schedules.tick_failed")
            lost.wait(self.tick_seconds)

    def _list(self, kind: Kind) -> list[RawObject]:
        return self.ops.list_all(kind, None, sort=False)

    def tick(self, now: datetime.datetime) -> None:
        schedules_ = self._list(Kind.APPLICATION_BACKUP_SCHEDULE)
        # What was asked of retention is remembered only for the schedules that still exist.
        present = {s["metadata"]["uid"] for s in schedules_}
        self.retention_asked = {uid: v for uid, v in self.retention_asked.items() if uid in present}
        if not schedules_:
            return
        policies = {p["metadata"]["name"]: p for p in self._list(Kind.SCHEDULE_POLICY)}
        # Keyed by the label's value: a schedule finds its backups by ``label_value`` of its name.
        backups: dict[tuple[str, str], list[RawObject]] = {}
        for backup in self._list(Kind.APPLICATION_BACKUP):
            owner = (backup["metadata"].get("labels") or {}).get(constants.SCHEDULE_LABEL)
            if owner:
                backups.setdefault((backup["metadata"]["namespace"], owner), []).append(backup)
        for schedule in schedules_:
            meta = schedule["metadata"]
            if meta.get("deletionTimestamp"):
                continue
            try:
                policy = policies.get((schedule.get("spec") or {}).get("schedulePolicyName", ""))
                owned = backups.get((meta["namespace"], labels.label_value(meta["name"])), [])
                self.apply(schedule, plan_schedule(schedule, policy, owned, now), now)
            except Exception as exc:  # one schedule's failure must not stop the others
                log.exception("schedule.failed", namespace=meta.get("namespace"), schedule=meta.get("name"))
                self.report_failure(schedule, describe_error(exc), now)

    def report_failure(self, schedule: RawObject, message: str, now: datetime.datetime) -> None:
        """``Scheduling=False`` and a Warning Event on a schedule that could not be handled; failing to say
        so is logged, never raised (the loop goes on with the next schedule)."""
        meta = schedule["metadata"]
        plan = failure_plan(schedule, message, now)
        try:
            self.ops.patch_status(Kind.APPLICATION_BACKUP_SCHEDULE, schedule, plan.status)
        except Exception:  # e.g. the schedule was deleted meanwhile
            log.exception(
                "schedule.status_failed", namespace=meta.get("namespace"), schedule=meta.get("name")
            )
        if plan.event is not None:
            events.record(self.api, schedule, "Warning", *plan.event, constants.COMPONENT_WATCHER)

    def apply(self, schedule: RawObject, plan: SchedulePlan, now: datetime.datetime) -> None:
        meta = schedule["metadata"]
        for fire in plan.fire:
            try:
                self.ops.create(Kind.APPLICATION_BACKUP, meta["namespace"], backup_for(schedule, fire))
                log.info(
                    "schedule.fired", schedule=meta["name"], policyType=fire.policy_type, backup=fire.name
                )
                note = f"{fire.policy_type}: backup {fire.name} created"
                events.record(self.api, schedule, "Normal", "Triggered", note, constants.COMPONENT_WATCHER)
            except ApiException as exc:
                if exc.status != 409:  # fired by an earlier attempt or another watcher: the slot is done
                    raise
        current = schedule.get("status") or {}
        if any(current.get(k) != v for k, v in plan.status.items()):
            self.ops.patch_status(Kind.APPLICATION_BACKUP_SCHEDULE, schedule, plan.status)
        if plan.event is not None:
            events.record(self.api, schedule, "Warning", *plan.event, constants.COMPONENT_WATCHER)
        self.ask_retention(schedule, plan, now)

    def ask_retention(self, schedule: RawObject, plan: SchedulePlan, now: datetime.datetime) -> None:
        """Send the schedule a Retain message while its retention has backups to delete: at once when
        what is due changes, then again once a minute while it stays (the message was lost, or the
        retention service is away). Nothing due, nothing sent."""
        meta = schedule["metadata"]
        minute = now.strftime("%Y%m%d%H%M")  # the message's part
        asked = (minute, plan.retention_due)
        if not plan.retention_due or self.retention_asked.get(meta["uid"]) == asked:
            return
        message = Message(Kind.APPLICATION_BACKUP_SCHEDULE, meta["namespace"], meta["name"], meta["uid"],
                          RetentionAction.RETAIN.value, minute)  # fmt: skip
        try:
            queueing.send(self.celery, message, Queue.RETENTION.value)
        except Exception:  # the queue, not this schedule, failed; the next tick resends
            log.exception("schedule.retention_not_sent", schedule=meta["name"])
            return
        self.retention_asked[meta["uid"]] = asked
