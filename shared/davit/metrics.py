"""The metrics Davit records as things happen, and how they are kept in Redis (pure).

Workers have no ``/metrics`` of their own: only the exporter serves one. Whatever must be counted once
and never go down is therefore added to one Redis hash (``davit.operations.scratch.RecordedMetrics``)
by whoever sees it happen, and the exporter serves that hash:

- an operation's outcome, duration, per-stage durations and bytes, once, when it reaches Final
  (``outcome_increments``; the writer of Final records it, and the exporter records any Final operation
  it finds unrecorded, the operation's uid making both idempotent);
- every task's duration, failure or retry, per queue (``task_increments``);
- the bytes each node agent read or wrote (``node_bytes_increments``).

Counters recomputed from the custom resources present would fall whenever retention or a user deletes a
backup, and Prometheus reads any fall as a reset; these only grow, until Redis loses them, which
Prometheus reads correctly as a reset to zero.

A hash field is the JSON ``[metric, [label values], part]`` where ``part`` is ``""`` for a counter or
gauge sample, a bucket bound (``"+Inf"`` included) for a histogram bucket, ``"sum"`` or ``"count"``.
Whatever is in Redis is untrusted: ``decode`` drops any field that is not one of these.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from davit import timeutil
from davit.api.types import Stage, Status
from davit.constants import OPERATION_KINDS, SCHEDULE_LABEL, STATE_LOST_REASON, Kind
from davit.operations import stages
from davit.retention import location_sync

MetricType = Literal["counter", "histogram", "gauge_max"]

#: Operation and stage durations, in seconds: a one-ConfigMap backup takes a second, a large volume
#: backup hours.
DURATION_BUCKETS: Final = (
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0,
    3600.0, 7200.0, 10800.0, 14400.0, 21600.0,
)  # fmt: skip
#: Task durations, in seconds: most tasks hand work on in well under a second; a volume shard runs minutes.
TASK_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
#: How an operation can have ended; any other value is reported as ``Unknown``.
RESULTS: Final = (Status.SUCCESSFUL, Status.PARTIAL_SUCCESS, Status.FAILED)
UNKNOWN_RESULT: Final = "Unknown"
#: A counter or histogram part of a sample.
COUNT_PART: Final = "count"
SUM_PART: Final = "sum"
INF: Final = "+Inf"


@dataclass(frozen=True)
class Definition:
    """One recorded metric. ``name`` is the family's name (a counter's ``_total`` is added when it is
    served); ``gauge_max`` keeps the largest value ever recorded (a timestamp)."""

    name: str
    type: MetricType
    labels: tuple[str, ...]
    help: str
    buckets: tuple[float, ...] = ()


OPERATIONS_COMPLETED: Final = Definition(
    "davit_operations_completed",
    "counter",
    ("kind", "namespace", "schedule", "result"),
    "Operations that reached Final, by kind, namespace, schedule (the davit.dev/schedule label, empty for "
    "manual ones) and result; counted once, when they end, so deleting one changes nothing.",
)
STATE_LOST: Final = Definition(
    "davit_operations_state_lost",
    "counter",
    ("kind",),
    f"Operations that failed with the reason {STATE_LOST_REASON} (their scratch state in Redis was lost "
    "and could not be rebuilt), by kind.",
)
OPERATION_DURATION: Final = Definition(
    "davit_operation_duration_seconds",
    "histogram",
    ("kind", "result"),
    "Seconds from acceptance (triggerTimestamp) to finishTimestamp of the operations that reached Final, "
    "by kind and result.",
    DURATION_BUCKETS,
)
STAGE_DURATION: Final = Definition(
    "davit_stage_duration_seconds",
    "histogram",
    ("kind", "stage"),
    "Seconds each stage took (status.stageHistory) in the operations that reached Final, by kind and "
    "stage; Initial is the time waiting to be accepted and picked up.",
    DURATION_BUCKETS,
)
BYTES_READ: Final = Definition(
    "davit_backup_bytes_read",
    "counter",
    ("namespace",),
    "Bytes read (status.totalSize) by the ApplicationBackups that reached Final, by namespace.",
)
BYTES_STORED: Final = Definition(
    "davit_backup_bytes_stored",
    "counter",
    ("namespace",),
    "Bytes newly written to the location after deduplication and compression (status.storedSize) by the "
    "ApplicationBackups that reached Final, by namespace.",
)
LAST_SUCCESS: Final = Definition(
    "davit_last_successful_backup_timestamp_seconds",
    "gauge_max",
    ("namespace", "schedule"),
    "finishTimestamp (Unix seconds) of the newest Successful ApplicationBackup, by namespace and schedule "
    "(empty for manual backups); PartialSuccess does not count. Deleting the backup does not lower it.",
)
TASK_DURATION: Final = Definition(
    "davit_task_duration_seconds",
    "histogram",
    ("queue",),
    "Seconds each worker task ran, by the queue it was taken from.",
    TASK_BUCKETS,
)
TASK_FAILURES: Final = Definition(
    "davit_task_failures",
    "counter",
    ("queue",),
    "Worker tasks that ended with an unexpected error, by queue.",
)
TASK_RETRIES: Final = Definition(
    "davit_task_retries",
    "counter",
    ("queue",),
    "Worker tasks sent back to their queue to be tried again after a transient error, by queue.",
)
NODE_BYTES: Final = Definition(
    "davit_node_agent_bytes",
    "counter",
    ("node", "direction"),
    "Bytes of volume data the node agent of each node read from volumes (direction=read, backups) or "
    "wrote into them (direction=written, restores).",
)
DEFINITIONS: Final[Mapping[str, Definition]] = {
    d.name: d
    for d in (
        OPERATIONS_COMPLETED, STATE_LOST, OPERATION_DURATION, STAGE_DURATION, BYTES_READ, BYTES_STORED,
        LAST_SUCCESS, TASK_DURATION, TASK_FAILURES, TASK_RETRIES, NODE_BYTES,
    )
}  # fmt: skip


def field_name(name: str, labels: Sequence[str], part: str = "") -> str:
    return json.dumps([name, list(labels), part], separators=(",", ":"))


def _le(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else str(bound)


@dataclass
class Increments:
    """What one event adds to the recorded metrics: amounts to add per field, and values that replace a
    ``gauge_max`` field when larger."""

    adds: dict[str, float] = field(default_factory=dict)
    maxima: dict[str, float] = field(default_factory=dict)

    def count(self, definition: Definition, labels: Sequence[str], amount: float = 1.0) -> None:
        key = field_name(definition.name, labels)
        self.adds[key] = self.adds.get(key, 0.0) + amount

    def observe(self, definition: Definition, labels: Sequence[str], value: float) -> None:
        """One histogram observation: every bucket whose bound is at least ``value``, the count, the sum."""
        parts = [_le(bound) for bound in definition.buckets if value <= bound]
        for part in [*parts, INF, COUNT_PART]:
            key = field_name(definition.name, labels, part)
            self.adds[key] = self.adds.get(key, 0.0) + 1.0
        key = field_name(definition.name, labels, SUM_PART)
        self.adds[key] = self.adds.get(key, 0.0) + value

    def at_least(self, definition: Definition, labels: Sequence[str], value: float) -> None:
        key = field_name(definition.name, labels)
        self.maxima[key] = max(self.maxima.get(key, value), value)

    def __bool__(self) -> bool:
        return bool(self.adds or self.maxima)


# --- what is recorded --------------------------------------------------------------------------------


def _seconds_between(start: Any, end: Any) -> float | None:
    begin, finish = timeutil.parse_time(start), timeutil.parse_time(end)
    if begin is None or finish is None:
        return None
    return max(0.0, (finish - begin).total_seconds())


def _size(value: Any) -> int | None:
    # bool is an int in Python; a size of True is not a size.
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def result_of(status: Any) -> str:
    return status if status in RESULTS else UNKNOWN_RESULT


def outcome_increments(kind: Kind, obj: Mapping[str, Any]) -> Increments | None:
    """What an operation that reached Final adds to the recorded metrics; None for one not at Final, or
    for an import (a backup made elsewhere, which never ran here)."""
    status = obj.get("status") or {}
    if status.get("stage") != Stage.FINAL or kind not in OPERATION_KINDS:
        return None
    if kind is Kind.APPLICATION_BACKUP and location_sync.is_imported(dict(obj)):
        return None
    meta = obj.get("metadata") or {}
    namespace = str(meta.get("namespace") or "")
    schedule = str((meta.get("labels") or {}).get(SCHEDULE_LABEL) or "")
    result = result_of(status.get("status"))
    found = Increments()
    found.count(OPERATIONS_COMPLETED, [kind.value, namespace, schedule, result])
    reason = status.get("reason")
    if result == Status.FAILED and isinstance(reason, str) and reason.startswith(STATE_LOST_REASON):
        found.count(STATE_LOST, [kind.value])
    # triggerTimestamp is when the watcher accepted it; one refused before that counts from its creation.
    started = status.get("triggerTimestamp") or meta.get("creationTimestamp")
    duration = _seconds_between(started, status.get("finishTimestamp"))
    if duration is not None:
        found.observe(OPERATION_DURATION, [kind.value, result], duration)
    history = status.get(stages.HISTORY_FIELD)
    for entry in history if isinstance(history, list) else []:
        if not isinstance(entry, Mapping) or entry.get("stage") not in _STAGE_NAMES:
            continue
        seconds = _seconds_between(entry.get("startTimestamp"), entry.get("finishTimestamp"))
        if seconds is not None:
            found.observe(STAGE_DURATION, [kind.value, str(entry["stage"])], seconds)
    if kind is Kind.APPLICATION_BACKUP:
        found.count(BYTES_READ, [namespace], float(_size(status.get("totalSize")) or 0))
        found.count(BYTES_STORED, [namespace], float(_size(status.get("storedSize")) or 0))
        finished = timeutil.parse_time(status.get("finishTimestamp"))
        if result == Status.SUCCESSFUL and finished is not None:
            found.at_least(LAST_SUCCESS, [namespace, schedule], finished.timestamp())
    return found


_STAGE_NAMES: Final = frozenset(stage.value for stage in Stage if stage is not Stage.FINAL)


def finished_at(obj: Mapping[str, Any]) -> float | None:
    """The Unix time an operation reached Final (its finishTimestamp), for the record of which uids were
    counted; None without one."""
    return timeutil.epoch_seconds((obj.get("status") or {}).get("finishTimestamp"))


def task_increments(
    queue: str, seconds: float | None, failed: bool = False, retried: bool = False
) -> Increments:
    """One worker task's end: its duration (when known), and whether it failed or was retried."""
    found = Increments()
    # Per queue, node queues too: as many series as davit_queue_length has, so the two match on(queue).
    label = [queue]
    if seconds is not None:
        found.observe(TASK_DURATION, label, max(0.0, seconds))
    if failed:
        found.count(TASK_FAILURES, label)
    if retried:
        found.count(TASK_RETRIES, label)
    return found


def node_bytes_increments(node: str, direction: Literal["read", "written"], amount: int) -> Increments:
    found = Increments()
    if amount > 0:
        found.count(NODE_BYTES, [node, direction], float(amount))
    return found


# --- what is served ----------------------------------------------------------------------------------


@dataclass
class Recorded:
    """The recorded metrics read back: per metric, per label values, per part, the value."""

    values: dict[str, dict[tuple[str, ...], dict[str, float]]] = field(default_factory=dict)

    def get(self, definition: Definition) -> dict[tuple[str, ...], dict[str, float]]:
        return self.values.get(definition.name, {})

    def sum(self, definition: Definition, labels: tuple[str, ...]) -> float:
        return self.get(definition).get(labels, {}).get("", 0.0)


def _text(raw: Any) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def decode(raw: Mapping[Any, Any]) -> Recorded:
    """The hash as read from Redis; any field that is not a known metric with the right labels and part,
    or whose value is not a finite non-negative number, is dropped."""
    recorded = Recorded()
    for raw_key, raw_value in raw.items():
        try:
            name, labels, part = json.loads(_text(raw_key))
            value = float(_text(raw_value))
        except (ValueError, TypeError):
            continue
        definition = DEFINITIONS.get(name) if isinstance(name, str) else None
        if (
            definition is None
            or not isinstance(labels, list)
            or len(labels) != len(definition.labels)
            or not all(isinstance(label, str) for label in labels)
            or part not in _parts(definition)
            or not math.isfinite(value)
            or value < 0
        ):
            continue
        recorded.values.setdefault(name, {}).setdefault(tuple(labels), {})[part] = value
    return recorded


def _parts(definition: Definition) -> frozenset[str]:
    if definition.type == "histogram":
        return frozenset({*(_le(b) for b in definition.buckets), INF, COUNT_PART, SUM_PART})
    return frozenset({""})


def histogram_samples(
    definition: Definition, parts: Mapping[str, float]
) -> tuple[list[tuple[str, float]], float]:
    """Cumulative (le, count) pairs ending with +Inf, and the sum, from one label set's parts. The
    counts are made non-decreasing (a bucket never holds fewer than the one below it), so a tampered
    or half-read hash still serves a valid histogram."""
    buckets: list[tuple[str, float]] = []
    running = 0.0
    for bound in definition.buckets:
        running = max(running, parts.get(_le(bound), 0.0))
        buckets.append((_le(bound), running))
    running = max(running, parts.get(INF, 0.0), parts.get(COUNT_PART, 0.0))
    buckets.append((INF, running))
    return buckets, parts.get(SUM_PART, 0.0)


def always_present(definition: Definition) -> Iterable[tuple[str, ...]]:
    """Label sets served even before anything was recorded, so graphs and rates start at 0."""
    kinds = [kind.value for kind in OPERATION_KINDS]
    if definition is STATE_LOST:
        return [(kind,) for kind in kinds]
    if definition is OPERATION_DURATION:
        return [(kind, result.value) for kind in kinds for result in RESULTS]
    return []
