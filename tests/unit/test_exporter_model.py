"""The exporter's pure model: raw custom resources, the metrics recorded in Redis (``davit.metrics``)
and a fixed ``now`` in, metric families out."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from davit import metrics as recorded_metrics
from davit import timeutil
from davit.constants import OPERATION_KINDS, SCHEDULE_LABEL, Kind
from davit.operations import recording
from davit.operations.scratch import RecordedMetrics
from davit_services.exporter import model
from davit_services.exporter.service import Cache
from tests.fakes.scratch import fake_redis

NOW = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)
BACKUP, RESTORE, CLONE = Kind.APPLICATION_BACKUP, Kind.APPLICATION_RESTORE, Kind.APPLICATION_CLONE
Labels = tuple[tuple[str, str], ...]


def ago(seconds: float) -> str:
    return timeutil.format_time(NOW - datetime.timedelta(seconds=seconds))


def op(
    name: str,
    namespace: str = "ns",
    stage: str | None = None,
    status: str | None = None,
    *,
    trigger: float | None = None,
    created: float | None = 3600,
    finish: float | None = None,
    volumes: list[str | None] | None = None,
    schedule: str | None = None,
    total: int | None = None,
    stored: int | None = None,
) -> dict[str, Any]:
    """A raw operation; times are seconds before NOW."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "uid": f"uid-{namespace}-{name}"}
    if created is not None:
        meta["creationTimestamp"] = ago(created)
    if schedule is not None:
        meta["labels"] = {SCHEDULE_LABEL: schedule, "app": "x"}
    status_: dict[str, Any] = {}
    for key, value in (
        ("stage", stage),
        ("status", status),
        ("triggerTimestamp", None if trigger is None else ago(trigger)),
        ("finishTimestamp", None if finish is None else ago(finish)),
        ("totalSize", total),
        ("storedSize", stored),
    ):
        if value is not None:
            status_[key] = value
    if volumes is not None:
        status_["volumes"] = [
            {"persistentVolumeClaim": f"pvc-{i}", "status": s} for i, s in enumerate(volumes)
        ]
    obj: dict[str, Any] = {"apiVersion": "davit.dev/v1alpha1", "metadata": meta, "spec": {}}
    if status_:
        obj["status"] = status_
    return obj


def location(name: str, namespace: str = "ns", phase: str | None = None, type_: str = "s3") -> dict[str, Any]:
    obj: dict[str, Any] = {
        "metadata": {"name": name, "namespace": namespace, "uid": f"loc-{namespace}-{name}"},
        "location": {
            "type": type_,
            "path": "bucket",
            "s3Config": {"accessKeyID": "AKIA", "secretAccessKey": "very-secret"},
        },
    }
    if phase is not None:
        obj["status"] = {"phase": phase, "message": "checked"}
    return obj


def build(
    backups: Sequence[dict[str, Any]] = (),
    restores: Sequence[dict[str, Any]] = (),
    clones: Sequence[dict[str, Any]] = (),
    locations: Sequence[dict[str, Any]] = (),
    schedules: Sequence[dict[str, Any]] = (),
) -> list[Metric]:
    """The exporter's families for these objects, each Final operation among them recorded once as its
    writer records it."""
    operations = {BACKUP: list(backups), RESTORE: list(restores), CLONE: list(clones)}
    snapshot = model.Snapshot(operations=operations, locations=list(locations), schedules=list(schedules))
    recorded = RecordedMetrics(fake_redis())
    for kind, objects in operations.items():
        for obj in objects:
            recording.record_outcome(recorded, kind, obj)
    return [
        *model.families(snapshot, NOW),
        *model.recorded_families(recorded_metrics.decode(recorded.read())),
    ]


def samples(metrics: Iterable[Metric], sample_name: str) -> dict[Labels, float]:
    """{sorted label pairs: value} of every sample called ``sample_name``."""
    found: dict[Labels, float] = {}
    for family in metrics:
        for sample in family.samples:
            if sample.name == sample_name:
                key = tuple(sorted(sample.labels.items()))
                assert key not in found, f"duplicate series {sample_name}{key}"
                found[key] = sample.value
    return found


def labels(**pairs: str) -> Labels:
    return tuple(sorted(pairs.items()))


def nonzero(values: dict[Labels, float]) -> dict[Labels, float]:
    return {k: v for k, v in values.items() if v}


# --- in flight ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("objects", "expected"),
    [
        pytest.param({}, {}, id="nothing"),
        pytest.param(
            {"backups": [op("a", stage="Applications", status="InProgress", trigger=5)]},
            {("ApplicationBackup", "Applications", "InProgress"): 1},
            id="one-backup",
        ),
        pytest.param(
            {
                "backups": [
                    op("a", stage="Volumes", status="InProgress", trigger=5),
                    op("b", "other", stage="Volumes", status="InProgress", trigger=5),
                    op("c", stage="Initial", status="Pending", trigger=5),
                    op("done", stage="Final", status="Successful", trigger=50, finish=5),
                ],
                "restores": [op("r", stage="Applications", status="Pending", trigger=5)],
                "clones": [op("c", stage="PreExecRule", status="InProgress", trigger=5)],
            },
            {
                ("ApplicationBackup", "Volumes", "InProgress"): 2,
                ("ApplicationBackup", "Initial", "Pending"): 1,
                ("ApplicationRestore", "Applications", "Pending"): 1,
                ("ApplicationClone", "PreExecRule", "InProgress"): 1,
            },
            id="by-kind-stage-status-final-excluded",
        ),
        pytest.param(
            {"backups": [op("new"), op("new2")]},
            {("ApplicationBackup", "", ""): 2},
            id="not-accepted-yet",
        ),
        pytest.param(
            {"restores": [op("odd", stage="Volumes", status="Failed", trigger=5)]},
            {("ApplicationRestore", "Volumes", "Failed"): 1},
            id="unusual-combination-still-counted",
        ),
    ],
)
def test_in_flight_counts(
    objects: dict[str, list[dict[str, Any]]], expected: dict[tuple[str, ...], int]
) -> None:
    counts = samples(build(**objects), "davit_operations_in_flight")
    assert nonzero(counts) == {labels(kind=k, stage=s, status=st): v for (k, s, st), v in expected.items()}


def test_in_flight_reports_zero_for_every_usual_combination() -> None:
    counts = samples(build(), "davit_operations_in_flight")
    assert len(counts) == len(OPERATION_KINDS) * 5 * 2
    assert set(counts.values()) == {0}
    assert labels(kind="ApplicationClone", stage="PostExecRule", status="Pending") in counts
    assert not any(dict(k)["stage"] == "Final" for k in counts)


@pytest.mark.parametrize(
    ("obj", "stage", "seconds"),
    [
        pytest.param(
            op("a", stage="Volumes", status="InProgress", trigger=90), "Volumes", 90.0, id="trigger"
        ),
        pytest.param(op("a", created=30), "", 30.0, id="creation-when-not-accepted"),
        pytest.param(
            op("a", stage="Initial", status="Pending", trigger=-10), "Initial", 0.0, id="clock-skew-clamped"
        ),
        pytest.param(op("a", created=None), "", 0.0, id="no-time-at-all"),
    ],
)
def test_elapsed_of_in_flight_operation(obj: dict[str, Any], stage: str, seconds: float) -> None:
    elapsed = samples(build(backups=[obj]), "davit_operation_elapsed_seconds")
    assert elapsed == {labels(kind="ApplicationBackup", namespace="ns", name="a", stage=stage): seconds}


def test_elapsed_only_for_in_flight_operations() -> None:
    metrics = build(
        backups=[
            op("running", stage="Applications", status="InProgress", trigger=10),
            op("done", stage="Final", status="Failed", trigger=100, finish=10),
        ],
        restores=[op("restoring", "ns2", stage="Applications", status="InProgress", trigger=20)],
    )
    elapsed = samples(metrics, "davit_operation_elapsed_seconds")
    assert elapsed == {
        labels(kind="ApplicationBackup", namespace="ns", name="running", stage="Applications"): 10.0,
        labels(kind="ApplicationRestore", namespace="ns2", name="restoring", stage="Applications"): 20.0,
    }


@pytest.mark.parametrize(
    ("volumes", "done", "total"),
    [
        pytest.param(None, 0, 0, id="no-volumes-field"),
        pytest.param([], 0, 0, id="empty-list"),
        pytest.param(["Pending", "InProgress"], 0, 2, id="none-done"),
        pytest.param(
            ["Successful", "InProgress", "Failed", "PartialSuccess", "Pending", None], 3, 6, id="mixed"
        ),
        pytest.param(["Successful"] * 4, 4, 4, id="all-done"),
    ],
)
def test_volumes_done_and_total(volumes: list[str | None] | None, done: int, total: int) -> None:
    metrics = build(clones=[op("c", stage="Volumes", status="InProgress", trigger=1, volumes=volumes)])
    key = labels(kind="ApplicationClone", namespace="ns", name="c")
    assert samples(metrics, "davit_operation_volumes_done") == {key: done}
    assert samples(metrics, "davit_operation_volumes_in_scope") == {key: total}


# --- completed ---------------------------------------------------------------------------------------

COMPLETED = {
    "backups": [
        op("m1", stage="Final", status="Successful", trigger=100, finish=90),
        op("m2", stage="Final", status="Successful", trigger=100, finish=40),
        op("s1", stage="Final", status="Successful", trigger=7200, finish=3600, schedule="nightly"),
        op("s2", stage="Final", status="PartialSuccess", trigger=700, finish=1, schedule="nightly"),
        op("s3", stage="Final", status="Failed", trigger=20, finish=17, schedule="nightly"),
        op("x1", "other", stage="Final", status="Successful", trigger=50, finish=49, schedule="nightly"),
        op("broken", "other", stage="Final", trigger=50, finish=49),
        op("running", stage="Volumes", status="InProgress", trigger=10),
    ],
    "restores": [op("r1", stage="Final", status="Successful", trigger=30000, finish=0)],
}


def test_completed_counts_by_kind_namespace_schedule_result() -> None:
    completed = samples(build(**COMPLETED), "davit_operations_completed_total")

    def key(kind: str, namespace: str, schedule: str, result: str) -> Labels:
        return labels(kind=kind, namespace=namespace, schedule=schedule, result=result)

    assert completed == {
        key("ApplicationBackup", "ns", "", "Successful"): 2,
        key("ApplicationBackup", "ns", "nightly", "Successful"): 1,
        key("ApplicationBackup", "ns", "nightly", "PartialSuccess"): 1,
        key("ApplicationBackup", "ns", "nightly", "Failed"): 1,
        key("ApplicationBackup", "other", "nightly", "Successful"): 1,
        key("ApplicationBackup", "other", "", "Unknown"): 1,
        key("ApplicationRestore", "ns", "", "Successful"): 1,
    }


def test_duration_histogram_buckets() -> None:
    metrics = build(**COMPLETED)
    buckets = samples(metrics, "davit_operation_duration_seconds_bucket")
    counts = samples(metrics, "davit_operation_duration_seconds_count")
    sums = samples(metrics, "davit_operation_duration_seconds_sum")

    def bucket(kind: str, result: str, le: str) -> float:
        return buckets[(("kind", kind), ("le", le), ("result", result))]

    # Successful backups took 10, 60, 3600 and 1 seconds.
    successful = {
        le: bucket("ApplicationBackup", "Successful", le) for le in ("1", "5", "60", "3600", "+Inf")
    }
    assert successful == {"1": 1, "5": 1, "60": 3, "3600": 4, "+Inf": 4}
    assert counts[labels(kind="ApplicationBackup", result="Successful")] == 4
    assert sums[labels(kind="ApplicationBackup", result="Successful")] == 10 + 60 + 3600 + 1
    assert bucket("ApplicationBackup", "PartialSuccess", "600") == 0
    assert bucket("ApplicationBackup", "PartialSuccess", "1200") == 1
    assert bucket("ApplicationBackup", "Failed", "1") == 0
    assert bucket("ApplicationBackup", "Failed", "5") == 1
    # 30000 s is beyond the last bucket (6 h): only +Inf has it.
    assert bucket("ApplicationRestore", "Successful", "21600") == 0
    assert bucket("ApplicationRestore", "Successful", "+Inf") == 1
    assert counts[labels(kind="ApplicationBackup", result="Unknown")] == 1


def test_duration_histogram_bounds_and_empty_series() -> None:
    metrics = build()
    counts = samples(metrics, "davit_operation_duration_seconds_count")
    assert len(counts) == len(OPERATION_KINDS) * len(recorded_metrics.RESULTS)
    assert set(counts.values()) == {0}
    les = {dict(k)["le"] for k in samples(metrics, "davit_operation_duration_seconds_bucket")}
    assert les == {"1", "5", "15", "30", "60", "120", "300", "600", "1200", "1800", "3600", "7200",
                   "10800", "14400", "21600", "+Inf"}  # fmt: skip


def test_duration_counts_from_creation_when_never_accepted_and_skips_unfinished() -> None:
    metrics = build(
        backups=[
            op("invalid", stage="Final", status="Failed", created=3, finish=1),  # refused: no trigger
            op("no-finish", stage="Final", status="Failed", trigger=5),
        ]
    )
    key = labels(kind="ApplicationBackup", result="Failed")
    assert samples(metrics, "davit_operation_duration_seconds_count")[key] == 1
    assert samples(metrics, "davit_operation_duration_seconds_sum")[key] == 2
    # ...but both are completed.
    completed = samples(metrics, "davit_operations_completed_total")
    assert completed == {labels(kind="ApplicationBackup", namespace="ns", schedule="", result="Failed"): 2}


def test_last_successful_backup_per_namespace_and_schedule() -> None:
    last = samples(build(**COMPLETED), "davit_last_successful_backup_timestamp_seconds")
    assert last == {
        # m2 finished 40 s ago, after m1; s2 (PartialSuccess) and s3 (Failed) do not count.
        labels(namespace="ns", schedule=""): (NOW - datetime.timedelta(seconds=40)).timestamp(),
        labels(namespace="ns", schedule="nightly"): (NOW - datetime.timedelta(seconds=3600)).timestamp(),
        labels(namespace="other", schedule="nightly"): (NOW - datetime.timedelta(seconds=49)).timestamp(),
    }


def test_last_success_ignores_restores_and_running_backups() -> None:
    metrics = build(
        backups=[op("running", stage="Applications", status="InProgress", trigger=1)],
        restores=[op("r", stage="Final", status="Successful", trigger=10, finish=1)],
    )
    assert samples(metrics, "davit_last_successful_backup_timestamp_seconds") == {}


# --- bytes ---------------------------------------------------------------------------------------------


def test_bytes_and_dedup_ratio_per_namespace() -> None:
    def final(
        name: str, namespace: str, status: str, total: int | None = None, stored: int | None = None
    ) -> Any:
        return op(name, namespace, "Final", status, trigger=10, finish=1, total=total, stored=stored)

    metrics = build(
        backups=[
            final("a", "ns", "Successful", total=1000, stored=100),
            final("b", "ns", "PartialSuccess", total=3000, stored=100),
            final("no-stored", "ns", "Successful", total=500),
            op("running", stage="Volumes", status="InProgress", trigger=1, total=99999, stored=1),
            final("c", "empty", "Successful", total=0, stored=0),
            final("d", "nosizes", "Failed"),
        ],
        restores=[final("r", "ns", "Successful", total=1 << 30, stored=1)],
    )
    assert samples(metrics, "davit_backup_bytes_read_total") == {
        labels(namespace="ns"): 4500,
        labels(namespace="empty"): 0,
        labels(namespace="nosizes"): 0,
    }
    assert samples(metrics, "davit_backup_bytes_stored_total") == {
        labels(namespace="ns"): 200,
        labels(namespace="empty"): 0,
        labels(namespace="nosizes"): 0,
    }
    # Bytes read per byte stored over the counters; nothing stored means no ratio.
    assert samples(metrics, "davit_backup_dedup_ratio") == {labels(namespace="ns"): 22.5}


@pytest.mark.parametrize("bad", [-1, True, "100", 1.5, None])
def test_sizes_that_are_not_byte_counts_are_ignored(bad: Any) -> None:
    obj = op("a", stage="Final", status="Successful", trigger=2, finish=1, total=10, stored=5)
    obj["status"]["totalSize"] = bad
    metrics = build(backups=[obj])
    assert samples(metrics, "davit_backup_bytes_read_total") == {labels(namespace="ns"): 0}
    assert samples(metrics, "davit_backup_dedup_ratio") == {labels(namespace="ns"): 0.0}


# --- locations and queues ------------------------------------------------------------------------------


def test_location_availability() -> None:
    metrics = build(
        locations=[
            location("up", phase="Available"),
            location("down", "team", phase="Unavailable", type_="azure"),
            location("unchecked"),
            location("weird", phase="Validating"),
        ]
    )
    assert samples(metrics, "davit_location_available") == {
        labels(namespace="ns", name="up", type="s3"): 1,
        labels(namespace="team", name="down", type="azure"): 0,
    }


def test_queue_length_family() -> None:
    family = model.queue_family({"davit.export": 3, "davit.snapshot": 0, "davit.node.n1": 7})
    assert samples([family], "davit_queue_length") == {
        labels(queue="davit.export"): 3,
        labels(queue="davit.snapshot"): 0,
        labels(queue="davit.node.n1"): 7,
    }


@pytest.mark.parametrize(
    ("key", "queue"),
    [
        ("davit.export", "davit.export"),
        ("davit.node.dev-1", "davit.node.dev-1"),
        ("davit.node.dev-1\x06\x163", "davit.node.dev-1"),
    ],
)
def test_priority_sublists_count_with_their_queue(key: str, queue: str) -> None:
    assert model.queue_of(key) == queue


# --- label bounds, slimming, exposition ----------------------------------------------------------------

PER_OPERATION = {
    "davit_operation_elapsed_seconds",
    "davit_operation_volumes_done",
    "davit_operation_volumes_in_scope",
}


def test_only_in_flight_series_name_an_operation() -> None:
    metrics = build(**COMPLETED, locations=[location("l", phase="Available")])
    for family in metrics:
        for sample in family.samples:
            if family.name in PER_OPERATION:
                assert set(sample.labels) >= {"namespace", "name"}
                assert sample.labels["name"] == "running", "a completed operation has a per-name series"
            elif family.name != "davit_location_available":
                assert "name" not in sample.labels, sample
                assert "uid" not in sample.labels, sample


def test_completed_operations_add_no_series_per_backup() -> None:
    """A thousand more completed backups in the same namespace and schedule add no series."""
    few = build(
        backups=[op(f"b{i}", stage="Final", status="Successful", trigger=9, finish=1) for i in range(3)]
    )
    many = build(
        backups=[op(f"b{i}", stage="Final", status="Successful", trigger=9, finish=1) for i in range(1000)]
    )

    def series(metrics: list[Metric]) -> set[tuple[str, Labels]]:
        return {(s.name, tuple(sorted(s.labels.items()))) for f in metrics for s in f.samples}

    assert series(few) == series(many)


def test_every_family_is_named_davit_and_documented() -> None:
    for family in [*build(**COMPLETED, locations=[location("l", phase="Available")]), model.queue_family({})]:
        assert family.name.startswith("davit_"), family.name
        assert len(family.documentation) > 20, family.name


def test_slim_keeps_what_the_metrics_read_and_drops_credentials() -> None:
    backup = op(
        "a",
        stage="Volumes",
        status="InProgress",
        trigger=5,
        volumes=["Successful", None],
        schedule="s",
        total=1,
    )
    backup["status"]["conditions"] = [{"type": "Queued", "status": "True"}]
    backup["status"]["reason"] = "long text"
    slimmed = model.slim(backup)
    assert slimmed["metadata"]["labels"] == {SCHEDULE_LABEL: "s"}
    assert "conditions" not in slimmed["status"] and "spec" not in slimmed
    assert "reason" not in slimmed["status"]
    assert slimmed["status"]["volumes"] == [{"status": "Successful"}, {"status": None}]

    def from_objects(**objects: Any) -> list[Metric]:
        return model.families(model.Snapshot(**objects), NOW)

    assert from_objects(operations={BACKUP: [slimmed]}) == from_objects(operations={BACKUP: [backup]})

    loc = model.slim(location("l", phase="Unavailable"))
    assert "very-secret" not in repr(loc) and "AKIA" not in repr(loc)
    assert from_objects(locations=[loc]) == from_objects(locations=[location("l", phase="Unavailable")])


class _Families(Collector):
    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self.metrics


def test_families_render_as_valid_exposition_text() -> None:
    registry = CollectorRegistry()
    registry.register(_Families([*build(**COMPLETED), model.queue_family({"davit.export": 2})]))
    text = generate_latest(registry).decode()
    parsed = {f.name: f for f in text_string_to_metric_families(text)}
    assert parsed["davit_operations_completed"].type == "counter"
    assert parsed["davit_operation_duration_seconds"].type == "histogram"
    assert parsed["davit_backup_bytes_read"].type == "counter"
    assert parsed["davit_operations_in_flight"].type == "gauge"
    assert 'davit_queue_length{queue="davit.export"} 2.0' in text


# --- the cache the collector reads ---------------------------------------------------------------------


def test_cache_reports_nothing_until_every_kind_was_listed() -> None:
    cache = Cache()
    cache.replace(BACKUP, [op("a")])
    cache.replace(RESTORE, [])
    cache.replace(CLONE, [])
    cache.replace(Kind.APPLICATION_BACKUP_SCHEDULE, [])
    assert cache.snapshot() is None, "zeros before the first list would be wrong, not merely late"
    cache.replace(Kind.BACKUP_LOCATION, [location("l", phase="Available")])
    snapshot = cache.snapshot()
    assert snapshot is not None
    assert [o["metadata"]["name"] for o in snapshot.operations[BACKUP]] == ["a"]
    assert "very-secret" not in repr(snapshot.locations)


def test_cache_follows_events_and_a_relist_replaces_everything() -> None:
    cache = Cache()
    for kind in (BACKUP, RESTORE, CLONE, Kind.BACKUP_LOCATION, Kind.APPLICATION_BACKUP_SCHEDULE):
        cache.replace(kind, [])
    cache.apply(BACKUP, "ADDED", op("a"))
    cache.apply(BACKUP, "ADDED", op("b"))
    cache.apply(BACKUP, "MODIFIED", op("a", stage="Initial", status="Pending", trigger=1))
    cache.apply(BACKUP, "DELETED", op("b"))

    def names() -> list[str]:
        snapshot = cache.snapshot()
        assert snapshot is not None
        return sorted(o["metadata"]["name"] for o in snapshot.operations[BACKUP])

    assert names() == ["a"]
    snapshot = cache.snapshot()
    assert snapshot is not None and snapshot.operations[BACKUP][0]["status"]["stage"] == "Initial"
    cache.replace(BACKUP, [op("c")])  # "a" was deleted while the watch was down
    assert names() == ["c"]


def test_retention_deletions_by_namespace_and_reason() -> None:
    family = model.deletions_family(
        {("shop", "retain"): 3, ("shop", "ttl"): 1, ("db", "failed-superseded"): 2}
    )
    assert samples([family], "davit_retention_deletions_total") == {
        (("namespace", "db"), ("reason", "failed-superseded")): 2,
        (("namespace", "shop"), ("reason", "retain")): 3,
        (("namespace", "shop"), ("reason", "ttl")): 1,
    }


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        ("its ttl expired at 2026-11-21T10:00:00Z", "ttl"),
        ("retain 2 keeps only the 2 newest successful interval backups", "retain"),
        ("older than expireAfter 7d (finished 2026-11-01T00:00:00Z); minRetain 1 keeps ...", "expire-after"),
        ("failed, and the newer interval backup b3 succeeded", "failed-superseded"),
    ],
)
def test_each_retention_reason_has_a_bounded_metric_label(reason: str, code: str) -> None:
    from davit.retention import deletions
    from davit_services.retention.expiry import reason_code

    assert reason_code(reason) == code and code in deletions.REASONS


def test_operations_failed_because_their_state_was_lost_are_counted_by_kind() -> None:
    lost = op("lost", stage="Final", status="Failed", trigger=50, finish=5)
    lost["status"]["reason"] = "StateLost: the operation's scratch state was lost in stage Volumes (...)"
    other = op("other", stage="Final", status="Failed", trigger=50, finish=5)
    other["status"]["reason"] = "SpecChanged: the spec changed"
    rebuilt = op("rebuilt", stage="Final", status="Successful", trigger=50, finish=5)
    running = op("running", stage="Volumes", status="InProgress", trigger=5)
    running["status"]["reason"] = "StateLost: not Final yet"

    counted = samples(build(backups=[lost, other, rebuilt, running]), "davit_operations_state_lost_total")
    assert counted == {
        labels(kind="ApplicationBackup"): 1,
        labels(kind="ApplicationRestore"): 0,
        labels(kind="ApplicationClone"): 0,
    }
