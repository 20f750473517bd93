"""Metrics recorded once as things happen (``davit.metrics``), kept in Redis and served by the exporter:
counters that never fall when a backup is deleted, per-stage durations, task and node-agent metrics,
and a hash that a tampered Redis cannot turn into an invalid scrape."""

from __future__ import annotations

import datetime
import shutil
import subprocess
import time
from collections.abc import Iterable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from davit import metrics, timeutil
from davit.api.types import Stage, Status
from davit.constants import SCHEDULE_LABEL, Kind
from davit.operations import recording, stages
from davit.operations.scratch import RecordedMetrics
from davit.retention.location_sync import IMPORTED_FROM_ANNOTATION
from davit_services.exporter import model
from davit_services.exporter.service import WATCHED_KINDS, Cache, DavitCollector, OutcomeCatchUp
from tests.fakes.scratch import fake_redis

BACKUP, RESTORE = Kind.APPLICATION_BACKUP, Kind.APPLICATION_RESTORE


def stamp(seconds_ago: float) -> str:
    return timeutil.format_time(timeutil.utcnow() - datetime.timedelta(seconds=seconds_ago))


def final_backup(
    name: str, status: str = "Successful", *, took: float = 60, total: int = 1000, stored: int = 100,
    schedule: str | None = None, history: list[dict[str, str]] | None = None,
) -> dict[str, Any]:  # fmt: skip
    meta: dict[str, Any] = {"name": name, "namespace": "shop", "uid": f"uid-{name}",
                            "creationTimestamp": stamp(took + 5)}  # fmt: skip
    if schedule:
        meta["labels"] = {SCHEDULE_LABEL: schedule}
    status_: dict[str, Any] = {
        "stage": "Final", "status": status, "triggerTimestamp": stamp(took), "finishTimestamp": stamp(0),
        "totalSize": total, "storedSize": stored,
    }  # fmt: skip
    if history is not None:
        status_[stages.HISTORY_FIELD] = history
    return {"metadata": meta, "status": status_}


class Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def served(recorded: RecordedMetrics) -> dict[str, float]:
    """Every recorded sample as the exporter serves it: 'name{labels}' → value."""
    found: dict[str, float] = {}
    for family in model.recorded_families(metrics.decode(recorded.read())):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            found[f"{sample.name}{{{labels}}}"] = sample.value
    return found


COMPLETED = (
    "davit_operations_completed_total{kind=ApplicationBackup,namespace=shop,result=Successful,schedule=}"
)


# --- counters never fall ---------------------------------------------------------------------------


def test_deleting_a_completed_backup_lowers_no_counter() -> None:
    """Three backups end, one is deleted: the exporter's counters stay as they were (they used to be
    recomputed from the objects present and fell from 3 to 2), while the gauge of objects present falls."""
    recorded = RecordedMetrics(fake_redis())
    backups = [final_backup(f"b{i}") for i in range(3)]
    for backup in backups:
        assert recording.record_outcome(recorded, BACKUP, backup)
    cache = Cache()
    for kind in WATCHED_KINDS:
        cache.replace(kind, backups if kind is BACKUP else [])
    collector = DavitCollector(cache, recorded.redis)

    def scrape() -> dict[str, float]:
        registry = CollectorRegistry()
        registry.register(collector)
        found: dict[str, float] = {}
        for family in registry.collect():
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                found[f"{sample.name}{{{labels}}}"] = sample.value
        return found

    before = scrape()
    cache.apply(BACKUP, "DELETED", backups[0])
    after = scrape()
    assert before[COMPLETED] == after[COMPLETED] == 3
    present = "davit_operations_present{kind=ApplicationBackup,namespace=shop,result=Successful,schedule=}"
    assert (before[present], after[present]) == (3, 2)
    fell = [
        name for name, value in before.items()
        if (name.endswith("_total") or "_bucket" in name or name.endswith("_count") or name.endswith("_sum"))
        and after.get(name, 0) < value
    ]  # fmt: skip
    assert fell == []


def test_an_operation_is_counted_once_whoever_records_it_and_however_often() -> None:
    recorded = RecordedMetrics(fake_redis())
    backup = final_backup("b")
    assert recording.record_outcome(recorded, BACKUP, backup)
    assert not recording.record_outcome(recorded, BACKUP, backup)  # a retried writer
    catch_up = OutcomeCatchUp(recorded)
    catch_up.offer(BACKUP, backup)  # the exporter sees it at Final too
    assert catch_up.flush() == 0
    assert served(recorded)[COMPLETED] == 1


def test_the_exporter_counts_what_no_writer_counted_and_only_once() -> None:
    recorded = RecordedMetrics(fake_redis())
    catch_up = OutcomeCatchUp(recorded)
    missed = final_backup("missed")
    catch_up.offer(BACKUP, missed)
    catch_up.offer(BACKUP, missed)
    assert catch_up.flush() == 1
    catch_up.offer(BACKUP, missed)  # seen again at the next relist
    assert catch_up.flush() == 0
    assert served(recorded)[COMPLETED] == 1
    # A second exporter (or a restarted one) finds it counted.
    assert OutcomeCatchUp(recorded).flush() == 0
    other = OutcomeCatchUp(recorded)
    other.offer(BACKUP, missed)
    assert other.flush() == 0


def test_the_exporter_leaves_old_imported_and_unfinished_operations_alone() -> None:
    recorded = RecordedMetrics(fake_redis())
    catch_up = OutcomeCatchUp(recorded)
    old = final_backup("old")
    old["status"]["finishTimestamp"] = stamp(RecordedMetrics.CATCH_UP_SECONDS + 60)
    imported = final_backup("imported")
    imported["metadata"]["annotations"] = {IMPORTED_FROM_ANNOTATION: "loc"}
    running = final_backup("running")
    running["status"]["stage"] = "Volumes"
    for obj in (old, imported, running):
        catch_up.offer(BACKUP, obj)
    assert catch_up.flush() == 0
    assert recorded.read() == {}


def test_outcome_increments_of_a_backup() -> None:
    history = [
        {"stage": "Initial", "startTimestamp": stamp(70), "finishTimestamp": stamp(68)},
        {"stage": "Volumes", "startTimestamp": stamp(68), "finishTimestamp": stamp(8)},
        {"stage": "Applications", "startTimestamp": stamp(8), "finishTimestamp": stamp(0)},
    ]
    recorded = RecordedMetrics(fake_redis())
    recording.record_outcome(recorded, BACKUP, final_backup("b", schedule="nightly", history=history))
    found = served(recorded)
    assert found[COMPLETED.replace("schedule=", "schedule=nightly")] == 1
    assert found["davit_backup_bytes_read_total{namespace=shop}"] == 1000
    assert found["davit_backup_bytes_stored_total{namespace=shop}"] == 100
    assert found["davit_backup_dedup_ratio{namespace=shop}"] == 10.0
    assert found["davit_operation_duration_seconds_count{kind=ApplicationBackup,result=Successful}"] == 1
    assert found["davit_stage_duration_seconds_count{kind=ApplicationBackup,stage=Volumes}"] == 1
    assert found["davit_stage_duration_seconds_sum{kind=ApplicationBackup,stage=Volumes}"] == pytest.approx(
        60, abs=1
    )
    assert found["davit_stage_duration_seconds_bucket{kind=ApplicationBackup,le=5,stage=Initial}"] == 1
    assert found["davit_stage_duration_seconds_bucket{kind=ApplicationBackup,le=30,stage=Volumes}"] == 0
    last = found["davit_last_successful_backup_timestamp_seconds{namespace=shop,schedule=nightly}"]
    assert last == pytest.approx(time.time(), abs=5)


def test_the_last_success_time_never_goes_back() -> None:
    recorded = RecordedMetrics(fake_redis())
    newer, older = final_backup("newer"), final_backup("older")
    older["status"]["finishTimestamp"] = stamp(3600)
    recording.record_outcome(recorded, BACKUP, newer)
    recording.record_outcome(recorded, BACKUP, older)  # counted later, finished earlier
    partial = final_backup("partial", "PartialSuccess")
    recording.record_outcome(recorded, BACKUP, partial)
    last = served(recorded)["davit_last_successful_backup_timestamp_seconds{namespace=shop,schedule=}"]
    assert last == pytest.approx(timeutil.parse_time(newer["status"]["finishTimestamp"]).timestamp())  # type: ignore[union-attr]


def test_a_state_lost_failure_is_counted_apart() -> None:
    recorded = RecordedMetrics(fake_redis())
    lost = final_backup("lost", "Failed")
    lost["status"]["reason"] = "StateLost: the operation's scratch state was lost in stage Volumes (x)"
    recording.record_outcome(recorded, RESTORE, lost)
    found = served(recorded)
    assert found["davit_operations_state_lost_total{kind=ApplicationRestore}"] == 1
    assert found["davit_operations_state_lost_total{kind=ApplicationBackup}"] == 0
    assert not any(name.startswith("davit_backup_bytes") for name in found), "a restore reads no backup bytes"


# --- stage history ---------------------------------------------------------------------------------


def test_stage_history_closes_the_stage_left_and_opens_the_next() -> None:
    status: dict[str, Any] = {}
    fields = stages.stage_fields(Stage.INITIAL, Status.PENDING, "", None, status, "t0")
    assert fields[stages.HISTORY_FIELD] == [{"stage": "Initial", "startTimestamp": "t0"}]
    status.update(fields)
    assert "stageHistory" not in stages.stage_fields(Stage.INITIAL, Status.PENDING, "", None, status, "t1")
    status.update(stages.stage_fields(Stage.VOLUMES, Status.IN_PROGRESS, "", None, status, "t2"))
    status.update(stages.stage_fields(Stage.FINAL, Status.SUCCESSFUL, "", "t3", status, "t3"))
    assert status[stages.HISTORY_FIELD] == [
        {"stage": "Initial", "startTimestamp": "t0", "finishTimestamp": "t2"},
        {"stage": "Volumes", "startTimestamp": "t2", "finishTimestamp": "t3"},
    ]
    # The stage writers that pass no status (an import) write no history.
    assert stages.HISTORY_FIELD not in stages.stage_fields(Stage.FINAL, Status.SUCCESSFUL, "", "t3")


@pytest.mark.parametrize("garbage", ["text", [1, "x", {"stage": 5}], {"stage": "Initial"}])
def test_stage_history_that_is_not_a_list_of_entries_is_replaced(garbage: Any) -> None:
    history = stages.stage_history({"stage": "Initial", stages.HISTORY_FIELD: garbage}, Stage.VOLUMES, "t")
    assert history == [{"stage": "Volumes", "startTimestamp": "t"}]


# --- tasks and node agents -------------------------------------------------------------------------


def test_task_metrics_per_queue() -> None:
    recorded = RecordedMetrics(fake_redis())
    for queue, seconds, failed, retried in [
        ("davit.export", 0.2, False, False),
        ("davit.export", 12.0, True, False),
        ("davit.node.worker-1", 30.0, False, True),
        ("davit.node.worker-2", 700.0, False, False),
    ]:
        recording.try_add(recorded, metrics.task_increments(queue, seconds, failed, retried))
    recording.try_add(recorded, metrics.node_bytes_increments("worker-1", "read", 4096))
    recording.try_add(recorded, metrics.node_bytes_increments("worker-1", "read", 0))
    found = served(recorded)
    assert found["davit_task_duration_seconds_count{queue=davit.export}"] == 2
    assert found["davit_task_duration_seconds_bucket{le=0.25,queue=davit.export}"] == 1
    assert found["davit_task_failures_total{queue=davit.export}"] == 1
    assert found["davit_task_retries_total{queue=davit.node.worker-1}"] == 1
    assert found["davit_task_duration_seconds_count{queue=davit.node.worker-2}"] == 1
    assert found["davit_node_agent_bytes_total{direction=read,node=worker-1}"] == 4096


# --- a tampered Redis ------------------------------------------------------------------------------


def test_fields_that_are_not_recorded_metrics_are_dropped() -> None:
    redis = fake_redis()
    recorded = RecordedMetrics(redis)
    recording.record_outcome(recorded, BACKUP, final_backup("b"))
    good = served(recorded)
    redis.hset(RecordedMetrics.KEY, mapping={
        "not json": 1,
        '["davit_unknown",[],""]': 5,
        '["davit_operations_completed",["one label"],""]': 5,
        '["davit_operations_completed",["a","b","c","d"],"sum"]': 5,
        '["davit_task_failures",["q"],""]': "NaN",
        '["davit_task_retries",["q"],""]': -3,
        '["davit_task_duration_seconds",["q"],"5"]': "lots",
    })  # fmt: skip
    assert served(recorded) == good


def test_a_tampered_histogram_still_serves_non_decreasing_buckets() -> None:
    redis = fake_redis()
    name = metrics.TASK_DURATION.name
    redis.hset(RecordedMetrics.KEY, mapping={
        metrics.field_name(name, ["q"], "0.05"): 9, metrics.field_name(name, ["q"], "1"): 2,
        metrics.field_name(name, ["q"], "count"): 1,
    })  # fmt: skip
    registry = CollectorRegistry()
    registry.register(Families(model.recorded_families(metrics.decode(RecordedMetrics(redis).read()))))
    text = generate_latest(registry).decode()
    buckets = [
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
        if line.startswith("davit_task_duration_seconds_bucket")
    ]  # fmt: skip
    assert buckets == sorted(buckets) and buckets[-1] == 9


# --- schedules and build info ----------------------------------------------------------------------


def test_schedule_series() -> None:
    schedule = {
        "metadata": {"name": "nightly", "namespace": "shop", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"suspend": False, "schedulePolicyName": "p"},
        "status": {
            "nextTrigger": {"daily": "2026-01-03T02:00:00Z", "weekly": "2026-01-05T02:00:00Z"},
            "lastTriggered": {"daily": "2026-01-02T02:00:00Z", "weekly": "2025-12-29T02:00:00Z"},
        },
    }
    suspended = {"metadata": {"name": "paused", "namespace": "shop"}, "spec": {"suspend": True},
                 "status": {"lastSuccessTime": "2026-01-01T05:00:00Z"}}  # fmt: skip
    found: dict[str, float] = {}
    for family in model.schedule_families([model.slim(schedule), model.slim(suspended)]):
        for sample in family.samples:
            found[f"{sample.name}{sorted(sample.labels.values())}"] = sample.value

    def at(text: str) -> float:
        moment = timeutil.parse_time(text)
        assert moment is not None
        return moment.timestamp()

    assert found == {
        "davit_schedule_info['false', 'nightly', 'shop']": 1,
        "davit_schedule_info['paused', 'shop', 'true']": 1,
        "davit_schedule_created_timestamp_seconds['nightly', 'shop']": at("2026-01-01T00:00:00Z"),
        "davit_schedule_last_trigger_timestamp_seconds['nightly', 'shop']": at("2026-01-02T02:00:00Z"),
        "davit_schedule_next_trigger_timestamp_seconds['nightly', 'shop']": at("2026-01-03T02:00:00Z"),
        "davit_schedule_last_success_timestamp_seconds['paused', 'shop']": at("2026-01-01T05:00:00Z"),
    }


def test_a_full_scrape_passes_promtool_check_metrics() -> None:
    """Every family the exporter serves, with something in each, is what promtool's linter accepts
    (counter names, units, help texts)."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: make deps installs Debian's prometheus package"
    recorded = RecordedMetrics(fake_redis())
    history = [{"stage": "Volumes", "startTimestamp": stamp(9), "finishTimestamp": stamp(1)}]
    recording.record_outcome(recorded, BACKUP, final_backup("b", history=history))
    recording.try_add(recorded, metrics.task_increments("davit.export", 1.0, True, True))
    recording.try_add(recorded, metrics.node_bytes_increments("n", "written", 10))
    cache = Cache()
    running = final_backup("running")
    running["status"].update({"stage": "Volumes", "status": "InProgress", "volumes": [{"status": None}]})
    for kind in WATCHED_KINDS:
        cache.replace(kind, [running] if kind is BACKUP else [])
    collector = DavitCollector(cache, recorded.redis)
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry)
    assert b"davit_build_info" in text and b"davit_stage_duration_seconds_bucket" in text
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, check=False)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert result.stdout.strip() == b"", result.stdout.decode()
