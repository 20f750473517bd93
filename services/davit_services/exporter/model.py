"""What the exporter reports, as a function of the custom resources present, the metrics recorded in
Redis and the time (pure).

Everything here reads raw objects as the API server returns them (dicts, camelCase) and the recorded
metrics as ``davit.metrics`` decodes them, and builds prometheus_client metric families; nothing touches
the network or a global registry, so the tests need no cluster.

Two sources, on purpose. What exists now (operations in flight, locations, schedules, Final operations
present) is read from the custom resources: gauges, which may fall. What happened (operations completed,
their durations and bytes, tasks, node agents' bytes) is recorded once when it happens (``davit.metrics``)
and served from Redis: counters, which never fall when a backup is deleted.

Label sets are bounded: operations still in flight (few at any moment) carry their namespace and name;
completed ones are only counted and summed by kind, namespace, schedule and result.
"""

from __future__ import annotations

import datetime
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from davit import metrics, timeutil
from davit.api.objects import RawObject
from davit.api.types import Stage, Status
from davit.constants import OPERATION_KINDS, SCHEDULE_LABEL, Kind

#: Stages and statuses an operation passes through before Final; reported even when nothing is there, so
#: a graph falls to 0 instead of stopping.
IN_FLIGHT_STAGES: Final = tuple(stage for stage in Stage if stage is not Stage.FINAL)
IN_FLIGHT_STATUSES: Final = (Status.PENDING, Status.IN_PROGRESS)
#: A volume with one of these statuses needs no more work.
VOLUME_DONE: Final = frozenset(metrics.RESULTS)
#: kombu stores a message sent with a priority in ``<queue>\x06\x16<priority>``; counted with its queue.
KOMBU_PRIORITY_SEP: Final = "\x06\x16"

#: The fields ``slim`` keeps in the cache: what the metrics read, nothing else.
_STATUS_FIELDS: Final = (
    "stage", "status", "triggerTimestamp", "finishTimestamp", "phase",
    "lastSuccessTime", "nextTrigger", "lastTriggered",
)  # fmt: skip
_METADATA_FIELDS: Final = ("name", "namespace", "uid", "creationTimestamp")


@dataclass(frozen=True)
class Snapshot:
    """The objects the exporter has seen: operations by kind, and BackupLocations."""

    operations: Mapping[Kind, Sequence[RawObject]] = field(default_factory=dict)
    locations: Sequence[RawObject] = ()
    schedules: Sequence[RawObject] = ()


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

    @property
    def final(self) -> bool:
        return self.stage == Stage.FINAL

    @property
    def result(self) -> str:
        return metrics.result_of(self.status)


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
    )


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
    if isinstance(status.get("volumes"), list):
        slimmed_status["volumes"] = [
            {"status": v.get("status")} for v in status["volumes"] if isinstance(v, dict)
        ]
    if slimmed_status:
        result["status"] = slimmed_status
    spec = obj.get("spec") or {}
    if isinstance(spec, dict) and "suspend" in spec:  # a schedule's
        result["spec"] = {"suspend": spec["suspend"]}
    location = obj.get("location")
    if isinstance(location, dict) and "type" in location:
        result["location"] = {"type": location["type"]}
    return result


# --- families ----------------------------------------------------------------------------------------


def families(snapshot: Snapshot, now: datetime.datetime) -> list[Metric]:
    """Every metric derived from the custom resources in ``snapshot`` at ``now``."""
    operations = [parse_operation(kind, obj) for kind, objs in snapshot.operations.items() for obj in objs]
    return [
        *operation_families(operations, now),
        location_family(snapshot.locations),
        *schedule_families(snapshot.schedules),
    ]


def operation_families(operations: Iterable[Operation], now: datetime.datetime) -> list[Metric]:
    in_flight: list[Operation] = []
    final: list[Operation] = []
    for op in operations:
        (final if op.final else in_flight).append(op)
    return [*in_flight_families(in_flight, now), present_family(final)]


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
    in_scope = GaugeMetricFamily(
        "davit_operation_volumes_in_scope",
        "Volumes in scope of each in-flight operation (status.volumes); 0 while it lists none.",
        labels=["kind", "namespace", "name"],
    )
    for op in sorted(operations, key=lambda o: (o.kind, o.namespace, o.name)):
        seconds = max(0.0, (now - op.started).total_seconds()) if op.started else 0.0
        elapsed.add_metric([op.kind.value, op.namespace, op.name, op.stage], seconds)
        done.add_metric([op.kind.value, op.namespace, op.name], op.volumes_done)
        in_scope.add_metric([op.kind.value, op.namespace, op.name], op.volumes_total)
    return [count, elapsed, done, in_scope]


def present_family(final: Sequence[Operation]) -> Metric:
    counts = Counter((op.kind.value, op.namespace, op.schedule, op.result) for op in final)
    family = GaugeMetricFamily(
        "davit_operations_present",
        "Final operations whose custom resource exists now, by kind, namespace, schedule and result: "
        "it falls when retention or a user deletes one. What ended is counted by "
        "davit_operations_completed_total.",
        labels=["kind", "namespace", "schedule", "result"],
    )
    for labels, value in sorted(counts.items()):
        family.add_metric(list(labels), value)
    return family


def recorded_families(recorded: metrics.Recorded) -> list[Metric]:
    """The metrics recorded once as things happened (``davit.metrics``), read back from Redis."""
    found: list[Metric] = []
    for definition in metrics.DEFINITIONS.values():
        samples: dict[tuple[str, ...], Mapping[str, float]] = {
            labels: {} for labels in metrics.always_present(definition)
        }
        samples.update(recorded.get(definition))
        family: Metric
        if definition.type == "histogram":
            family = HistogramMetricFamily(definition.name, definition.help, labels=list(definition.labels))
            for labels, parts in sorted(samples.items()):
                buckets, total = metrics.histogram_samples(definition, parts)
                family.add_metric(list(labels), buckets, total)
        elif definition.type == "counter":
            family = CounterMetricFamily(definition.name, definition.help, labels=list(definition.labels))
            for labels, parts in sorted(samples.items()):
                family.add_metric(list(labels), parts.get("", 0.0))
        else:
            family = GaugeMetricFamily(definition.name, definition.help, labels=list(definition.labels))
            for labels, parts in sorted(samples.items()):
                family.add_metric(list(labels), parts.get("", 0.0))
        found.append(family)
    found.append(dedup_family(recorded))
    return found


def dedup_family(recorded: metrics.Recorded) -> Metric:
    family = GaugeMetricFamily(
        "davit_backup_dedup_ratio",
        "Bytes read per byte stored by the backups of a namespace since the counters began "
        "(davit_backup_bytes_read_total / davit_backup_bytes_stored_total); absent while nothing was "
        "stored.",
        labels=["namespace"],
    )
    stored = recorded.get(metrics.BYTES_STORED)
    for labels in sorted(stored):
        stored_bytes = stored[labels].get("", 0.0)
        if stored_bytes > 0:
            family.add_metric(list(labels), recorded.sum(metrics.BYTES_READ, labels) / stored_bytes)
    return family


def build_info_family(version: str, python_version: str) -> Metric:
    family = GaugeMetricFamily(
        "davit_build_info",
        "Always 1; the labels say which Davit (and Python) the exporter runs.",
        labels=["version", "python_version"],
    )
    family.add_metric([version, python_version], 1.0)
    return family


@dataclass(frozen=True)
class Schedule:
    namespace: str
    name: str
    suspended: bool
    created: datetime.datetime | None
    last_success: datetime.datetime | None
    next_trigger: datetime.datetime | None
    last_trigger: datetime.datetime | None


def _times(value: Any) -> list[datetime.datetime]:
    if not isinstance(value, Mapping):
        return []
    return [t for t in (timeutil.parse_time(v) for v in value.values() if isinstance(v, str)) if t]


def parse_schedule(obj: RawObject) -> Schedule:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    next_triggers = _times(status.get("nextTrigger"))
    last_triggers = _times(status.get("lastTriggered"))
    return Schedule(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        suspended=spec.get("suspend") is True,
        created=timeutil.parse_time(meta.get("creationTimestamp")),
        last_success=timeutil.parse_time(status.get("lastSuccessTime")),
        next_trigger=min(next_triggers) if next_triggers else None,
        last_trigger=max(last_triggers) if last_triggers else None,
    )


def schedule_families(objects: Iterable[RawObject]) -> list[Metric]:
    """Per ApplicationBackupSchedule: that it exists (and whether it is suspended), when it was
    created, last fired, fires next and last succeeded, so a schedule that never succeeded, or stopped
    succeeding, can be alerted on (``deploy/base/alerts``)."""
    labels = ["namespace", "schedule"]
    info = GaugeMetricFamily(
        "davit_schedule_info",
        "Always 1 per ApplicationBackupSchedule; suspended is true or false.",
        labels=[*labels, "suspended"],
    )
    created = GaugeMetricFamily(
        "davit_schedule_created_timestamp_seconds",
        "When each schedule was created (Unix seconds).",
        labels=labels,
    )
    last_trigger = GaugeMetricFamily(
        "davit_schedule_last_trigger_timestamp_seconds",
        "The newest slot each schedule fired a backup for (Unix seconds, status.lastTriggered); absent "
        "before its first.",
        labels=labels,
    )
    next_trigger = GaugeMetricFamily(
        "davit_schedule_next_trigger_timestamp_seconds",
        "When each schedule fires next (Unix seconds, the earliest of status.nextTrigger).",
        labels=labels,
    )
    last_success = GaugeMetricFamily(
        "davit_schedule_last_success_timestamp_seconds",
        "When each schedule's newest Successful backup finished (Unix seconds, status.lastSuccessTime); "
        "absent while none has.",
        labels=labels,
    )
    for schedule in sorted((parse_schedule(obj) for obj in objects), key=lambda s: (s.namespace, s.name)):
        key = [schedule.namespace, schedule.name]
        info.add_metric([*key, "true" if schedule.suspended else "false"], 1.0)
        for family, moment in (
            (created, schedule.created),
            (last_trigger, schedule.last_trigger),
            (next_trigger, schedule.next_trigger),
            (last_success, schedule.last_success),
        ):
            if moment is not None:
                family.add_metric(key, moment.timestamp())
    return [info, created, last_trigger, next_trigger, last_success]


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
