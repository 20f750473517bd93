"""The backup service's handler (davit_services.backup.backup) on the in-memory fakes: Initial (the
location, the pre-exec rule, the volumes' plan), a snapshot volume, and PostExecRule (the post-exec rule,
the manifest and the log, Final); each with its re-delivered and stale messages."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from davit import constants
from davit.api.objects import RawObject
from davit.constants import Kind, Queue, node_queue
from davit.format.layout import BackupRef
from davit.operations.messages import Message
from davit.operations.ports import Ports
from davit.operations.scratch import BackupScratch
from davit.settings import Settings
from davit.storage.base import StoreUnavailable
from davit.volumes import backup_stage, mover
from davit_services.backup import backup
from tests.fakes import cluster as k
from tests.fakes.dispatch import FakeDispatch
from tests.fakes.exec import RecordingExecutor
from tests.fakes.scratch import ScratchFactory
from tests.fakes.stores import LocalStores

BACKUP = Kind.APPLICATION_BACKUP
DRIVER = "hostpath.csi.k8s.io"
UID = "uid-b1"
RULE_ITEMS = [{"podSelector": {"app": "db"}, "container": "db",
               "actions": [{"type": "command", "value": "psql -c CHECKPOINT"}]}]  # fmt: skip


@pytest.fixture
def fake() -> k.FakeCluster:
    cluster = k.FakeCluster(executor=RecordingExecutor())
    cluster.put(k.location("loc", "app"))
    return cluster


@pytest.fixture
def stores(fake: k.FakeCluster, tmp_path: Path) -> LocalStores:
    return LocalStores(tmp_path / "locations", cluster=fake)


@pytest.fixture
def ports(fake: k.FakeCluster, scratch_factory: ScratchFactory, stores: LocalStores) -> Ports:
    return Ports(fake, scratch_factory, FakeDispatch(), stores, Settings())


def sent(ports: Ports) -> FakeDispatch:
    assert isinstance(ports.dispatch, FakeDispatch)
    return ports.dispatch


def message(stage: str, part: str = "") -> Message:
    return Message(BACKUP, "app", "b1", UID, stage, part)


def put_db(fake: k.FakeCluster) -> None:
    """A database pod on node-1 mounting claim ``data`` (a filesystem volume), and the Rule ``quiesce``."""
    fake.put(
        k.claim("data", volume="pv-data"),
        k.volume("pv-data", claim=("app", "data"), driver="other.csi.example.com"),
        k.pod("db-0", claims=["data"], containers=["db"], labels={"app": "db"}, uid="pod-db-0"),
        k.rule("quiesce", rules=RULE_ITEMS),
    )


def initial(fake: k.FakeCluster, **spec: Any) -> RawObject:
    return fake.put(k.backup("b1", stage="Initial", uid=UID, backupLocation="loc", **spec))


def test_initial_runs_the_pre_exec_rule_and_moves_to_volumes_handing_out_the_volume(
    fake: k.FakeCluster, ports: Ports, scratch_factory: ScratchFactory
) -> None:
    put_db(fake)
    obj = initial(fake, preExecRule="quiesce")

    backup.handle(ports, message("Initial"))

    assert [(c.pod, c.container, c.command) for c in fake.exec.rule_calls()] == [
        ("db-0", "db", "psql -c CHECKPOINT")
    ]
    status = fake.status(obj)
    assert (status["stage"], status["status"]) == ("Volumes", "InProgress")
    assert constants.BACKUP_FINALIZER in (fake.find(BACKUP, "app", "b1") or {})["metadata"]["finalizers"]
    assert fake.reasons() == ["StageChanged", "StageChanged"]  # PreExecRule, then Volumes
    assert [m.part for m in sent(ports).to(node_queue("node-1"))] == ["volume:app/data"]
    assert len(sent(ports).sent) == 1
    assert ("app", "loc", True) in ports.stores.opened  # type: ignore[attr-defined]
    events = [line for line in scratch_factory.backup(UID).log_lines() if '"backup.started"' in line]
    assert len(events) == 1

    # The same Initial message delivered again: the backup has left Initial, nothing runs twice.
    backup.handle(ports, message("Initial"))
    assert len(fake.exec.rule_calls()) == 1 and len(sent(ports).sent) == 1
    assert fake.reasons() == ["StageChanged", "StageChanged"]


def test_a_stalled_pre_exec_rule_stage_is_resumed_by_the_watchers_message(
    fake: k.FakeCluster, ports: Ports
) -> None:
    """The worker that moved the backup into PreExecRule died there: the watcher's re-drive (a
    PreExecRule message) runs the rule and plans and hands out the volumes, once."""
    put_db(fake)
    obj = fake.put(k.backup("b1", stage="PreExecRule", status="InProgress", uid=UID, backupLocation="loc",
                            preExecRule="quiesce"))  # fmt: skip

    backup.handle(ports, message("PreExecRule"))

    assert len(fake.exec.rule_calls()) == 1
    assert fake.status(obj)["stage"] == "Volumes"
    assert [m.part for m in sent(ports).to(node_queue("node-1"))] == ["volume:app/data"]
    backup.handle(ports, message("PreExecRule"))  # a second re-drive, sent before the first was seen
    assert len(fake.exec.rule_calls()) == 1 and len(sent(ports).sent) == 1


def test_initial_without_volumes_moves_on_to_applications(fake: k.FakeCluster, ports: Ports) -> None:
    obj = initial(fake)
    backup.handle(ports, message("Initial"))
    assert fake.status(obj)["stage"] == "Applications"
    assert [m.stage for m in sent(ports).to(Queue.EXPORT.value)] == ["Applications"]
    assert fake.exec.calls == []


def test_two_workers_with_the_same_initial_message_one_does_the_work(
    fake: k.FakeCluster, ports: Ports
) -> None:
    """The other worker's conditional write of the start conflicts (409): it leaves the backup alone."""
    put_db(fake)
    obj = initial(fake, preExecRule="quiesce")
    fake.conflict_next("patch_status")

    backup.handle(ports, message("Initial"))

    assert fake.status(obj)["stage"] == "Initial"
    assert fake.exec.calls == [] and sent(ports).sent == [] and fake.events == []
    assert "add_finalizer" not in fake.calls


def test_a_failing_pre_exec_rule_fails_the_backup_with_its_reason(
    fake: k.FakeCluster, ports: Ports, scratch_factory: ScratchFactory
) -> None:
    put_db(fake)
    fake.exec.results["CHECKPOINT"] = (3, "database is read-only")
    obj = initial(fake, preExecRule="quiesce")

    backup.handle(ports, message("Initial"))

    status = fake.status(obj)
    assert (status["stage"], status["status"]) == ("Final", "Failed")
    assert status["reason"].startswith("preExecRule quiesce: ")
    assert "exit code 3" in status["reason"] and "database is read-only" in status["reason"]
    assert fake.reasons()[-1] == "Failed"
    assert sent(ports).sent == []  # no volume handed out
    assert "list_claims" not in fake.calls  # nor planned
    assert scratch_factory.backup(UID).log_lines()  # the log stays for `davit backup logs`


def test_a_pre_exec_rule_that_does_not_exist_fails_the_backup_naming_it(
    fake: k.FakeCluster, ports: Ports
) -> None:
    obj = initial(fake, preExecRule="nope")
    backup.handle(ports, message("Initial"))
    status = fake.status(obj)
    assert (status["stage"], status["status"]) == ("Final", "Failed")
    assert status["reason"] == "preExecRule: Rule app/nope not found"


def test_a_pre_exec_rule_whose_pod_is_unreachable_fails_naming_the_pod(
    fake: k.FakeCluster, ports: Ports
) -> None:
    put_db(fake)
    fake.exec.unreachable["db-0"] = "connection refused"
    obj = initial(fake, preExecRule="quiesce")
    backup.handle(ports, message("Initial"))
    status = fake.status(obj)
    assert (
        status["status"] == "Failed"
        and "db-0" in status["reason"]
        and "connection refused" in status["reason"]
    )


def test_an_unavailable_location_fails_the_backup_with_the_store_reason(
    fake: k.FakeCluster, ports: Ports, stores: LocalStores
) -> None:
    stores.unavailable[("app", "loc")] = "BackupLocation app/loc is unavailable: AccessDenied: no"
    put_db(fake)
    obj = initial(fake, preExecRule="quiesce")
    backup.handle(ports, message("Initial"))
    status = fake.status(obj)
    assert (status["stage"], status["status"]) == ("Final", "Failed")
    assert status["reason"] == "BackupLocation app/loc is unavailable: AccessDenied: no"
    assert fake.exec.calls == [] and sent(ports).sent == []


def snapshot_backup(fake: k.FakeCluster, ports: Ports) -> RawObject:
    """A backup in Volumes whose one volume, ``snap``, is planned for a CSI snapshot."""
    fake.put(
        k.claim("snap", volume="pv-snap"),
        k.volume("pv-snap", claim=("app", "snap"), driver=DRIVER),
        k.snapshot_class("hostpath", DRIVER, default=True),
    )
    obj = initial(fake)
    backup.handle(ports, message("Initial"))
    assert fake.status(obj)["stage"] == "Volumes"
    assert [m.part for m in sent(ports).to(Queue.SNAPSHOT.value)] == ["volume:app/snap"]
    sent(ports).clear()
    return obj


def test_a_snapshot_volume_is_taken_once_and_its_end_moves_the_backup_on(
    fake: k.FakeCluster, ports: Ports
) -> None:
    obj = snapshot_backup(fake, ports)

    backup.handle(ports, message("Volumes", "volume:app/snap"))
    backup.handle(ports, message("Volumes", "volume:app/snap"))  # delivered twice

    assert fake.calls.count("snapshot_volume") == 1
    assert len(fake.of_kind("VolumeSnapshot")) == 1
    status = fake.status(obj)
    assert status["stage"] == "Applications"
    assert status["volumes"][0]["status"] == "Successful" and status["volumesProgress"] == "1/1"
    assert len(sent(ports).to(Queue.EXPORT.value)) == 1
    results = ports.scratch.backup(UID).volume_results()
    assert results["app/snap"]["volumeSnapshot"] == fake.of_kind("VolumeSnapshot")[0]["metadata"]["name"]


def test_a_failed_snapshot_fails_the_volume_not_the_backup(fake: k.FakeCluster, ports: Ports) -> None:
    obj = snapshot_backup(fake, ports)
    fake.snapshot_statuses["app/snap"] = {"readyToUse": False, "error": {"message": "driver said no"}}

    backup.handle(ports, message("Volumes", "volume:app/snap"))

    status = fake.status(obj)
    assert status["stage"] == "Applications"
    assert status["volumes"][0]["status"] == "Failed"
    assert "driver said no" in status["volumes"][0]["reason"]


def test_a_volumes_message_without_a_part_hands_out_what_is_outstanding(
    fake: k.FakeCluster, ports: Ports
) -> None:
    """The watcher's stall re-send: the plan is not made again, the outstanding volume is sent again."""
    snapshot_backup(fake, ports)
    planned = fake.calls.count("list_claims")
    backup.handle(ports, message("Volumes"))
    assert [m.part for m in sent(ports).to(Queue.SNAPSHOT.value)] == ["volume:app/snap"]
    assert fake.calls.count("list_claims") == planned


def test_a_stall_with_every_volume_done_but_the_backup_still_in_volumes_moves_it_on(
    fake: k.FakeCluster, ports: Ports
) -> None:
    """The last node agent recorded its result and died before it moved the backup on."""
    obj = snapshot_backup(fake, ports)
    state = ports.scratch.backup(UID)
    state.finish("volume:app/snap", group=state.VOLUMES_PENDING)
    backup_stage.record_result(state, "app/snap", {"status": "Successful"})

    backup.handle(ports, message("Volumes"))

    assert fake.status(obj)["stage"] == "Applications"
    assert sent(ports).to(Queue.SNAPSHOT.value) == []


def post_exec(fake: k.FakeCluster, ports: Ports, failed_volume: bool = False, **spec: Any) -> RawObject:
    """A backup in PostExecRule whose export recorded two parts and whose two volumes have results."""
    volumes = [{"namespace": "app", "persistentVolumeClaim": c, "status": "InProgress"} for c in ("a", "b")]
    obj = fake.put(
        k.backup(
            "b1",
            stage="PostExecRule",
            status="Pending",
            uid=UID,
            backupLocation="loc",
            status_fields={"volumes": volumes, "triggerTimestamp": "2026-01-01T00:00:00Z"},
            **spec,
        )
    )
    state = ports.scratch.backup(UID)
    state.lay_out("Volumes")
    refs = [{"kind": "ConfigMap", "namespace": "app", "name": "c1"}]
    state.record_part("app/v1/configmaps#1", {"part": "app/v1/configmaps#1", "key": "k1", "count": 1,
                      "rawSize": 100, "storedSize": 60, "resources": refs}, [])  # fmt: skip
    state.record_part("_cluster", {"part": "_cluster", "key": "k2", "count": 2, "rawSize": 50,
                      "storedSize": 30, "resources": refs * 2}, [])  # fmt: skip
    state.record_volume_result("app/a", {"status": "Successful", "totalSize": 1000, "storedSize": 400})
    second = {"status": "Failed", "reason": "gone"} if failed_volume else {"status": "Successful"}
    state.record_volume_result("app/b", {**second, "totalSize": 10, "storedSize": 5})
    state.log("backup.started", backupLocation="loc")
    return obj


def test_finish_writes_the_manifest_and_the_log_and_ends_final_with_the_counts(
    fake: k.FakeCluster, ports: Ports, stores: LocalStores, scratch_factory: ScratchFactory
) -> None:
    obj = post_exec(fake, ports)

    backup.handle(ports, message("PostExecRule"))

    status = fake.status(obj)
    assert (status["stage"], status["status"]) == ("Final", "Successful")
    assert status["resourceCount"] == 3
    assert status["totalSize"] == 100 + 50 + 1000 + 10
    repository = stores.repository("app", "loc")
    ref = BackupRef("app", "b1", UID)
    manifest = repository.read_manifest(ref)
    assert manifest["summary"]["resourceCount"] == 3
    assert manifest["summary"]["storedSize"] == 60 + 30 + 400 + 5
    assert status["storedSize"] > manifest["summary"]["storedSize"]  # and the manifest itself
    assert [p["part"] for p in manifest["parts"]] == ["_cluster", "app/v1/configmaps#1"]
    assert [v["status"] for v in manifest["volumes"]] == ["Successful", "Successful"]
    assert status["backupPath"].endswith(ref.root)
    log = repository.read_log(ref)
    assert any('"backup.started"' in line for line in log) and any(
        '"backup.completed"' in line for line in log
    )
    assert fake.reasons()[-1] == "Completed"
    assert scratch_factory.names(UID) == []  # the scratch state ends with the backup

    # Delivered again: the backup is Final, nothing is written again.
    before = fake.find(BACKUP, "app", "b1")
    backup.handle(ports, message("PostExecRule"))
    assert fake.find(BACKUP, "app", "b1") == before


def test_a_manifest_whose_write_failed_is_withdrawn_even_if_the_store_took_it(
    fake: k.FakeCluster, ports: Ports, stores: LocalStores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store stored the manifest but its answer was lost, for the whole retry time: the backup fails
    (the workers fail it with the store's reason), and no manifest says it is complete."""
    obj = post_exec(fake, ports)
    store = stores.repository("app", "loc").store
    real_put = store.put

    def put(key: str, data: bytes) -> None:
        real_put(key, data)
        if key.endswith("/manifest"):
            raise StoreUnavailable("IncompleteRead", f"cannot write {key!r} to /x", store="S3", attempts=5)

    monkeypatch.setattr(store, "put", put)
    with pytest.raises(StoreUnavailable):
        backup.handle(ports, message("PostExecRule"))
    assert not stores.repository("app", "loc").has_manifest(BackupRef("app", "b1", UID))
    assert fake.status(obj)["stage"] == "PostExecRule"  # the workers fail it with the reason


def test_finish_with_a_failed_volume_is_a_partial_success(fake: k.FakeCluster, ports: Ports) -> None:
    obj = post_exec(fake, ports, failed_volume=True)
    backup.handle(ports, message("PostExecRule"))
    status = fake.status(obj)
    assert (status["stage"], status["status"]) == ("Final", "PartialSuccess")
    assert status["reason"] == "1 of 2 volume(s) failed"


def test_finish_runs_the_post_exec_rule_and_a_failing_one_fails_the_backup_before_the_manifest(
    fake: k.FakeCluster, ports: Ports, stores: LocalStores
) -> None:
    put_db(fake)
    obj = post_exec(fake, ports, postExecRule="quiesce")
    fake.exec.results["CHECKPOINT"] = (1, "")
    backup.handle(ports, message("PostExecRule"))
    status = fake.status(obj)
    assert (status["stage"], status["status"]) == ("Final", "Failed")
    assert status["reason"].startswith("postExecRule quiesce: ")
    assert not stores.repository("app", "loc").has_manifest(BackupRef("app", "b1", UID))


def test_a_message_for_a_stage_the_backup_has_left_does_nothing(fake: k.FakeCluster, ports: Ports) -> None:
    obj = fake.put(k.backup("b1", stage="Applications", status="InProgress", uid=UID, backupLocation="loc"))
    before = fake.find(BACKUP, "app", "b1")
    for stage in ("Initial", "PreExecRule", "Volumes", "PostExecRule"):
        backup.handle(ports, message(stage))
    backup.handle(ports, Message(BACKUP, "app", "b1", "another-uid", "Applications"))
    assert fake.find(BACKUP, "app", "b1") == before and fake.status(obj)["stage"] == "Applications"
    assert sent(ports).sent == [] and fake.events == []


def test_a_background_pre_exec_action_holds_until_the_volumes_are_read_then_this_task_moves_on(
    fake: k.FakeCluster, ports: Ports, scratch_factory: ScratchFactory
) -> None:
    """A background action holds (a read lock) while the node agents read the volumes: the snapshot task
    waits for them, releases the action and advances itself; the last node agent does not."""
    put_db(fake)
    action = {"type": "command", "value": "lock tables; ${WAIT_CMD}", "background": True}
    lock = [{"podSelector": {"app": "db"}, "container": "db", "actions": [action]}]
    fake.put(k.rule("lock", rules=lock))
    obj = initial(fake, preExecRule="lock")
    state = scratch_factory.backup(UID)

    def node_agent() -> None:  # finishes the volume once it has been handed out
        deadline = time.monotonic() + 20
        while not sent(ports).to(node_queue("node-1")) and time.monotonic() < deadline:
            time.sleep(0.05)
        backup_stage.finish_part(ports, message("Volumes", "volume:app/data"), state)

    agent = threading.Thread(target=node_agent)
    agent.start()
    backup.handle(ports, message("Initial"))
    agent.join()

    status = fake.status(obj)
    assert status["stage"] == "Applications"
    assert len(sent(ports).to(Queue.EXPORT.value)) == 1
    assert [h.stopped or not h.alive() for h in fake.exec.handles] == [True]  # released
    assert fake.reasons() == ["StageChanged"] * 3  # PreExecRule, Volumes, Applications


# --- the data mover ------------------------------------------------------------------------------------


def mover_backup(fake: k.FakeCluster, ports: Ports) -> RawObject:
    """A backup with ``snapshotMoveData`` in Volumes whose one volume, ``snap``, is planned for it."""
    fake.put(
        k.claim("snap", volume="pv-snap"),
        k.volume("pv-snap", claim=("app", "snap"), driver=DRIVER),
        k.snapshot_class("hostpath", DRIVER, default=True),
    )
    obj = initial(fake, snapshotMoveData=True)
    backup.handle(ports, message("Initial"))
    status = fake.status(obj)
    assert status["stage"] == "Volumes"
    assert [(v["persistentVolumeClaim"], v["mode"]) for v in status["volumes"]] == [("snap", "datamover")]
    assert [m.part for m in sent(ports).to(Queue.SNAPSHOT.value)] == ["volume:app/snap"]
    sent(ports).clear()
    return obj


def temporary(fake: k.FakeCluster) -> list[str]:
    """The data mover's objects in the fake, ``Kind name``."""
    return [f"{o['kind']} {o['metadata']['name']}" for o in fake.list_temporary()]


def test_a_datamover_volume_is_snapshotted_mounted_and_passed_to_the_node_agent_of_its_helper(
    fake: k.FakeCluster, ports: Ports
) -> None:
    obj = mover_backup(fake, ports)

    backup.handle(ports, message("Volumes", "volume:app/snap"))

    (snapshot,) = fake.of_kind("VolumeSnapshot")
    name = snapshot["metadata"]["name"]
    assert sorted(temporary(fake)) == [f"PersistentVolumeClaim {name}", f"Pod {name}"]
    (claim,) = [c for c in fake.of_kind("PersistentVolumeClaim") if c["metadata"]["name"] == name]
    assert claim["spec"]["dataSource"] == {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot",
                                           "name": name}  # fmt: skip
    # Passed on, not done: the node agent of the helper's node reads it, by a plan naming the claim.
    assert [m.part for m in sent(ports).to(node_queue("node-a"))] == ["volume:app/snap"]
    plan = backup_stage.load_plan(ports.scratch.backup(UID), "app/snap")
    assert plan is not None and (plan.mode, plan.read_claim, plan.node) == ("datamover", name, "node-a")
    assert fake.status(obj)["stage"] == "Volumes"
    assert "VolumeDataMoving" in fake.reasons()
    assert ports.scratch.backup(UID).is_pending("volume:app/snap", group=BackupScratch.VOLUMES_PENDING)


def test_a_datamover_volume_whose_snapshot_fails_fails_without_a_helper(
    fake: k.FakeCluster, ports: Ports
) -> None:
    obj = mover_backup(fake, ports)
    fake.snapshot_statuses["app/snap"] = {"readyToUse": False, "error": {"message": "driver said no"}}

    backup.handle(ports, message("Volumes", "volume:app/snap"))

    status = fake.status(obj)
    assert status["stage"] == "Applications"
    assert status["volumes"][0]["status"] == "Failed" and "driver said no" in status["volumes"][0]["reason"]
    assert temporary(fake) == []
    assert sent(ports).to(node_queue("node-a")) == []
    assert "VolumeDataMoveFailed" in fake.reasons()


def test_finish_removes_the_data_movers_objects_and_snapshots_and_nothing_else(
    fake: k.FakeCluster, ports: Ports
) -> None:
    obj = mover_backup(fake, ports)
    backup.handle(ports, message("Volumes", "volume:app/snap"))
    # Another backup's helper in the same namespace, and an application pod: both stay.
    other = mover.backup_labels("b2", "uid-b2")
    helper = mover.helper_pod("b2-snap-uidb2", "app", "b2-snap-uidb2", "davit:latest", other, read_only=True)
    fake.put(k.pod("db-0", claims=["snap"], uid="pod-db-0"), helper)
    state = ports.scratch.backup(UID)
    state.finish("volume:app/snap", group=state.VOLUMES_PENDING)
    backup_stage.record_result(state, "app/snap", {"status": "Successful", "tree": "t1", "totalSize": 5})
    fake.patch_status(BACKUP, fake.get(BACKUP, "app", "b1") or obj, {"stage": "PostExecRule"})

    backup.handle(ports, message("PostExecRule"))

    assert fake.status(obj)["stage"] == "Final" and fake.status(obj)["status"] == "Successful"
    assert temporary(fake) == ["Pod b2-snap-uidb2"]
    assert fake.of_kind("VolumeSnapshot") == []
    assert [p["metadata"]["name"] for p in fake.of_kind("Pod")] == ["b2-snap-uidb2", "db-0"]
    assert [c["metadata"]["name"] for c in fake.of_kind("PersistentVolumeClaim")] == ["snap"]
