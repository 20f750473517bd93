"""A running operation whose scratch state is lost (Redis flushed): the layout marker tells "nothing
outstanding" from "gone", and each kind and stage then rebuilds its state from its resource and its
location and goes on, or fails with the reason StateLost; never Successful with parts missing, never
stuck. On the in-memory fakes (the scratch state over fakeredis, flushed as a Redis would be)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from davit.api.objects import RawObject
from davit.api.types import Stage
from davit.constants import Kind, Queue, node_queue
from davit.format.layout import BackupRef
from davit.operations import state_loss
from davit.operations.messages import Message
from davit.operations.ports import Ports
from davit.operations.state_loss import STATE_LOST, OnLoss
from davit.settings import Settings
from davit.volumes import backup_stage, restore_stage
from davit_services.backup import backup
from davit_services.resources import export
from davit_services.uploader import agent
from tests.fakes import cluster as k
from tests.fakes.dispatch import FakeDispatch
from tests.fakes.scratch import ScratchFactory
from tests.fakes.stores import LocalStores
from tests.unit.restore_world import (
    NAMESPACE,
    RESTORE,
    RESTORE_UID,
    World,
    configmap,
)

BACKUP = Kind.APPLICATION_BACKUP
UID = "uid-b1"
REF = BackupRef("app", "b1", UID)
CONFIGMAPS = "app/v1/configmaps"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


# --- the marker --------------------------------------------------------------------------------------


def test_the_marker_names_the_operation_and_its_stage_and_goes_with_a_flush(
    scratch_factory: ScratchFactory,
) -> None:
    state = scratch_factory.backup(UID)
    assert state.laid_out() is None  # never laid out
    state.lay_out("Volumes")
    assert state.laid_out() == "Volumes"
    assert state_loss.is_lost(state) is False
    assert 0 < scratch_factory.ttls()[state.key(state.LAYOUT)] <= 7 * 24 * 3600
    scratch_factory.redis.flushall()
    assert state.laid_out() is None and state_loss.is_lost(state)


@pytest.mark.parametrize("raw", ['{"uid": "someone-else", "stage": "Volumes"}', "not json", "[1]",
                                 '{"uid": "uid-b1", "stage": 3}'])  # fmt: skip
def test_a_marker_that_is_not_this_operations_counts_as_lost(
    scratch_factory: ScratchFactory, raw: str
) -> None:
    state = scratch_factory.backup(UID)
    scratch_factory.redis.set(state.key(state.LAYOUT), raw)
    assert state.laid_out() is None


def test_one_task_takes_the_rebuild(scratch_factory: ScratchFactory) -> None:
    state = scratch_factory.restore("uid-r")
    assert state_loss.claim_rebuild(state)
    assert not state_loss.claim_rebuild(state)  # another task noticing the same loss leaves it
    scratch_factory.redis.flushall()  # lost again: the next one may rebuild
    assert state_loss.claim_rebuild(state)


# --- the table ---------------------------------------------------------------------------------------


def test_the_table_rebuilds_where_it_is_safe_and_fails_elsewhere() -> None:
    backing_up_volumes = k.backup("b1", stage="Applications", status_fields={
        "volumes": [{"persistentVolumeClaim": "a", "mode": "skip"}, {"persistentVolumeClaim": "b",
                                                                     "mode": "filesystem"}]})  # fmt: skip
    only_skipped = k.backup("b1", stage="Applications", status_fields={
        "volumes": [{"persistentVolumeClaim": "a", "mode": "skip"}]})  # fmt: skip
    assert state_loss.backup_on_loss(backing_up_volumes, Stage.APPLICATIONS) == OnLoss.FAIL
    assert state_loss.backup_on_loss(only_skipped, Stage.APPLICATIONS) == OnLoss.REBUILD
    assert state_loss.backup_on_loss(only_skipped, Stage.VOLUMES) == OnLoss.FAIL
    assert state_loss.backup_on_loss(only_skipped, Stage.POST_EXEC_RULE) == OnLoss.FAIL
    assert state_loss.on_loss(Kind.APPLICATION_RESTORE, Stage.APPLICATIONS) == OnLoss.REBUILD
    assert state_loss.on_loss(Kind.APPLICATION_RESTORE, Stage.VOLUMES) == OnLoss.REBUILD
    assert state_loss.reason(BACKUP, Stage.VOLUMES).startswith(f"{STATE_LOST}: ")


def test_the_architecture_document_has_the_table() -> None:
    text = DOCS.read_text()
    section = text[text.index("### Lost scratch state") :]
    section = section[: section.index("\n## ")]
    for kind, stage in state_loss.ON_LOSS:
        short = {BACKUP: "backup", Kind.APPLICATION_RESTORE: "restore"}[kind]
        assert f"| {short} | {stage.value} |" in section, (
            f"{short} {stage.value} missing from the docs' table"
        )


# --- a backup ----------------------------------------------------------------------------------------


@pytest.fixture
def fake() -> k.FakeCluster:
    cluster = k.FakeCluster()
    cluster.put(k.location("loc", "app"), k.namespace("app"))
    for i in range(5):
        meta = {"name": f"cm-{i}", "namespace": "app"}
        cluster.put({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"i": str(i)}})
    return cluster


@pytest.fixture
def stores(fake: k.FakeCluster, tmp_path: Path) -> LocalStores:
    return LocalStores(tmp_path / "locations", cluster=fake)


@pytest.fixture
def ports(fake: k.FakeCluster, scratch_factory: ScratchFactory, stores: LocalStores) -> Ports:
    return Ports(fake, scratch_factory, FakeDispatch(), stores, Settings(export_page_size=2))


def sent(ports: Ports) -> FakeDispatch:
    assert isinstance(ports.dispatch, FakeDispatch)
    return ports.dispatch


def message(stage: str, part: str = "") -> Message:
    return Message(BACKUP, "app", "b1", UID, stage, part)


def in_stage(fake: k.FakeCluster, stage: str, status: str = "Pending", **fields: Any) -> RawObject:
    return fake.put(k.backup("b1", stage=stage, status=status, uid=UID, backupLocation="loc",
                             resourceTypes=["configmaps"], status_fields=fields))  # fmt: skip


def drain_export(ports: Ports) -> None:
    done = 0
    while done < len(sent(ports).to(Queue.EXPORT.value)):
        queued = sent(ports).to(Queue.EXPORT.value)[done]
        done += 1
        export.handle(ports, queued)


def stored_names(stores: LocalStores) -> list[str]:
    repository = stores.repository("app", "loc")
    keys = [info.key for info in repository.store.list(REF.root + "resources/")]
    return sorted(o["metadata"]["name"] for key in keys for o in repository.read_part(key))


def test_a_backup_without_volume_data_flushed_mid_applications_is_planned_again_and_completes(
    fake: k.FakeCluster, ports: Ports, stores: LocalStores, scratch_factory: ScratchFactory
) -> None:
    obj = in_stage(fake, "Applications", volumes=[{"namespace": "app", "persistentVolumeClaim": "x",
                                                   "mode": "skip", "status": "Successful"}])  # fmt: skip
    scratch_factory.backup(UID).lay_out("Volumes")  # as the Volumes stage left it
    export.handle(ports, message("Applications"))
    first = sent(ports).to(Queue.EXPORT.value)[0]
    export.handle(ports, first)  # one page written, then Redis loses everything
    scratch_factory.redis.flushall()
    sent(ports).clear()

    export.handle(ports, message("Applications", f"{CONFIGMAPS}#2"))  # a page finds its part gone
    assert fake.reasons().count("StateRebuilt") == 1
    drain_export(ports)

    status = fake.status(obj)
    assert (status["stage"], status["status"]) == ("PostExecRule", "Pending")
    parts = scratch_factory.backup(UID).parts()
    assert sorted(parts) == ["_cluster", f"{CONFIGMAPS}#1", f"{CONFIGMAPS}#2", f"{CONFIGMAPS}#3"]
    assert sum(p["count"] for p in parts.values()) == 6  # nothing counted twice, nothing missing
    assert stored_names(stores) == ["app", "cm-0", "cm-1", "cm-2", "cm-3", "cm-4"]
    assert scratch_factory.backup(UID).laid_out() == "Applications"

    backup.handle(ports, message("PostExecRule"))
    status = fake.status(obj)
    assert (status["stage"], status["status"], status["resourceCount"]) == ("Final", "Successful", 6)
    assert stores.repository("app", "loc").read_manifest(REF)["summary"]["resourceCount"] == 6


def test_a_backup_held_at_applications_whose_state_was_flushed_plans_once_when_re_sent(
    fake: k.FakeCluster, ports: Ports, scratch_factory: ScratchFactory
) -> None:
    in_stage(fake, "Applications")  # the Volumes stage's marker went with the flush
    export.handle(ports, message("Applications"))
    export.handle(ports, message("Applications"))  # the watcher re-sent it meanwhile
    assert fake.reasons().count("StateRebuilt") == 1
    # The first page is listed by the planning task itself, once; the next one is sent again.
    assert [m.part for m in sent(ports).to(Queue.EXPORT.value)] == [f"{CONFIGMAPS}#2"] * 2


def test_a_backup_with_volume_data_flushed_mid_applications_fails_state_lost_without_a_manifest(
    fake: k.FakeCluster, ports: Ports, stores: LocalStores
) -> None:
    volume = {
        "namespace": "app",
        "persistentVolumeClaim": "data",
        "mode": "filesystem",
        "status": "Successful",
    }
    obj = in_stage(fake, "Applications", volumes=[volume])
    export.handle(ports, message("Applications"))
    status = fake.status(obj)
    assert (status["stage"], status["status"]) == ("Final", "Failed")
    assert status["reason"].startswith(f"{STATE_LOST}: ") and "Applications" in status["reason"]
    assert fake.reasons()[-1] == STATE_LOST
    assert sent(ports).to(Queue.EXPORT.value) == []
    assert not stores.repository("app", "loc").has_manifest(REF)


def test_a_backup_whose_state_was_flushed_before_its_manifest_fails_and_writes_none(
    fake: k.FakeCluster, ports: Ports, stores: LocalStores, scratch_factory: ScratchFactory
) -> None:
    obj = in_stage(fake, "PostExecRule")
    state = scratch_factory.backup(UID)
    state.lay_out("Volumes")
    state.record_part("_cluster", {"part": "_cluster", "key": "k", "count": 1, "rawSize": 1, "storedSize": 1,
                                   "resources": [{"kind": "Namespace", "name": "app"}]}, [])  # fmt: skip
    scratch_factory.redis.flushall()

    backup.handle(ports, message("PostExecRule"))

    status = fake.status(obj)
    assert (status["stage"], status["status"]) == ("Final", "Failed")
    assert status["reason"].startswith(f"{STATE_LOST}: ") and "no manifest" in status["reason"]
    assert not stores.repository("app", "loc").has_manifest(REF)


def test_the_last_volume_done_after_a_flush_fails_the_backup_instead_of_moving_on(
    fake: k.FakeCluster, ports: Ports, scratch_factory: ScratchFactory
) -> None:
    obj = in_stage(fake, "Volumes", status="InProgress")
    state = scratch_factory.backup(UID)
    scratch_factory.redis.flushall()
    backup_stage.advance(ports, message("Volumes"), state)
    status = fake.status(obj)
    assert (status["stage"], status["status"]) == ("Final", "Failed")
    assert "Volumes" in status["reason"] and status["reason"].startswith(STATE_LOST)
    assert sent(ports).to(Queue.EXPORT.value) == []


def test_a_stalled_volumes_stage_re_driven_after_a_flush_fails_state_lost(
    fake: k.FakeCluster, ports: Ports
) -> None:
    obj = in_stage(fake, "Volumes", status="InProgress")
    backup.handle(ports, message("Volumes"))  # the watcher's re-drive: nothing outstanding, no marker
    assert (fake.status(obj)["status"], fake.reasons()[-1]) == ("Failed", STATE_LOST)


def test_a_stalled_volumes_stage_with_its_state_and_nothing_outstanding_moves_on_instead_of_failing(
    fake: k.FakeCluster, ports: Ports, scratch_factory: ScratchFactory
) -> None:
    obj = in_stage(fake, "Volumes", status="InProgress")
    scratch_factory.backup(UID).lay_out("Volumes")  # every volume done: nothing outstanding, not lost
    backup.handle(ports, message("Volumes"))
    status = fake.status(obj)
    assert (status["stage"], status["status"]) == ("Applications", "Pending")
    assert STATE_LOST not in fake.reasons()


def test_a_node_agent_finding_no_plan_after_a_flush_fails_the_backup(
    fake: k.FakeCluster, ports: Ports
) -> None:
    obj = in_stage(fake, "Volumes", status="InProgress")
    agent.handle(ports, message("Volumes", "volume:app/data"))
    assert (fake.status(obj)["status"], fake.reasons()[-1]) == ("Failed", STATE_LOST)
    assert sent(ports).to(node_queue("node-1")) == []


def test_a_stale_volume_message_with_the_state_there_does_nothing(
    fake: k.FakeCluster, ports: Ports, scratch_factory: ScratchFactory
) -> None:
    obj = in_stage(fake, "Volumes", status="InProgress")
    scratch_factory.backup(UID).lay_out("Volumes")
    agent.handle(ports, message("Volumes", "volume:app/unknown"))
    assert fake.status(obj)["status"] == "InProgress"


# --- a restore ---------------------------------------------------------------------------------------


@pytest.fixture
def world(tmp_path: Path, scratch_factory: ScratchFactory, monkeypatch: pytest.MonkeyPatch) -> World:
    monkeypatch.setattr("davit_services.restore.apply.time.sleep", lambda _seconds: None)
    return World.create(tmp_path, scratch_factory)


def restore_message(stage: Stage, part: str = "") -> Message:
    return Message(Kind.APPLICATION_RESTORE, NAMESPACE, RESTORE, RESTORE_UID, stage.value, part)


def test_a_restore_flushed_before_its_first_chunk_is_laid_out_again_and_restores_everything(
    world: World,
) -> None:
    world.write_backup([configmap("a"), configmap("b"), configmap("c")])
    world.deliver(world.new_restore())
    chunks = world.sent()
    world.scratch.redis.flushall()

    for chunk in chunks:  # the chunk finds its part gone: the restore is laid out again
        world.deliver(chunk)
    assert world.cluster.reasons().count("StateRebuilt") == 1
    world.run()

    status = world.status()
    assert (status["stage"], status["status"]) == ("Final", "Successful")
    assert sorted(world.objects()) == ["a", "b", "c"]
    assert status["resourcesByKind"]["ConfigMap"]["restored"] == 3


def test_a_restore_flushed_after_creating_objects_keeps_them_and_counts_them_restored(world: World) -> None:
    world.write_backup([configmap("a"), configmap("b")])
    world.deliver(world.new_restore())
    for chunk in world.sent():
        world.deliver(chunk)  # created; the next step would follow
    world.dispatch.clear()
    created = {name: o["metadata"]["uid"] for name, o in world.objects().items()}
    # As if the task were between steps when Redis lost everything: the restore still in Applications.
    obj = world.restore()
    world.cluster.put({**obj, "status": {**obj["status"], "stage": "Applications", "status": "InProgress"}})
    world.scratch.redis.flushall()

    world.deliver(restore_message(Stage.APPLICATIONS))  # the watcher's re-drive of the stalled stage
    world.run()

    status = world.status()
    assert (status["stage"], status["status"]) == ("Final", "Successful")
    assert {
        name: o["metadata"]["uid"] for name, o in world.objects().items()
    } == created  # kept, not made again
    assert status["resourcesByKind"]["ConfigMap"] == {
        "restored": 2,
        "retained": 0,
        "replaced": 0,
        "updated": 0,
        "failed": 0,
    }


def test_a_restore_re_driven_while_its_initial_task_lays_it_out_does_not_rebuild(world: World) -> None:
    world.write_backup([configmap("a")])
    world.deliver(world.new_restore())
    state = world.scratch.restore(RESTORE_UID)
    world.scratch.redis.delete(state.key(state.CURRENT_STEP))  # as if the Initial task were still at work
    world.dispatch.clear()
    world.deliver(restore_message(Stage.APPLICATIONS))
    assert "StateRebuilt" not in world.cluster.reasons() and world.sent() == []


def test_a_dry_run_is_never_rebuilt_into_writes(world: World) -> None:
    world.write_backup([configmap("a")])
    dry_run = k.restore(RESTORE, NAMESPACE, stage="Applications", status="InProgress", uid=RESTORE_UID,
                        backupName="b1", backupLocation="loc", dryRun=True)  # fmt: skip
    world.cluster.put(dry_run)
    world.deliver(restore_message(Stage.APPLICATIONS))
    assert world.objects() == {}
    assert world.status()["stage"] == "Final"


def _in_volumes_after_a_flush(world: World, volumes: list[dict[str, Any]]) -> None:
    """A restore in Volumes (one ConfigMap restored and one failed, as its status says) whose scratch
    state was flushed; the backup holds a filesystem volume ``data`` with tree ``tree-data``."""
    world.write_backup(
        [configmap("a")],
        volumes=[{"namespace": NAMESPACE, "persistentVolumeClaim": "data", "mode": "filesystem",
                  "status": "Successful", "tree": "tree-data", "totalSize": 5}],
    )  # fmt: skip
    world.cluster.put(k.restore(RESTORE, NAMESPACE, stage="Volumes", status="InProgress", uid=RESTORE_UID,
                                backupName="b1", backupLocation="loc",
                                status_fields={"volumes": volumes, "resourcesByKind": {
                                    "ConfigMap": {"restored": 1, "retained": 0, "replaced": 0,
                                                  "failed": 1}}}))  # fmt: skip
    world.scratch.redis.flushall()


def test_a_restore_flushed_in_volumes_hands_out_again_what_is_not_done(world: World) -> None:
    entry = {"namespace": NAMESPACE, "persistentVolumeClaim": "data", "status": "InProgress", "reason": ""}
    _in_volumes_after_a_flush(world, [entry])
    world.cluster.put(
        k.claim("data", NAMESPACE, volume="pv-1"),
        k.volume("pv-1", claim=(NAMESPACE, "data"), driver="csi.example.com"),
        k.pod("p", NAMESPACE, claims=["data"], node="node-1", uid="pod-uid"),
    )
    world.deliver(restore_message(Stage.VOLUMES))  # the watcher's re-drive

    part = restore_stage.PART_PREFIX + f"{NAMESPACE}/data"
    assert [(m.stage, m.part) for m in world.dispatch.to(node_queue("node-1"))] == [("Volumes", part)]
    state = world.scratch.restore(RESTORE_UID)
    assert state.volume_target(f"{NAMESPACE}/data")["tree"] == "tree-data"
    assert state.laid_out() == "Volumes"
    # The node agent writes it and reports: the restore ends with the counts its status had.
    restore_stage.volume_done(world.ports, world.restore(), state, part)
    world.run()
    status = world.status()
    assert (status["stage"], status["status"]) == ("Final", "PartialSuccess")
    assert status["resourcesByKind"]["ConfigMap"] == {
        "restored": 1,
        "retained": 0,
        "replaced": 0,
        "updated": 0,
        "failed": 1,
    }
    assert "reasons were lost" in status["reason"]


def test_a_restore_flushed_after_its_last_volume_finishes_instead_of_waiting(world: World) -> None:
    entry = {"namespace": NAMESPACE, "persistentVolumeClaim": "data", "status": "Successful", "reason": ""}
    _in_volumes_after_a_flush(world, [entry])
    world.deliver(restore_message(Stage.VOLUMES, restore_stage.FINISH_PART))  # finish reads a lost state
    world.run()
    status = world.status()
    assert status["stage"] == "Final"
    assert status["resourcesByKind"]["ConfigMap"]["restored"] == 1  # not an empty count
