"""davit.operations.scratch over an in-memory Redis: what each typed class keeps and where, that every key
written has a TTL, and that an operation's keys go at Final (whatever its result) and only its own."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from davit.api.types import Stage, Status
from davit.constants import Kind, Queue, node_queue
from davit.operations import progress, queueing, scratch
from tests.fakes.cluster import FakeCluster
from tests.fakes.dispatch import FakeDispatch
from tests.fakes.scratch import ScratchFactory

WEEK = 7 * 24 * 3600


def fill_backup(state: scratch.BackupScratch) -> None:
    """Every write a backup's handlers make (snapshot service, node agent, resource writer)."""
    state.lay_out_export({"ns/pods": {"plural": "pods"}}, ["ns"], ["ns/pods#1"])
    state.add_pending(["ns/pods#1", "ns/secrets#1"], {"ns/pods#2": "token"})
    state.save_list_targets({"ns/pods": {"plural": "pods"}})
    state.save_namespaces(["ns"])
    state.record_part("ns/pods#1", {"part": "ns/pods#1", "rawSize": 1}, ['{"name": "pv"}'])
    state.record_page("ns/pods#2", {"part": "ns/pods#2", "count": 3}, ['{"name": "pv"}'], 0)
    state.save_volume_plans({"ns/data": {"part": "ns/data", "mode": "filesystem"}})
    state.hold_volumes()
    state.add_pending(["volume:ns/data"])
    group = state.shard_group("ns/data")
    state.start_group(group, json.dumps(["00", "80"]), ["0", "1"])
    state.record_shard_progress("ns/data", 0, 10)
    state.record_shard_outcome("ns/data", 0, {"tree": "t0", "bytesRead": 1, "storedSize": 1})
    state.record_volume_result("ns/data", {"status": "Successful", "tree": "t"})
    state.log("backup.started", backupLocation="loc")


def fill_restore(state: scratch.RestoreScratch) -> None:
    """Every write a restore's handlers make (restore service, node agents)."""
    item = {"object": {"kind": "ConfigMap", "metadata": {"name": "a"}}, "replacing": False}
    state.save_steps([[[item], [item]], [[item]]])
    state.add_pending(["step:0:0", "step:0:1"], group=state.step_group(0))
    state.set_current_step(0)
    state.record_chunk("step:0:0", {"ConfigMap|restored": 1}, ["it failed"])
    state.save_owners([{"kind": "Pod", "owners": []}])
    state.save_volume_targets({"ns/data": {"tree": "t"}})
    state.set_volume_target("ns/data", {"tree": "t", "plan": {"node": "n"}})
    state.add_pending(["volume:ns/data"], group=state.VOLUME_GROUP)
    state.log("restore.started", backupName="b")


def assert_every_key_expires(factory: ScratchFactory) -> None:
    ttls = factory.ttls()
    assert ttls, "nothing was written"
    assert {key: ttl for key, ttl in ttls.items() if not 0 < ttl <= WEEK} == {}


# --- TTLs ------------------------------------------------------------------------------------------


def test_every_key_a_backup_writes_has_a_ttl(scratch_factory: ScratchFactory) -> None:
    fill_backup(scratch_factory.backup("b1"))
    assert_every_key_expires(scratch_factory)
    assert scratch_factory.names("b1") == [
        "counters", "hold", "log", "namespaces", "needed", "parts", "pending", "planned",
        "shards:ns/data", "shards:ns/data:plan", "shards:ns/data:progress", "shards:ns/data:results",
        "targets", "tokens", "volume-results", "volumes",
    ]  # fmt: skip


def test_every_key_a_restore_writes_has_a_ttl(scratch_factory: ScratchFactory) -> None:
    fill_restore(scratch_factory.restore("r1"))
    assert_every_key_expires(scratch_factory)
    assert scratch_factory.names("r1") == [
        "log", "restore:counts", "restore:current", "restore:failures", "restore:objects:0:0",
        "restore:objects:0:1", "restore:objects:1:0", "restore:owners", "restore:steps", "restore:volumes",
        "step:0", "volumes",
    ]  # fmt: skip


def test_every_key_a_clone_writes_has_a_ttl(scratch_factory: ScratchFactory) -> None:
    scratch_factory.clone("c1").log("clone.started", sourceNamespace="ns")
    assert_every_key_expires(scratch_factory)
    assert scratch_factory.names("c1") == ["log"]


def test_the_retention_counters_have_a_ttl_renewed_by_each_deletion(scratch_factory: ScratchFactory) -> None:
    deletions = scratch_factory.deletions()
    deletions.record("ns", "ttl")
    scratch_factory.redis.expire(deletions.KEY, 60)
    deletions.record("ns", "ttl")
    deletions.record("other", "retain")
    assert_every_key_expires(scratch_factory)
    assert scratch_factory.ttls()[deletions.KEY] > 60
    assert deletions.counts() == {("ns", "ttl"): 2, ("other", "retain"): 1}
    assert deletions.KEY == "davit:metrics:retention-deletions"


def test_the_key_names_on_the_wire(scratch_factory: ScratchFactory) -> None:
    """Tests, tools and a rolling upgrade's older workers read these names: they do not change."""
    backup, restore = scratch_factory.backup("u"), scratch_factory.restore("u")
    assert backup.key(backup.VOLUME_PLANS) == "davit:op:u:volumes"
    assert backup.key(backup.LIST_TARGETS) == "davit:op:u:targets"
    assert backup.key(backup.NAMESPACES) == "davit:op:u:namespaces"
    assert restore.key(restore.VOLUME_TARGETS) == "davit:op:u:restore:volumes"
    assert restore.key(restore.LOG) == "davit:op:u:log"
    assert restore.chunk_name(2, 3) == "restore:objects:2:3"
    assert restore.step_group(4) == "step:4"
    assert backup.shard_group("ns/c") == "shards:ns/c"


# --- clearing --------------------------------------------------------------------------------------


def test_clear_removes_every_key_of_the_operation_and_nothing_else(scratch_factory: ScratchFactory) -> None:
    fill_backup(scratch_factory.backup("gone"))
    fill_backup(scratch_factory.backup("kept"))
    fill_restore(scratch_factory.restore("kept-restore"))
    scratch_factory.deletions().record("ns", "ttl")
    before = {k for k in scratch_factory.ttls() if ":gone:" not in k}

    scratch_factory.backup("gone").clear()

    assert scratch_factory.names("gone") == []
    assert set(scratch_factory.ttls()) == before


def test_clear_at_final_keeps_only_the_log(scratch_factory: ScratchFactory) -> None:
    fill_restore(scratch_factory.restore("ended"))
    fill_restore(scratch_factory.restore("running"))
    running = scratch_factory.names("running")

    state = scratch_factory.restore("ended")
    state.clear_at_final()

    assert scratch_factory.names("ended") == ["log"]
    assert [json.loads(line)["event"] for line in state.log_lines()] == ["restore.started"]
    assert scratch_factory.names("running") == running
    state.clear()  # once the log is in the location
    assert scratch_factory.names("ended") == []


def _ports(scratch: ScratchFactory | None) -> SimpleNamespace:
    """What ``progress`` needs: the API server, the dispatch and the scratch state (None: no Redis)."""
    return SimpleNamespace(cluster=FakeCluster(), dispatch=FakeDispatch(), scratch=scratch)


def _backup(uid: str, stage: Stage) -> dict[str, Any]:
    return {
        "apiVersion": "davit.dev/v1alpha1",
        "kind": "ApplicationBackup",
        "metadata": {"namespace": "ns", "name": "b", "uid": uid, "creationTimestamp": "2026-01-01T00:00:00Z"},
        "status": {"stage": stage.value, "status": Status.IN_PROGRESS.value},
    }


@pytest.mark.parametrize("status", [Status.FAILED, Status.PARTIAL_SUCCESS, Status.SUCCESSFUL])
def test_final_clears_the_scratch_state_whatever_the_result(
    scratch_factory: ScratchFactory, status: Status
) -> None:
    fill_backup(scratch_factory.backup("ending"))
    fill_backup(scratch_factory.backup("other"))
    other = scratch_factory.names("other")
    ports = _ports(scratch_factory)
    obj = ports.cluster.put(_backup("ending", Stage.VOLUMES))

    progress.set_stage(ports, Kind.APPLICATION_BACKUP, obj, Stage.FINAL, status, "")

    assert ports.cluster.status(obj)["stage"] == Stage.FINAL.value
    assert scratch_factory.names("ending") == ["log"]  # for `davit backup logs` of a failed backup
    assert scratch_factory.names("other") == other


def test_a_stage_before_final_keeps_the_scratch_state(scratch_factory: ScratchFactory) -> None:
    fill_backup(scratch_factory.backup("going"))
    names = scratch_factory.names("going")
    ports = _ports(scratch_factory)
    obj = ports.cluster.put(_backup("going", Stage.VOLUMES))
    progress.set_stage(ports, Kind.APPLICATION_BACKUP, obj, Stage.APPLICATIONS, Status.PENDING, "queued")
    assert scratch_factory.names("going") == names


def test_final_without_redis_is_fine() -> None:
    ports = _ports(None)
    obj = ports.cluster.put(_backup("x", Stage.VOLUMES))
    progress.set_stage(ports, Kind.APPLICATION_BACKUP, obj, Stage.FINAL, Status.FAILED, "no redis here")
    assert ports.cluster.status(obj)["status"] == Status.FAILED.value


# --- what the typed classes keep -------------------------------------------------------------------


def test_backup_volumes_and_shards(scratch_factory: ScratchFactory) -> None:
    state = scratch_factory.backup()
    assert state.volume_plan("ns/data") is None and not state.volumes_held()
    state.save_volume_plans({})
    assert scratch_factory.names(state.uid) == []
    state.save_volume_plans({"ns/data": {"part": "ns/data", "mode": "filesystem"}})
    assert state.volume_plan("ns/data") == {"part": "ns/data", "mode": "filesystem"}
    state.hold_volumes()
    assert state.volumes_held()

    group = state.shard_group("ns/data")
    assert state.start_group(group, "[]", ["0", "1", "2"])
    assert not state.start_group(group, "[]", ["0"])  # a retry finds the plan
    assert state.group_plan(group) == "[]"
    assert state.record_shard_progress("ns/data", 0, 10) == 10
    assert state.record_shard_progress("ns/data", 2, 5) == 15
    assert state.record_shard_progress("ns/data", 0, 20) == 25
    state.record_shard_outcome("ns/data", 2, {"tree": "b"})
    state.record_shard_outcome("ns/data", 10, {"tree": "c"})
    state.record_shard_outcome("ns/data", 0, {"tree": "a"})
    assert state.shard_outcomes("ns/data") == [(0, {"tree": "a"}), (2, {"tree": "b"}), (10, {"tree": "c"})]
    assert [state.finish(s, group=group) for s in ("0", "1", "1", "2")] == [False, False, False, True]

    state.record_volume_result("ns/data", {"status": "Successful"})
    assert state.volume_results() == {"ns/data": {"status": "Successful"}}


def test_backup_resource_lists(scratch_factory: ScratchFactory) -> None:
    state = scratch_factory.backup()
    assert not state.is_planned()
    assert state.lay_out_export({}, [], [])
    # Once: a second plan (a retry, a task that lost the race) writes nothing.
    assert not state.lay_out_export({"ns/v1/secrets": {"plural": "secrets"}}, ["x"], ["ns/v1/secrets#1"])
    assert state.is_planned() and state.list_target("ns/v1/secrets") is None and state.pending() == []
    state.save_list_targets({})
    assert scratch_factory.redis.hgetall(state.key(state.LIST_TARGETS)) == {b"": b""}
    state.save_list_targets({"ns/v1/pods": {"plural": "pods"}})
    assert state.list_target("ns/v1/pods") == {"plural": "pods"}
    assert state.list_target("ns/v1/secrets") is None
    assert state.namespaces() == []
    state.save_namespaces(["a", "b"])
    assert state.namespaces() == ["a", "b"]
    state.add_pending(["p#1"], {"p#1": "tok"})
    assert state.token("p#1") == "tok" and state.token("p#2") is None
    assert state.pending() == ["p#1"] and state.is_pending("p#1")
    state.record_part("p#1", {"part": "p#1"}, ["b", "a"])
    assert state.parts() == {"p#1": {"part": "p#1"}} and state.needed() == ["a", "b"]


def test_a_page_is_recorded_and_counted_and_its_progress_is_due_at_most_once_a_period(
    scratch_factory: ScratchFactory,
) -> None:
    state = scratch_factory.backup()
    assert state.record_page("p#1", {"part": "p#1", "count": 3}, ["b", "a"], 60) == (3, True)
    assert state.record_page("p#2", {"part": "p#2", "count": 4}, [], 60) == (7, False)
    assert state.record_page("p#3", {"part": "p#3", "count": 0}, [], 0) == (7, True)
    assert sorted(state.parts()) == ["p#1", "p#2", "p#3"] and state.parts()["p#2"]["count"] == 4
    assert state.needed() == ["a", "b"]
    assert_every_key_expires(scratch_factory)


def test_restore_steps_outcomes_and_volumes(scratch_factory: ScratchFactory) -> None:
    state = scratch_factory.restore()
    assert state.step_layout() == [] and state.current_step() is None and state.owners() == []
    crd = {"object": {"kind": "CustomResourceDefinition", "metadata": {"name": "x"}}, "replacing": True}
    state.save_steps([[[crd]], [], [[crd], [crd]]])
    assert state.step_layout() == [1, 0, 2]
    assert state.chunk(0, 0) == [crd] and state.chunk(1, 0) == []
    state.set_current_step(2)
    assert state.current_step() == 2

    state.record_chunk("step:0:0", {"A|restored": 2}, [])
    state.record_chunk("step:0:0", {"A|restored": 1}, ["x"])  # a retried chunk replaces its counts
    state.record_chunk("step:2:0", {"A|failed": 1}, ["y"])
    assert sorted(map(json.dumps, state.chunk_counts())) == ['{"A|failed": 1}', '{"A|restored": 1}']
    assert sorted(state.failure_reasons()) == ["x", "y"]
    state.save_owners([{"kind": "Pod"}])
    assert state.owners() == [{"kind": "Pod"}]

    assert not state.has_volume_targets() and state.volume_target("ns/c") == {}
    state.save_volume_targets({"ns/c": {"tree": "t"}, "ns/d": {"tree": "u"}})
    state.set_volume_target("ns/c", {"tree": "t", "plan": {"node": "n"}})
    assert state.volume_target("ns/c") == {"tree": "t", "plan": {"node": "n"}}
    state.drop_volume_target("ns/c")
    state.drop_volume_target("ns/d")
    assert not state.has_volume_targets()


def test_queue_state_reads_kombus_layout(scratch_factory: ScratchFactory) -> None:
    redis = scratch_factory.redis
    envelope = {"headers": {"id": "a:Initial:"}}
    redis.rpush(Queue.SNAPSHOT.value, json.dumps(envelope))
    redis.hset(queueing.UNACKED_HASH, "tag", json.dumps([{"headers": {"id": "b:Volumes:"}}, "", "q"]))
    redis.rpush(node_queue("n1"), "x", "y")
    redis.set(node_queue("not-a-list"), "1")
    assert queueing.in_flight_task_ids(redis, [Queue.SNAPSHOT.value]) == {"a:Initial:", "b:Volumes:"}
    lengths = scratch_factory.queues().lengths()
    assert lengths[Queue.SNAPSHOT.value] == 1 and lengths[Queue.EXPORT.value] == 0
    assert lengths[node_queue("n1")] == 2 and node_queue("not-a-list") not in lengths
