"""The node agent restoring a volume, on in-memory fakes: a tree stored in a real repository
(``LocalStores``) with the backup's manifest recording it, the restore's target a real directory (a local
PersistentVolume's path below ``tmp_path``, derived from the fake API server's claim, volume and pod).

Covered: the files written and the marker left last, the volume recorded and the restore service asked to
finish; a message delivered again while another task holds the volume's lease (dropped while the holder
lives, taken over when it died), or after the volume was done, or before its target is known, or for a
stage the restore has left; a failure (the location, the status write) and the run that follows; a
conflict on the status write; a directory or a tree the API and the backup's manifest do not give
refused."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from davit.api.objects import RawObject
from davit.api.types import Stage, Status
from davit.constants import Kind, Queue
from davit.format.layout import BackupRef
from davit.format.repository import BackupRepository
from davit.operations.messages import Message
from davit.operations.ports import Ports
from davit.operations.scratch import RestoreScratch
from davit.repo import RepoWriter, Tree, snapshot_tree
from davit.restore.init_container import CONTAINER_NAME, MARKER_DIR, UID_ENV, is_restored
from davit.settings import Settings
from davit.volumes import restore_stage
from davit.volumes.claims import VolumePlan, restore_target
from davit_services.uploader import leases, restorer
from tests.fakes import cluster as k
from tests.fakes.dispatch import FakeDispatch
from tests.fakes.scratch import ScratchFactory
from tests.fakes.stores import LocalStores

NODE = "node-1"
NAMESPACE = "app"
CLAIM_PART = f"{NAMESPACE}/data"
PART = restore_stage.PART_PREFIX + CLAIM_PART
GROUP = restore_stage.GROUP
FILES = {
    "a.txt": b"alpha\n" * 100,
    "dir/b.bin": os.urandom(50_000),
    "dir/sub/c.txt": b"gamma",
}


class Fixture:
    """A backup of claim ``app/data`` stored in the location, and a restore of it in its Volumes stage
    whose target (the claim's new local volume) is on this node."""

    def __init__(self, tmp_path: Path, restore_namespace: str = NAMESPACE) -> None:
        self.tmp_path = tmp_path
        self.cluster = k.FakeCluster()
        self.cluster.put(k.location("loc", NAMESPACE))
        self.scratch = ScratchFactory()
        self.dispatch = FakeDispatch()
        self.stores = LocalStores(tmp_path / "locations", cluster=self.cluster)
        settings = Settings(node_name=NODE, kubelet_root=str(tmp_path / "kubelet"))
        self.ports = Ports(self.cluster, self.scratch, self.dispatch, self.stores, settings)

        backup = self.cluster.put(
            k.backup("b1", NAMESPACE, stage="Final", status="Successful", backupLocation="loc")
        )
        self.tree = self._store_tree()
        ref = BackupRef(NAMESPACE, "b1", backup["metadata"]["uid"])
        self.repository().write_manifest(ref, {"volumes": [
            {"namespace": NAMESPACE, "persistentVolumeClaim": "data", "mode": "filesystem",
             "status": "Successful", "tree": self.tree.id},
        ]})  # fmt: skip

        self.target = tmp_path / "disks" / "pv-new"
        self.target.mkdir(parents=True)
        pvc = self.cluster.put(k.claim("data", NAMESPACE, volume="pv-new"))
        pv = self.cluster.put(
            k.volume("pv-new", claim=(NAMESPACE, "data"), local_path=str(self.target), node=NODE)
        )
        pod = self.cluster.put(k.pod("web", NAMESPACE, claims=["data"], node=NODE, phase="Pending"))
        self.plan = restore_target(pvc, pv, pod)
        self.restore = self.cluster.put(
            k.restore("r1", restore_namespace, stage=Stage.VOLUMES.value, status=Status.IN_PROGRESS.value,
                      backupName="b1", backupLocation="loc",
                      status_fields={"volumes": [{"namespace": NAMESPACE, "persistentVolumeClaim": "data",
                                                  "status": "InProgress"}]})
        )  # fmt: skip
        self.uid = self.restore["metadata"]["uid"]
        self.restore_namespace = restore_namespace
        self.state.save_volume_targets({CLAIM_PART: {"tree": self.tree.id, "plan": self.plan.__dict__}})
        self.state.add_pending([PART], group=GROUP)
        self.stores.opened.clear()  # what the set-up opened

    def _store_tree(self) -> Tree:
        source = self.tmp_path / "source"
        for name, body in FILES.items():
            path = source / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
        repository = self.repository()
        writer = RepoWriter(repository.store, repository.sealer)
        try:
            tree = snapshot_tree(os.fspath(source), writer, None)
            writer.flush()
        finally:
            writer.close()
        return tree

    @property
    def state(self) -> RestoreScratch:
        return self.scratch.restore(self.uid)

    def set_plan(self, plan: VolumePlan, tree: str | None = None) -> None:
        self.state.set_volume_target(CLAIM_PART, {"tree": tree or self.tree.id, "plan": plan.__dict__})

    def message(self) -> Message:
        return Message(
            Kind.APPLICATION_RESTORE, self.restore_namespace, "r1", self.uid, Stage.VOLUMES.value, PART
        )

    def handle(self) -> None:
        restorer.handle(self.ports, self.message())

    def repository(self) -> BackupRepository:
        return self.stores.repository(NAMESPACE, "loc")

    def volume_status(self) -> dict[str, Any]:
        volumes = self.cluster.status(self.restore).get("volumes") or []
        assert len(volumes) == 1
        return dict(volumes[0])

    def written(self, directory: Path | None = None) -> dict[str, bytes]:
        root = directory or self.target
        return {
            str(path.relative_to(root)): path.read_bytes()
            for path in root.rglob("*")
            if path.is_file() and MARKER_DIR not in path.parts
        }

    def finish_messages(self) -> list[Message]:
        return [m for m in self.dispatch.to(Queue.RESTORE) if m.part == restore_stage.FINISH_PART]


@pytest.fixture
def fx(tmp_path: Path) -> Fixture:
    return Fixture(tmp_path)


def test_restoring_writes_the_files_and_leaves_the_marker_last(fx: Fixture) -> None:
    fx.handle()

    assert fx.written() == FILES
    assert is_restored(fx.target, fx.uid)
    status = fx.volume_status()
    assert (status["status"], status["reason"], status["totalSize"], status["bytesDone"]) == (
        "Successful", "", fx.tree.size, fx.tree.size,
    )  # fmt: skip
    assert fx.state.pending(group=GROUP) == []
    # The last volume done asks the restore service to finish the restore.
    assert [(m.uid, m.stage) for m in fx.finish_messages()] == [(fx.uid, "Volumes")]
    assert not any(name.startswith("lease:") for name in fx.scratch.names(fx.uid))
    assert any('"volume.restored"' in line for line in fx.state.log_lines())


def released_pod(fx: Fixture, restore_uid: str) -> None:
    """The restore's pod as the kubelet shows it once its init container (with ``restore_uid``) found
    every marker and ended: released, the application running on the volume."""
    pod = fx.cluster.find("Pod", NAMESPACE, "web")
    assert pod is not None
    wait = {"name": CONTAINER_NAME, "image": "davit:latest", "env": [{"name": UID_ENV, "value": restore_uid}]}
    done = {"name": CONTAINER_NAME, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
    fx.cluster.put({**pod, "spec": {**pod["spec"], "initContainers": [wait]},
                    "status": {"phase": "Running", "initContainerStatuses": [done]}})  # fmt: skip


def test_a_volume_whose_pod_this_restore_released_already_is_not_written_again(fx: Fixture) -> None:
    """Its first write finished and released the pod, then its task died before it reported the volume
    (seen with Redis restarting under the node agents): the message delivered again reports the volume
    without touching the files the application now runs on, and leaves no marker nothing would remove."""
    released_pod(fx, fx.uid)
    (fx.target / "app.log").write_text("written by the running application")

    fx.handle()

    assert fx.written() == {"app.log": b"written by the running application"}
    assert not (fx.target / MARKER_DIR).exists()
    status = fx.volume_status()
    assert (status["status"], status["totalSize"]) == ("Successful", fx.tree.size)
    assert fx.state.pending(group=GROUP) == []


def test_a_pod_released_by_another_restore_is_written_as_usual(fx: Fixture) -> None:
    released_pod(fx, "another-restore")

    fx.handle()

    assert fx.written() == FILES
    assert is_restored(fx.target, fx.uid)


def test_a_redelivered_message_for_a_volume_already_done_does_nothing(fx: Fixture) -> None:
    fx.handle()
    (fx.target / "a.txt").write_bytes(b"changed by the application since")
    calls, sent, opened = len(fx.cluster.calls), len(fx.dispatch.sent), len(fx.stores.opened)

    fx.handle()

    assert (fx.target / "a.txt").read_bytes() == b"changed by the application since"
    assert fx.cluster.status(fx.restore)["stage"] == "Volumes"  # still: the service finishes it
    assert fx.cluster.calls[calls:] == ["get"]  # the check that the message is current, nothing else
    assert len(fx.dispatch.sent) == sent and len(fx.stores.opened) == opened


@pytest.fixture
def short_wait(monkeypatch: pytest.MonkeyPatch) -> float:
    """The wait for another task's lease, in tenths of a second rather than half a minute."""
    monkeypatch.setattr(leases, "TAKEOVER_SECONDS", 0.5)
    monkeypatch.setattr(leases, "POLL_SECONDS", 0.02)
    return 0.5


def test_the_same_message_while_another_task_holds_the_lease_is_dropped(
    fx: Fixture, short_wait: float
) -> None:
    assert fx.state.take_lease(PART, "the-first-task", 30)  # alive: its lease outlasts the wait

    started = time.monotonic()
    fx.handle()

    assert time.monotonic() - started >= short_wait
    assert fx.written() == {} and not is_restored(fx.target, fx.uid)
    assert fx.state.pending(group=GROUP) == [PART]
    assert fx.stores.opened == [] and fx.dispatch.sent == []
    assert "patch_status" not in fx.cluster.calls
    # Once the first task let go of it, a re-delivery restores the volume.
    fx.state.release_lease(PART, "the-first-task")
    fx.handle()
    assert fx.written() == FILES and fx.volume_status()["status"] == "Successful"


def test_a_message_delivered_again_after_its_task_died_restores_the_volume(
    fx: Fixture, short_wait: float
) -> None:
    # The task holding the lease died: it stops renewing, and its lease expires within the wait.
    assert fx.state.take_lease(PART, "a-task-that-died", 0.2)

    fx.handle()

    assert fx.written() == FILES and is_restored(fx.target, fx.uid)
    assert fx.volume_status()["status"] == "Successful"
    assert fx.state.pending(group=GROUP) == [] and len(fx.finish_messages()) == 1


def test_a_message_waiting_for_a_task_that_then_finishes_the_volume_does_nothing(
    fx: Fixture, short_wait: float
) -> None:
    assert fx.state.take_lease(PART, "the-first-task", 30)

    def first_task_finishes() -> None:
        time.sleep(0.1)
        fx.state.finish(PART, group=GROUP)
        fx.state.release_lease(PART, "the-first-task")

    first = threading.Thread(target=first_task_finishes)
    first.start()
    fx.handle()
    first.join(5)

    assert fx.written() == {} and fx.stores.opened == []
    assert "patch_status" not in fx.cluster.calls


def test_a_task_finding_the_volume_done_once_it_holds_the_lease_does_nothing(
    fx: Fixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Between the check that the volume is outstanding and the lease, the first task finished it.
    state = fx.state
    real_take = RestoreScratch.take_lease

    def take_lease(self: RestoreScratch, part: str, owner: str, seconds: float) -> bool:
        state.finish(PART, group=GROUP)
        return real_take(self, part, owner, seconds)

    monkeypatch.setattr(RestoreScratch, "take_lease", take_lease)
    fx.handle()
    assert fx.written() == {} and fx.stores.opened == []
    assert "patch_status" not in fx.cluster.calls


def test_a_volume_whose_target_is_not_known_yet_waits(fx: Fixture) -> None:
    fx.state.set_volume_target(CLAIM_PART, {"tree": fx.tree.id})
    fx.handle()
    assert fx.written() == {} and fx.state.pending(group=GROUP) == [PART]
    assert "patch_status" not in fx.cluster.calls


def test_a_message_for_a_stage_the_restore_has_left_does_nothing(fx: Fixture) -> None:
    fx.cluster.patch_status(Kind.APPLICATION_RESTORE, fx.restore, {"stage": "Final"})
    fx.handle()
    restorer.handle(fx.ports, replace(fx.message(), stage=Stage.APPLICATIONS.value))
    assert fx.written() == {} and fx.state.pending(group=GROUP) == [PART]
    assert fx.stores.opened == []


def test_an_unavailable_location_fails_the_volume_with_its_reason(fx: Fixture) -> None:
    fx.stores.unavailable[(NAMESPACE, "loc")] = "BackupLocation app/loc is unavailable: AccessDenied: no"

    fx.handle()

    status = fx.volume_status()
    assert (status["status"], status["reason"]) == (
        "Failed",
        "BackupLocation app/loc is unavailable: AccessDenied: no",
    )
    assert fx.written() == {} and not is_restored(fx.target, fx.uid)
    # A failed volume is done all the same: the restore service finishes the restore.
    assert fx.state.pending(group=GROUP) == [] and len(fx.finish_messages()) == 1
    assert any('"volume.failed"' in line for line in fx.state.log_lines())


def test_a_task_failing_on_its_last_status_write_runs_again_and_completes(fx: Fixture) -> None:
    real_patch_status = fx.cluster.patch_status

    def patch_status(kind: Kind, obj: RawObject, status: dict[str, Any], check_version: bool = False) -> Any:
        if fx.cluster.calls.count("patch_status_failed") == 0:
            fx.cluster.calls.append("patch_status_failed")
            raise k.api_error(500)
        return real_patch_status(kind, obj, status, check_version)

    fx.cluster.patch_status = patch_status  # type: ignore[method-assign]
    with pytest.raises(Exception, match="Internal Server Error"):
        fx.handle()  # the worker retries the task
    assert fx.state.pending(group=GROUP) == [PART]
    assert not any(name.startswith("lease:") for name in fx.scratch.names(fx.uid))

    fx.handle()

    assert fx.written() == FILES and is_restored(fx.target, fx.uid)
    assert fx.volume_status()["status"] == "Successful"
    assert len(fx.finish_messages()) == 1


def test_a_conflict_on_the_status_write_is_read_again_and_written(fx: Fixture) -> None:
    fx.cluster.conflict_next("patch_status", times=2)
    fx.handle()
    assert fx.volume_status()["status"] == "Successful"


def test_a_directory_the_api_does_not_derive_is_refused(fx: Fixture) -> None:
    elsewhere = fx.tmp_path / "etc"
    elsewhere.mkdir()
    fx.set_plan(replace(fx.plan, path=str(elsewhere)))

    fx.handle()

    status = fx.volume_status()
    assert status["status"] == "Failed"
    assert status["reason"] == (
        f"refused the volume's directory: the volume plan names the directory {str(elsewhere)!r}, "
        f"volume pv-new of claim {CLAIM_PART} has the path {fx.target}"
    )
    assert list(elsewhere.iterdir()) == [] and fx.written() == {}
    assert fx.state.pending(group=GROUP) == [] and len(fx.finish_messages()) == 1


def test_a_pod_directory_of_a_pod_not_on_this_node_is_refused(fx: Fixture) -> None:
    fx.set_plan(
        replace(fx.plan, source="pod", path="", pod_uid="another-pod", plugin_dir="kubernetes.io~csi")
    )
    fx.handle()
    assert fx.volume_status()["reason"].startswith("refused the volume's directory: the volume plan names")


def test_a_claim_outside_the_restores_namespace_is_refused(tmp_path: Path) -> None:
    fx = Fixture(tmp_path, restore_namespace="other")
    fx.cluster.put(k.location("loc", "other"))

    fx.handle()

    assert fx.volume_status()["reason"] == (
        "refused the volume's directory: namespace app is not one this operation may act on (other)"
    )
    assert fx.written() == {}


def test_a_tree_the_backup_does_not_record_for_the_claim_is_refused(fx: Fixture) -> None:
    fx.set_plan(fx.plan, tree="0" * 64)

    fx.handle()

    reason = fx.volume_status()["reason"]
    assert reason.startswith(f"refused the volume's data: the tree '{'0' * 64}' handed out for {CLAIM_PART}")
    assert fx.written() == {} and not is_restored(fx.target, fx.uid)
