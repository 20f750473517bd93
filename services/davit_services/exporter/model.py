"""What the exporter reports, as a function of the custom resources present and the time (pure).

Everything here reads raw objects as the API server returns them (dicts, camelCase) and builds
prometheus_client metric families; nothing touches the network or a global registry, so a restarted
exporter that sees the same objects reports the same numbers, and the tests need no cluster.

Label sets are bounded: operations still in flight (few at any moment) carry their namespace and name;
completed ones are only counted and summed by kind, namespace, schedule and result.
"""

from __future__ import annotations

import datetime
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from davit import timeutil
from davit.api.objects import RawObject
from davit.api.types import Stage, Status
from davit.constants import OPERATION_KINDS, SCHEDULE_LABEL, Kind
from davit.operations.state_loss import STATE_LOST

#: How a Final operation can have ended; any other value is reported as ``Unknown``.
RESULTS: Final = (Status.SUCCESSFUL, Status.PARTIAL_SUCCESS, Status.FAILED)
UNKNOWN_RESULT: Final = "Unknown"
#: Stages and statuses an operation passes through before Final; reported even when nothing is there, so
#: a graph falls to 0 instead of stopping.
IN_FLIGHT_STAGES: Final = tuple(stage for stage in Stage if stage is not Stage.FINAL)
IN_FLIGHT_STATUSES: Final = (Status.PENDING, Status.IN_PROGRESS)
#: A volume with one of these statuses needs no more work.
VOLUME_DONE: Final = frozenset(RESULTS)
#: Operation durations, in seconds: a one-ConfigMap backup takes a second, a large volume backup hours.
DURATION_BUCKETS: Final = (
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0,
    3600.0, 7200.0, 10800.0, 14400.0, 21600.0,
)  # fmt: skip
#: kombu stores a message sent with a priority in ``<queue>\x06\x16<priority>``; counted with its queue.
KOMBU_PRIORITY_SEP: Final = "\x06\x16"

#: The status fields the metrics read; ``slim`` keeps only these (and a volume's status) in the cache.
_STATUS_FIELDS: Final = ("stage", "status", "totalSize", "storedSize", "triggerTimestamp", "finishTimestamp")
_METADATA_FIELDS: Final = ("name", "namespace", "uid", "creationTimestamp")


@dataclass(frozen=True)
class Snapshot:
    """The objects the exporter has seen: operations by kind, and BackupLocations."""

    operations: Mapping[Kind, Sequence[RawObject]] = field(default_factory=dict)
    locations: Sequence[RawObject] = ()


@dataclass(frozen=True)
class Operation:
    """The parts of an ApplicationBackup, ApplicationRestore or ApplicationClone the metrics read."""

    kind: Kind
    namespace: str
    name: str
    schedule: str
    stage: str
    status: str
    started: datetime.datetime | None
    finished: datetime.datetime | None
    volumes_total: int
    volumes_done: int
    total_size: int | None
    stored_size: int | None
    #: Failed because its scratch state was lost (status reason ``StateLost: …``).
    state_lost: bool = False

    @property
    def final(self) -> bool:
        return self.stage == Stage.FINAL

    @property
    def result(self) -> str:
        return self.status if self.status in RESULTS else UNKNOWN_RESULT

    @property
    def duration(self) -> float | None:
        if self.started is None or self.finished is None:
            return None
        return max(0.0, (self.finished - self.started).total_seconds())


def _size(value: Any) -> int | None:
    # bool is an int in Python; a size of True is not a size.
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def parse_operation(kind: Kind, obj: RawObject) -> Operation:
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    labels = meta.get("labels") or {}
    volumes = [v for v in status.get("volumes") or [] if isinstance(v, dict)]
    return Operation(
        kind=kind,
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        schedule=str(labels.get(SCHEDULE_LABEL) or ""),
        stage=str(status.get("stage") or ""),
        status=str(status.get("status") or ""),
        # triggerTimestamp is when the watcher accepted it; one it has not accepted yet counts from its
        # creation.
        started=timeutil.parse_time(status.get("triggerTimestamp"))
        or timeutil.parse_time(meta.get("creationTimestamp")),
        finished=timeutil.parse_time(status.get("finishTimestamp")),
        volumes_total=len(volumes),
        volumes_done=sum(1 for v in volumes if v.get("status") in VOLUME_DONE),
        total_size=_size(status.get("totalSize")),
        stored_size=_size(status.get("storedSize")),
        state_lost=status.get("status") == Status.FAILED and _state_lost(status.get("reason")),
    )


def _state_lost(reason: Any) -> bool:
    return isinstance(reason, str) and reason.startswith(STATE_LOST)


def slim(obj: RawObject) -> RawObject:
    """``obj`` with only what the metrics read: keeps the cache small, and credentials (a BackupLocation
    may hold keys inline) out of the exporter's memory."""
    meta = obj.get("metadata") or {}
    slimmed_meta = {k: meta[k] for k in _METADATA_FIELDS if k in meta}
    labels = meta.get("labels") or {}
    if SCHEDULE_LABEL in labels:
        slimmed_meta["labels"] = {SCHEDULE_LABEL: labels[SCHEDULE_LABEL]}
    result: RawObject = {"metadata": slimmed_meta}
    status = obj.get("status") or {}
    slimmed_status = {k: status[k] for k in _STATUS_FIELDS if k in status}
    if "phase" in status:
        slimmed_status["phase"] = status["phase"]
    if _state_lost(status.get("reason")):  # the one reason a metric reads, kept without its details
        slimmed_status["reason"] = STATE_LOST
    if isinstance(status.get("volumes"), list):
        slimmed_status["volumes"] = [
            {"status": v.get("status")} for v in status["volumes"] if isinstance(v, dict)
        ]
    if slimmed_status:
        result["status"] = slimmed_status
    location = obj.get("location")
    if isinstance(location, dict) and "type" in location:
        result["location"] = {"type": location["type"]}
    return result


# --- families ----------------------------------------------------------------------------------------


def families(snapshot: Snapshot, now: datetime.datetime) -> list[Metric]:
    """Every metric derived from the custom resources in ``snapshot`` at ``now``."""
    operations = [parse_operation(kind, obj) for kind, objs in snapshot.operations.items() for obj in objs]
    return [*operation_families(operations, now), location_family(snapshot.locations)]


def operation_families(operations: Iterable[Operation], now: datetime.datetime) -> list[Metric]:
    in_flight: list[Operation] = []
    final: list[Operation] = []
    for op in operations:
        (final if op.final else in_flight).append(op)
    return [
        *in_flight_families(in_flight, now),
        completed_family(final),
        state_lost_family(final),
        duration_family(final),
        last_success_family(final),
        *bytes_families(final),
    ]


def in_flight_families(operations: Sequence[Operation], now: datetime.datetime) -> list[Metric]:
    counts: Counter[tuple[str, str, str]] = Counter(
        {(kind.value, stage.value, status.value): 0
         for kind in OPERATION_KINDS for stage in IN_FLIGHT_STAGES for status in IN_FLIGHT_STATUSES}
    )  # fmt: skip
    counts.update((op.kind.value, op.stage, op.status) for op in operations)
    count = GaugeMetricFamily(
        "davit_operations_in_flight",
        "Operations not yet Final, by kind, stage and status. Stage and status are empty for an "
        "operation the watcher has not accepted yet.",
        labels=["kind", "stage", "status"],
    )
    for labels, value in sorted(counts.items()):
        count.add_metric(list(labels), value)

    elapsed = GaugeMetricFamily(
        "davit_operation_elapsed_seconds",
        "Seconds since each in-flight operation was accepted (triggerTimestamp), or created if it has "
        "not been accepted yet.",
        labels=["kind", "namespace", "name", "stage"],
    )
    done = GaugeMetricFamily(
        "davit_operation_volumes_done",
        "Volumes of each in-flight operation that need no more work (Successful, PartialSuccess or "
        "Failed); 0 while it lists none.",
        labels=["kind", "namespace", "name"],
    )
    total = GaugeMetricFamily(
        "davit_operation_volumes_total",
        "Volumes in scope of each in-flight operation (status.volumes); 0 while it lists none.",
        labels=["kind", "namespace", "name"],
    )
    for op in sorted(operations, key=lambda o: (o.kind, o.namespace, o.name)):
        seconds = max(0.0, (now - op.started).total_seconds()) if op.started else 0.0
        elapsed.add_metric([op.kind.value, op.namespace, op.name, op.stage], seconds)
        done.add_metric([op.kind.value, op.namespace, op.name], op.volumes_done)
        total.add_metric([op.kind.value, op.namespace, op.name], op.volumes_total)
    return [count, elapsed, done, total]


def completed_family(final: Sequence[Operation]) -> Metric:
    counts = Counter((op.kind.value, op.namespace, op.schedule, op.result) for op in final)
    family = CounterMetricFamily(
        "davit_operations_completed",
        "Final operations whose custom resource exists, by kind, namespace, schedule (the "
        f"{SCHEDULE_LABEL} label, empty for manual ones) and result. Derived from the objects present: "
        "deleting one lowers it.",
        labels=["kind", "namespace", "schedule", "result"],
    )
    for labels, value in sorted(counts.items()):
        family.add_metric(list(labels), value)
    return family


def state_lost_family(final: Sequence[Operation]) -> Metric:
    counts: Counter[str] = Counter({kind.value: 0 for kind in OPERATION_KINDS})
    counts.update(op.kind.value for op in final if op.state_lost)
    family = CounterMetricFamily(
        "davit_operations_state_lost",
        f"Final operations whose custom resource exists that failed with the reason {STATE_LOST} (their "
        "scratch state in Redis was lost and could not be rebuilt), by kind. Every kind is present.",
        labels=["kind"],
    )
    for kind, value in sorted(counts.items()):
        family.add_metric([kind], value)
    return family


def histogram_buckets(values: Sequence[float]) -> list[tuple[str, float]]:
    """Cumulative (le, count) pairs over ``DURATION_BUCKETS``, ending with +Inf."""
    buckets: list[tuple[str, float]] = [
        (_le(bound), float(sum(1 for v in values if v <= bound))) for bound in DURATION_BUCKETS
    ]
    buckets.append(("+Inf", float(len(values))))
    return buckets


def _le(bound: float) -> str:
    return str(int(bound)) if bound.is_integer() else str(bound)


def duration_family(final: Sequence[Operation]) -> Metric:
    durations: dict[tuple[str, str], list[float]] = {
        (kind.value, result.value): [] for kind in OPERATION_KINDS for result in RESULTS
    }
    for op in final:
        seconds = op.duration
        if seconds is not None:
            durations.setdefault((op.kind.value, op.result), []).append(seconds)
    family = HistogramMetricFamily(
        "davit_operation_duration_seconds",
        "Seconds from acceptance (triggerTimestamp) to finishTimestamp of the Final operations whose "
        "custom resource exists, by kind and result.",
        labels=["kind", "result"],
    )
    for labels, values in sorted(durations.items()):
        family.add_metric(list(labels), histogram_buckets(values), math.fsum(values))
    return family


def last_success_family(final: Sequence[Operation]) -> Metric:
    latest: dict[tuple[str, str], float] = {}
    for op in final:
        if op.kind is Kind.APPLICATION_BACKUP and op.status == Status.SUCCESSFUL and op.finished:
            key = (op.namespace, op.schedule)
            latest[key] = max(latest.get(key, 0.0), op.finished.timestamp())
    family = GaugeMetricFamily(
        "davit_last_successful_backup_timestamp_seconds",
        "finishTimestamp (Unix seconds) of the newest Successful ApplicationBackup, by namespace and "
        "schedule (empty for manual backups). PartialSuccess does not count.",
        labels=["namespace", "schedule"],
    )
    for labels, value in sorted(latest.items()):
        family.add_metric(list(labels), value)
    return family


def bytes_families(final: Sequence[Operation]) -> list[Metric]:
    read: defaultdict[str, int] = defaultdict(int)
    stored: defaultdict[str, int] = defaultdict(int)
    both_read: defaultdict[str, int] = defaultdict(int)
    both_stored: defaultdict[str, int] = defaultdict(int)
    for op in final:
        if op.kind is not Kind.APPLICATION_BACKUP:
            continue
        read[op.namespace] += op.total_size or 0
        stored[op.namespace] += op.stored_size or 0
        if op.total_size is not None and op.stored_size is not None:
            both_read[op.namespace] += op.total_size
            both_stored[op.namespace] += op.stored_size
    read_family = CounterMetricFamily(
        "davit_backup_bytes_read",
        "Bytes read (status.totalSize) by the Final ApplicationBackups whose custom resource exists, "
        "by namespace.",
        labels=["namespace"],
    )
    stored_family = CounterMetricFamily(
        "davit_backup_bytes_stored",
        "Bytes newly written to the location after deduplication and compression (status.storedSize) "
        "by the Final ApplicationBackups whose custom resource exists, by namespace.",
        labels=["namespace"],
    )
    ratio_family = GaugeMetricFamily(
        "davit_backup_dedup_ratio",
        "Bytes read per byte stored over the Final ApplicationBackups of a namespace that report both "
        "sizes; absent while nothing was stored.",
        labels=["namespace"],
    )
    for namespace in sorted(read):
        read_family.add_metric([namespace], read[namespace])
        stored_family.add_metric([namespace], stored[namespace])
        if both_stored[namespace] > 0:
            ratio_family.add_metric([namespace], both_read[namespace] / both_stored[namespace])
    return [read_family, stored_family, ratio_family]


def location_family(locations: Iterable[RawObject]) -> Metric:
    family = GaugeMetricFamily(
        "davit_location_available",
        "1 if the BackupLocation's status.phase is Available, 0 if Unavailable; absent until it has been "
        "validated.",
        labels=["namespace", "name", "type"],
    )
    rows = []
    for obj in locations:
        phase = (obj.get("status") or {}).get("phase")
        if phase not in ("Available", "Unavailable"):
            continue
        meta = obj.get("metadata") or {}
        location_type = (obj.get("location") or {}).get("type") or ""
        labels = [str(meta.get("namespace") or ""), str(meta.get("name") or ""), str(location_type)]
        rows.append((labels, 1.0 if phase == "Available" else 0.0))
    for labels, value in sorted(rows):
        family.add_metric(labels, value)
    return family


def queue_of(key: str) -> str:
    """The queue a Redis key holds messages of (a priority sub-list counts with its queue)."""
    return key.split(KOMBU_PRIORITY_SEP, 1)[0]


def queue_family(lengths: Mapping[str, int]) -> Metric:
    family = GaugeMetricFamily(
        "davit_queue_length",
        "Messages waiting in each Davit queue (Redis LLEN, read at scrape time; delivered but "
        "unacknowledged ones are not counted). An empty node queue does not exist in Redis, so it has no "
        "sample.",
        labels=["queue"],
    )
    for queue, length in sorted(lengths.items()):
        family.add_metric([queue], length)
    return family


def deletions_family(counts: Mapping[tuple[str, str], int]) -> Metric:
    family = CounterMetricFamily(
        "davit_retention_deletions",
        "Backups the retention service deleted, by namespace and reason (retain, failed-superseded, "
        "expire-after, ttl); kept in Redis, so it survives exporter restarts but not a Redis flush.",
        labels=["namespace", "reason"],
    )
    for (namespace, reason), value in sorted(counts.items()):
        family.add_metric([namespace, reason], value)
    return family
