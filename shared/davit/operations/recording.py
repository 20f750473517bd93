"""Recording the metrics that must be counted once (``davit.metrics``) in Redis, from wherever they
happen: the writer of an operation's Final status, the exporter's catch-up, the workers' task ends, the
node agents' bytes. A metric that cannot be recorded is logged and let go: it never fails the work."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import structlog

from davit import metrics
from davit.constants import Kind
from davit.operations.scratch import RecordedMetrics, RedisError

log = structlog.get_logger(__name__)


def record_outcome(recorded: RecordedMetrics, kind: Kind, obj: Mapping[str, Any]) -> bool:
    """Count ``obj``, an operation that reached Final, unless it was counted before (or is not at Final,
    or is an import). True when it was counted now. Redis errors are the caller's."""
    increments = metrics.outcome_increments(kind, obj)
    uid = (obj.get("metadata") or {}).get("uid")
    if increments is None or not isinstance(uid, str) or not uid:
        return False
    finished = metrics.finished_at(obj) or time.time()
    return recorded.record_once(uid, finished, increments.adds, increments.maxima)


def try_record_outcome(recorded: RecordedMetrics | None, kind: Kind, obj: Mapping[str, Any]) -> None:
    """``record_outcome``, logging rather than raising: the exporter counts what this misses."""
    if recorded is None:
        return
    try:
        record_outcome(recorded, kind, obj)
    except RedisError as exc:  # WatchError, after its retries, is one too
        log.warning("metrics.outcome_not_recorded", error=str(exc))


def try_add(recorded: RecordedMetrics | None, increments: metrics.Increments) -> None:
    """Add a task's or a node agent's increments; a Redis failure is logged, never raised."""
    if recorded is None or not increments.adds:
        return
    try:
        recorded.add(increments.adds)
    except RedisError as exc:
        log.warning("metrics.not_recorded", error=str(exc))
