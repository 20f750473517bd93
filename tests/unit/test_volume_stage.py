"""A backup's Volumes stage (davit.volumes.backup_stage) on the in-memory fakes: planning the claims,
handing filesystem volumes to their node's agent and snapshots to the snapshot service, the volume
progress writes (conflicts, heartbeats), and the one advance to Applications when the last volume is done."""

from __future__ import annotations

import datetime
import threading
from pathlib import Path

import pytest

from davit import timeutil
from davit.api.objects import RawObject
from davit.constants import Kind, Queue, node_queue
from davit.operations.messages import Message
from davit.operations.ports import BackupScratch, Ports
from davit.settings import Settings
from davit.volumes import backup_stage
from tests.fakes import cluster as k
from tests.fakes.dispatch import FakeDispatch
from tests.fakes.scratch import ScratchFactory
from tests.fakes.stores import LocalStores

BACKUP = Kind.APPLICATION_BACKUP
DRIVER = "hostpath.csi.k8s.io"
LONG_AGO = "2020-01-01T00:00:00Z"


@pytest.fixture
def fake() -> k.FakeCluster:
    return k.FakeCluster()


@pytest.fixture
def ports(fake: k.FakeCluster, scratch_factory: ScratchFactory, tmp_path: Path) -> Ports:
    fake.put(k.location("loc", "app"))
    stores = LocalStores(tmp_path / "locations", cluster=fake)
    return Ports(fake, scratch_factory, FakeDispatch(), stores, Settings())


def dispatch_of(ports: Ports) -> FakeDispatch:
    assert isinstance(ports.dispatch, FakeDispatch)
    return ports.dispatch


def put_claims(fake: k.FakeCluster) -> None:
    """Four claims: ``data`` on a local volume of node-1 and ``logs`` mounted by a pod on node-2
    (filesystem), ``snap`` of a driver with a VolumeSnapshotClass (snapshot), ``pending`` unbound (skip)."""
    fake.put(
        k.claim("data", volume="pv-data"),
        k.volume("pv-data", claim=("app", "data"), local_path="/srv/data", node="node-1"),
        k.claim("logs", volume="pv-logs"),
        k.volume("pv-logs", claim=("app", "logs"), driver="other.csi.example.com"),
        k.pod("web-0", claims=["logs"], node="node-2", uid="pod-web-0"),
        k.claim("snap", volume="pv-snap"),
        k.volume("pv-snap", claim=("app", "snap"), driver=DRIVER),
        k.snapshot_class("hostpath", DRIVER, default=True),
        k.claim("pending"),
    )


def volume_message(part: str, name: str = "b1", uid: str = "uid-b1") -> Message:
    return Message(BACKUP, "app", name, uid, "Volumes", backup_stage.VOLUME_PART_PREFIX + part)


def test_start_plans_every_claim_and_sends_one_message_per_volume_to_whoever_backs_it_up(
    fake: k.FakeCluster, ports: Ports
) -> None:
    put_claims(fake)
    obj = fake.put(
        k.backup("b1", stage="PreExecRule", status="InProgress", uid="uid-b1", backupLocation="loc")
    )
    state = ports.scratch.backup("uid-b1")

    moved, outstanding = backup_stage.start(ports, obj, state, hold=False)

    assert outstanding
    status = fake.status(obj)
    assert (status["stage"], status["status"]) == ("Volumes", "InProgress")
    assert status["reason"] == "3 of 4 volume(s) to back up"
    assert status["volumesProgress"] == "0/4"
    assert sorted(v["persistentVolumeClaim"] for v in status["volumes"]) == [
        "data",
        "logs",
        "pending",
        "snap",
    ]
    assert moved["status"]["stage"] == "Volumes"
    sent = dispatch_of(ports)
    assert [m.part for m in sent.to(node_queue("node-1"))] == ["volume:app/data"]
    assert [m.part for m in sent.to(node_queue("node-2"))] == ["volume:app/logs"]
    assert [m.part for m in sent.to(Queue.SNAPSHOT.value)] == ["volume:app/snap"]
    assert len(sent.sent) == 3
    assert all(m.stage == "Volumes" and m.uid == "uid-b1" for _, m in sent.sent)
    assert state.pending(group=state.VOLUMES_PENDING) == [
        "volume:app/data",
        "volume:app/logs",
        "volume:app/snap",
    ]
    plan = backup_stage.load_plan(state, "app/data")
    assert plan is not None and (plan.mode, plan.node, plan.path) == ("filesystem", "node-1", "/srv/data")
    skipped = backup_stage.load_plan(state, "app/pending")
    assert skipped is not None and skipped.mode == "skip"
    assert fake.reasons() == ["StageChanged"]


def test_start_for_a_backup_another_worker_moved_on_plans_into_nothing_and_sends_nothing(
    fake: k.FakeCluster, ports: Ports
) -> None:
    put_claims(fake)
    obj = fake.put(k.backup("b1", stage="Volumes", status="InProgress", uid="uid-b1", backupLocation="loc"))
    state = ports.scratch.backup("uid-b1")

    assert backup_stage.start(ports, obj, state, hold=False) == (obj, False)

    assert dispatch_of(ports).sent == []
    assert state.pending(group=state.VOLUMES_PENDING) == []
    assert "volumes" not in fake.status(obj) and fake.events == []


def test_a_stall_resend_hands_out_again_only_the_volumes_not_finished_without_planning_again(
    fake: k.FakeCluster, ports: Ports
) -> None:
    put_claims(fake)
    obj = fake.put(
        k.backup("b1", stage="PreExecRule", status="InProgress", uid="uid-b1", backupLocation="loc")
    )
    state = ports.scratch.backup("uid-b1")
    moved, _ = backup_stage.start(ports, obj, state, hold=False)
    backup_stage.finish_part(ports, volume_message("app/data"), state)
    dispatch_of(ports).clear()
    planning_calls = fake.calls.count("list_claims"), fake.calls.count("snapshot_drivers")

    backup_stage.resend_outstanding(ports.dispatch, moved, state)

    sent = dispatch_of(ports)
    assert [m.part for m in sent.to(node_queue("node-2"))] == ["volume:app/logs"]
    assert [m.part for m in sent.to(Queue.SNAPSHOT.value)] == ["volume:app/snap"]
    assert sent.to(node_queue("node-1")) == []
    assert (fake.calls.count("list_claims"), fake.calls.count("snapshot_drivers")) == planning_calls


def test_a_stall_resend_after_a_worker_died_before_the_hand_out_hands_out_every_volume_without_a_result(
    fake: k.FakeCluster, ports: Ports
) -> None:
    """The worker moved the backup into Volumes and died before it recorded the outstanding volumes and
    sent them: the re-drive finds none outstanding, so it takes the planned ones that have no result."""
    put_claims(fake)
    obj = fake.put(
        k.backup("b1", stage="PreExecRule", status="InProgress", uid="uid-b1", backupLocation="loc")
    )
    state = ports.scratch.backup("uid-b1")
    moved, _ = backup_stage.start(ports, obj, state, hold=False)
    for part in state.pending(group=state.VOLUMES_PENDING):  # as if never recorded
        state.finish(part, group=state.VOLUMES_PENDING)
    backup_stage.record_result(state, "app/snap", {"status": "Successful"})
    dispatch_of(ports).clear()

    assert backup_stage.resend_outstanding(ports.dispatch, moved, state)

    sent = dispatch_of(ports)
    assert sorted(m.part for _queue, m in sent.sent) == ["volume:app/data", "volume:app/logs"]
    assert sorted(state.pending(group=state.VOLUMES_PENDING)) == ["volume:app/data", "volume:app/logs"]


def test_a_stall_resend_with_every_volume_done_has_nothing_outstanding(
    fake: k.FakeCluster, ports: Ports
) -> None:
    put_claims(fake)
    obj = fake.put(
        k.backup("b1", stage="PreExecRule", status="InProgress", uid="uid-b1", backupLocation="loc")
    )
    state = ports.scratch.backup("uid-b1")
    moved, _ = backup_stage.start(ports, obj, state, hold=False)
    for part in state.pending(group=state.VOLUMES_PENDING):
        state.finish(part, group=state.VOLUMES_PENDING)
        backup_stage.record_result(state, part.removeprefix("volume:"), {"status": "Successful"})
    dispatch_of(ports).clear()

    assert not backup_stage.resend_outstanding(ports.dispatch, moved, state)
    assert dispatch_of(ports).sent == [] and state.pending(group=state.VOLUMES_PENDING) == []


def _volumes_backup(fake: k.FakeCluster, ports: Ports, parts: list[str]) -> tuple[RawObject, BackupScratch]:
    volumes = [
        {"namespace": "app", "persistentVolumeClaim": p.split("/")[1], "status": "InProgress"} for p in parts
    ]
    obj = fake.put(
        k.backup(
            "b1",
            stage="Volumes",
            status="InProgress",
            uid="uid-b1",
            backupLocation="loc",
            status_fields={"volumes": volumes, "lastUpdateTimestamp": LONG_AGO},
        )
    )
    state = ports.scratch.backup("uid-b1")
    state.lay_out("Volumes")
    state.add_pending([backup_stage.VOLUME_PART_PREFIX + p for p in parts], group=state.VOLUMES_PENDING)
    return obj, state


def test_the_last_volume_finished_moves_the_backup_on_once_even_when_two_finish_together(
    fake: k.FakeCluster, ports: Ports
) -> None:
    parts = [f"app/v{i}" for i in range(2)]
    obj, state = _volumes_backup(fake, ports, parts)
    barrier = threading.Barrier(len(parts))
    errors: list[BaseException] = []

    def finish(part: str) -> None:
        try:
            barrier.wait()
            backup_stage.finish_part(ports, volume_message(part), state)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=finish, args=(p,)) for p in parts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert fake.status(obj)["stage"] == "Applications"
    assert len(dispatch_of(ports).to(Queue.EXPORT.value)) == 1
    assert fake.reasons() == ["StageChanged"]
    # The same finish delivered again moves nothing.
    backup_stage.finish_part(ports, volume_message(parts[0]), state)
    assert len(dispatch_of(ports).to(Queue.EXPORT.value)) == 1 and fake.reasons() == ["StageChanged"]


def test_a_volume_that_is_not_the_last_does_not_move_the_backup(fake: k.FakeCluster, ports: Ports) -> None:
    obj, state = _volumes_backup(fake, ports, ["app/a", "app/b"])
    backup_stage.finish_part(ports, volume_message("app/a"), state)
    assert fake.status(obj)["stage"] == "Volumes" and dispatch_of(ports).sent == []


def test_held_volumes_leave_the_advance_to_the_task_holding_the_rule(
    fake: k.FakeCluster, ports: Ports
) -> None:
    obj, state = _volumes_backup(fake, ports, ["app/a"])
    state.hold_volumes()
    backup_stage.finish_part(ports, volume_message("app/a"), state)
    assert fake.status(obj)["stage"] == "Volumes" and dispatch_of(ports).sent == []
    assert state.pending(group=state.VOLUMES_PENDING) == []


def test_complete_records_the_result_for_the_manifest_and_its_status_fields_in_the_status(
    fake: k.FakeCluster, ports: Ports
) -> None:
    obj, state = _volumes_backup(fake, ports, ["app/a", "app/b"])
    result = {"status": "Successful", "totalSize": 10, "bytesDone": 10, "treeId": "tree-1", "storedSize": 4}
    backup_stage.complete(ports, volume_message("app/a"), state, "app/a", result)

    entry = fake.status(obj)["volumes"][0]
    assert entry == {"namespace": "app", "persistentVolumeClaim": "a", "status": "Successful",
                     "totalSize": 10, "bytesDone": 10}  # fmt: skip
    assert fake.status(obj)["volumesProgress"] == "1/2"
    assert backup_stage.results(state) == {"app/a": result}
    assert state.pending(group=state.VOLUMES_PENDING) == ["volume:app/b"]


@pytest.mark.parametrize("kind", [Kind.APPLICATION_BACKUP, Kind.APPLICATION_RESTORE])
def test_a_volume_progress_write_is_a_heartbeat_for_the_stall_detection(
    fake: k.FakeCluster, ports: Ports, kind: Kind
) -> None:
    """A long volume writes only its progress: that must count as the operation being alive, or the
    watcher takes the stage for stalled and sends its message again every stall period."""
    builder = k.backup if kind == Kind.APPLICATION_BACKUP else k.restore
    volumes = [{"namespace": "app", "persistentVolumeClaim": "data", "status": "InProgress", "bytesDone": 0}]
    obj = fake.put(
        builder(
            "op",
            stage="Volumes",
            status="InProgress",
            status_fields={"volumes": volumes, "lastUpdateTimestamp": LONG_AGO, "triggerTimestamp": LONG_AGO},
        )
    )
    before = timeutil.utcnow()

    backup_stage.update_volume(ports, "app", "op", "app/data", {"bytesDone": 4096}, kind=kind)

    status = fake.status(obj)
    assert status["volumes"][0]["bytesDone"] == 4096
    written = timeutil.parse_time(status["lastUpdateTimestamp"])
    assert written is not None and written >= before - datetime.timedelta(seconds=1)
    assert status["elapsed"] and status["elapsed"] != "0s"
    assert status["stage"] == "Volumes" and fake.events == []  # a heartbeat, not a stage change


def test_a_volume_progress_write_retries_a_conflict_and_keeps_the_other_volumes_progress(
    fake: k.FakeCluster, ports: Ports
) -> None:
    obj, _state = _volumes_backup(fake, ports, ["app/a", "app/b"])
    fake.conflict_next("patch_status")
    backup_stage.update_volume(ports, "app", "b1", "app/b", {"status": "Failed", "reason": "gone"})
    backup_stage.update_volume(ports, "app", "b1", "app/a", {"bytesDone": 7})
    volumes = fake.status(obj)["volumes"]
    assert (volumes[0]["bytesDone"], volumes[1]["status"]) == (7, "Failed")
    assert fake.status(obj)["volumesProgress"] == "1/2"


def test_a_volume_progress_write_for_an_operation_that_is_gone_does_nothing(ports: Ports) -> None:
    backup_stage.update_volume(ports, "app", "gone", "app/a", {"bytesDone": 7})
