"""Moving an operation through its stages: one status write and one Event per change, from any worker."""

from __future__ import annotations

from typing import Any

import structlog

from davit import constants, timeutil
from davit.api.types import Stage, Status
from davit.constants import Kind
from davit.kube import events
from davit.operations.runtime import Runtime

log = structlog.get_logger(__name__)
RawObject = dict[str, Any]


def _elapsed(obj: RawObject) -> str:
    status = obj.get("status") or {}
    start = timeutil.parse_time(status.get("triggerTimestamp") or obj["metadata"].get("creationTimestamp"))
    return timeutil.format_elapsed((timeutil.utcnow() - start).total_seconds()) if start else "0s"


def set_stage(
    rt: Runtime,
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
        "stage": stage.value,
        "status": status.value,
        "reason": reason,
        "lastUpdateTimestamp": now,
        "elapsed": _elapsed(obj),
        **(extra or {}),
    }
    if stage == Stage.FINAL:
        patch["finishTimestamp"] = now
    updated = rt.ops.patch_status(kind, obj, patch, check_version=check_version)
    if previous != stage.value or stage == Stage.FINAL:
        failed = status == Status.FAILED
        events.record(
            rt.api,
            obj,
            "Warning" if failed else "Normal",
            event_reason
            or ("Failed" if failed else ("Completed" if stage == Stage.FINAL else "StageChanged")),
            f"Stage {stage.value}: {status.value}" + (f": {reason}" if reason else ""),
            constants.COMPONENT_WORKER,
        )
    log.info("stage.changed", stage=stage.value, status=status.value, reason=reason)
    return updated


def heartbeat(rt: Runtime, kind: Kind, obj: RawObject, extra: dict[str, Any]) -> None:
    """Show progress and tell the watcher's stall detection that the work is alive."""
    rt.ops.patch_status(
        kind,
        obj,
        {"lastUpdateTimestamp": timeutil.format_time(timeutil.utcnow()), "elapsed": _elapsed(obj), **extra},
    )


def fail(rt: Runtime, kind: Kind, obj: RawObject, reason: str, event_reason: str | None = None) -> RawObject:
    return set_stage(rt, kind, obj, Stage.FINAL, Status.FAILED, reason, event_reason=event_reason)
