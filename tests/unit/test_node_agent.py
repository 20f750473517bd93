"""The node agent backing up a volume, on in-memory fakes: the volume's directory is a real directory (a
local PersistentVolume's path below ``tmp_path``, derived from the fake API server's claim, volume and
pod), its files go into a real repository (``LocalStores``), and the outcome is the backup's status, its
scratch state and the messages sent.

Covered: a volume stored and recorded, the backup moving on after its last volume; a message delivered
again while another task holds the volume's lease, or for a volume no longer outstanding, or for a stage
the backup has left; a failure half-way (the location, the store, the status write) and the run that
follows; a conflict on the status write; a big volume cut into shards, each stored by its own message;
the directory refused when the plan in the scratch state disagrees with the API."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from davit.api.objects import RawObject
from davit.api.types import Stage, Status
from davit.constants import Kind, Queue, node_queue
from davit.format.repository import BackupRepository
from davit.operations.messages import Message
from davit.operations.ports import Ports
from davit.operations.scratch import BackupScratch
from davit.repo import RepoReader, ShardPlan, Tree, iter_entries, load_tree, restore_tree
from davit.repo.tree_format import tree_order
from davit.settings import Settings
from davit.storage.base import StorageError
from davit.volumes import backup_stage, mover
from davit.volumes.claims import plan_volume
from davit_services.uploader import agent
from tests.fakes import cluster as k
from tests.fakes.dispatch import FakeDispatch
from tests.fakes.scratch import ScratchFactory
from tests.fakes.stores import LocalStores

NODE = "node-1"
NAMESPACE = "app"
CLAIM_PART = f"{NAMESPACE}/data"
PART = backup_stage.VOLUME_PART_PREFIX + CLAIM_PART
FILES = {
    "a.txt": b"alpha\n" * 100,
    "dir/b.bin": os.urandom(50_000),
    "dir/sub/c.txt": b"gamma",
    "z.txt": b"last",
}


class Fixture:
    """A backup in its Volumes stage with one filesystem volume on this node, and the ports to run the
    agent with."""

    def __init__(
        self, tmp_path: Path, shard_entries: int = 100_000, namespaces: list[str] | None = None
    ) -> None:
        self.tmp_path = tmp_path
        self.data = tmp_path / "disks" / "pv-data"
        for name, body in FILES.items():
            path = self.data / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
        self.cluster = k.FakeCluster()
        self.cluster.put(k.location("loc", NAMESPACE))
        pvc = self.cluster.put(k.claim("data", NAMESPACE, volume="pv-data"))
        pv = self.cluster.put(
            k.volume("pv-data", claim=(NAMESPACE, "data"), local_path=str(self.data), node=NODE)
        )
        pod = self.cluster.put(k.pod("web", NAMESPACE, claims=["data"], node=NODE))
        self.plan = plan_volume(pvc, pv, [pod], None, set())
        assert (self.plan.mode, self.plan.source, self.plan.path) == ("filesystem", "local", str(self.data))
        self.backup = self.cluster.put(
            k.backup("b1", NAMESPACE, stage=Stage.VOLUMES.value, status=Status.IN_PROGRESS.value,
                     backupLocation="loc", namespaces=namespaces or [NAMESPACE],
                     status_fields={"volumes": [self.plan.status_entry()], "volumesProgress": "0/1"})
        )  # fmt: skip
        self.uid = self.backup["metadata"]["uid"]
        self.scratch = ScratchFactory()
        self.dispatch = FakeDispatch()
        self.stores = LocalStores(tmp_path / "locations", cluster=self.cluster)
        settings = Settings(
            node_name=NODE, kubelet_root=str(tmp_path / "kubelet"), volume_shard_entries=shard_entries
        )
        self.ports = Ports(self.cluster, self.scratch, self.dispatch, self.stores, settings)
        self.state.lay_out("Volumes")  # as the backup service laid the Volumes stage out
        self.state.save_volume_plans({CLAIM_PART: self.plan.__dict__})
        self.state.add_pending([PART], group=self.state.VOLUMES_PENDING)

    @property
    def state(self) -> BackupScratch:
        return self.scratch.backup(self.uid)

    def message(self, part: str = PART) -> Message:
        return Message(Kind.APPLICATION_BACKUP, NAMESPACE, "b1", self.uid, Stage.VOLUMES.value, part)

    def handle(self, part: str = PART) -> None:
        agent.handle(self.ports, self.message(part))

    def repository(self) -> BackupRepository:
        return self.stores.repository(NAMESPACE, "loc")

    def volume_status(self) -> dict[str, Any]:
        volumes = self.cluster.status(self.backup).get("volumes") or []
        assert len(volumes) == 1
        return dict(volumes[0])

    def stored_tree(self) -> Tree:
        repository = self.repository()
        tree_id = repository.get(agent.latest_key(NAMESPACE, "data")).decode()
        return load_tree(repository.store, repository.sealer, tree_id)

    def restored_files(self, tree: Tree) -> dict[str, bytes]:
        """The tree's files, read back from the repository into a fresh directory."""
        repository = self.repository()
        target = self.tmp_path / f"check-{tree.id[:12]}"
        target.mkdir()
        restore_tree(tree, target, RepoReader(repository.store, repository.sealer))
        return {
            str(path.relative_to(target)): path.read_bytes() for path in target.rglob("*") if path.is_file()
        }


@pytest.fixture
def fx(tmp_path: Path) -> Fixture:
    return Fixture(tmp_path)


def test_a_volume_is_stored_in_the_repository_and_recorded(fx: Fixture) -> None:
    fx.handle()

    tree = fx.stored_tree()
    assert fx.restored_files(tree) == FILES
    result = fx.state.volume_results()[CLAIM_PART]
    assert result["status"] == Status.SUCCESSFUL and result["tree"] == tree.id
    assert result["totalSize"] == sum(len(b) for b in FILES.values()) == tree.size
    assert result["bytesRead"] == tree.size and result["storedSize"] > 0
    status = fx.volume_status()
    assert (status["status"], status["reason"], status["bytesDone"]) == ("Successful", "", tree.size)
    # The last volume done moves the backup on to Applications, whose message goes to the resource writer.
    backup_status = fx.cluster.status(fx.backup)
    assert (backup_status["stage"], backup_status["volumesProgress"]) == ("Applications", "1/1")
    assert [m.stage for m in fx.dispatch.to(Queue.EXPORT)] == ["Applications"]
    assert fx.state.pending(group=fx.state.VOLUMES_PENDING) == []
    assert not any(name.startswith("lease:") for name in fx.scratch.names(fx.uid))
    assert fx.stores.opened[0] == (NAMESPACE, "loc", False)


def test_the_volume_stored_again_takes_unchanged_files_over(fx: Fixture) -> None:
    fx.handle()
    first = fx.state.volume_results()[CLAIM_PART]
    # The same volume again (as a task that failed after storing it and runs again would).
    fx.state.add_pending([PART], group=fx.state.VOLUMES_PENDING)
    obj = fx.cluster.require(Kind.APPLICATION_BACKUP, NAMESPACE, "b1")
    fx.cluster.patch_status(Kind.APPLICATION_BACKUP, obj, fx.backup["status"])

    fx.handle()

    again = fx.state.volume_results()[CLAIM_PART]
    assert again["tree"] == first["tree"] == fx.stored_tree().id
    assert fx.restored_files(fx.stored_tree()) == FILES
    # Unchanged files (same size, mtime and inode) are taken over from the previous tree unread.
    assert first["bytesRead"] > 0 and (again["bytesRead"], again["storedSize"]) == (0, 0)
    assert fx.volume_status()["status"] == "Successful"


def test_the_same_message_while_another_task_holds_the_lease_is_dropped(fx: Fixture) -> None:
    assert fx.state.take_lease(PART, "the-first-task", 30)

    fx.handle()

    assert fx.state.pending(group=fx.state.VOLUMES_PENDING) == [PART]
    assert fx.state.volume_results() == {}
    assert fx.volume_status()["status"] == "Pending"
    assert fx.stores.opened == [] and fx.dispatch.sent == []
    assert "patch_status" not in fx.cluster.calls
    # Once the first task let go of it (or its lease expired), a re-delivery stores the volume.
    fx.state.release_lease(PART, "the-first-task")
    fx.handle()
    assert fx.volume_status()["status"] == "Successful"
    assert fx.state.pending(group=fx.state.VOLUMES_PENDING) == []


def test_a_message_for_a_volume_no_longer_pending_does_nothing(fx: Fixture) -> None:
    fx.handle()
    # Still in its Volumes stage (another volume outstanding, say): only the part says this one is done.
    obj = fx.cluster.require(Kind.APPLICATION_BACKUP, NAMESPACE, "b1")
    obj = fx.cluster.patch_status(Kind.APPLICATION_BACKUP, obj, {"stage": "Volumes"})
    calls, sent, opened = len(fx.cluster.calls), len(fx.dispatch.sent), len(fx.stores.opened)

    fx.handle()  # the same message delivered again after the volume was done

    assert fx.cluster.calls[calls:] == ["get"]  # the check that the message is current, nothing else
    assert len(fx.dispatch.sent) == sent and len(fx.stores.opened) == opened
    after = fx.cluster.require(Kind.APPLICATION_BACKUP, NAMESPACE, "b1")
    assert after["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]
    assert fx.state.pending(group=fx.state.VOLUMES_PENDING) == []


def test_a_message_for_a_stage_the_backup_has_left_does_nothing(fx: Fixture) -> None:
    fx.cluster.patch_status(Kind.APPLICATION_BACKUP, fx.backup, {"stage": "Applications"})
    fx.handle()
    assert fx.state.pending(group=fx.state.VOLUMES_PENDING) == [PART] and fx.state.volume_results() == {}
    assert fx.stores.opened == [] and fx.dispatch.sent == []
    # Nor one for another backup of the same name (another uid).
    fx.cluster.patch_status(Kind.APPLICATION_BACKUP, fx.backup, {"stage": "Volumes"})
    agent.handle(fx.ports, replace(fx.message(), uid="another-uid"))
    assert fx.stores.opened == []


def test_a_message_of_another_kind_or_stage_is_not_the_agents(fx: Fixture) -> None:
    agent.handle(fx.ports, replace(fx.message(), stage=Stage.APPLICATIONS.value))
    agent.handle(fx.ports, replace(fx.message(), kind=Kind.APPLICATION_RESTORE))
    assert fx.cluster.calls == [] and fx.state.pending(group=fx.state.VOLUMES_PENDING) == [PART]


def test_an_unavailable_location_fails_the_volume_with_its_reason(fx: Fixture) -> None:
    fx.stores.unavailable[(NAMESPACE, "loc")] = "BackupLocation app/loc is unavailable: AccessDenied: no"

    fx.handle()

    status = fx.volume_status()
    assert (status["status"], status["reason"]) == (
        "Failed",
        "BackupLocation app/loc is unavailable: AccessDenied: no",
    )
    assert fx.state.volume_results()[CLAIM_PART]["status"] == "Failed"
    # A failed volume is done all the same: the backup moves on, and the manifest says why.
    assert fx.state.pending(group=fx.state.VOLUMES_PENDING) == []
    assert fx.cluster.status(fx.backup)["stage"] == "Applications"


def test_a_store_failing_half_way_fails_the_volume_with_its_reason(
    fx: Fixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = fx.repository().store
    real_put = store.put
    puts = [0]

    def put(key: str, data: bytes) -> None:
        puts[0] += 1
        if key.startswith("repo/") and puts[0] > 1:
            raise StorageError("SlowDown", "please reduce your request rate")
        real_put(key, data)

    monkeypatch.setattr(store, "put", put)
    fx.handle()

    status = fx.volume_status()
    assert status["status"] == "Failed"
    assert status["reason"] == "StorageError: SlowDown: please reduce your request rate"
    assert fx.state.volume_results()[CLAIM_PART] == {"status": "Failed", "reason": status["reason"]}
    with pytest.raises(Exception):  # noqa: B017 - no tree was recorded for the claim
        fx.stored_tree()
    assert fx.state.pending(group=fx.state.VOLUMES_PENDING) == []


def test_a_task_failing_on_its_last_status_write_runs_again_and_completes(fx: Fixture) -> None:
    writes = [0]
    real_patch_status = fx.cluster.patch_status

    def patch_status(kind: Kind, obj: RawObject, status: dict[str, Any], check_version: bool = False) -> Any:
        writes[0] += 1
        if writes[0] == 2:  # the first write is the volume's start, the second its result
            raise k.api_error(500)
        return real_patch_status(kind, obj, status, check_version)

    fx.cluster.patch_status = patch_status  # type: ignore[method-assign]
    with pytest.raises(Exception, match="Internal Server Error"):
        fx.handle()  # the worker retries the task
    assert fx.state.pending(group=fx.state.VOLUMES_PENDING) == [PART]
    assert not any(name.startswith("lease:") for name in fx.scratch.names(fx.uid))

    fx.handle()

    assert fx.volume_status()["status"] == "Successful"
    assert fx.restored_files(fx.stored_tree()) == FILES
    assert fx.cluster.status(fx.backup)["stage"] == "Applications"
    assert len(fx.dispatch.to(Queue.EXPORT)) == 1


def test_a_conflict_on_the_status_write_is_read_again_and_written(fx: Fixture) -> None:
    fx.cluster.conflict_next("patch_status", times=2)
    fx.handle()
    assert fx.volume_status()["status"] == "Successful"
    assert fx.cluster.status(fx.backup)["volumesProgress"] == "1/1"


def test_a_plan_naming_another_directory_is_refused(fx: Fixture, tmp_path: Path) -> None:
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir()
    (elsewhere / "shadow").write_text("secret")
    fx.state.save_volume_plans({CLAIM_PART: replace(fx.plan, path=str(elsewhere)).__dict__})

    fx.handle()

    status = fx.volume_status()
    assert status["status"] == "Failed"
    assert status["reason"].startswith("refused the volume's directory: the volume plan names the directory")
    assert fx.stores.opened == []  # nothing read, nothing stored


def test_a_claim_of_a_namespace_the_backup_does_not_cover_is_refused(tmp_path: Path) -> None:
    fx = Fixture(tmp_path, namespaces=["other"])

    fx.handle()

    assert fx.volume_status()["reason"].startswith(
        "refused the volume's directory: namespace app is not one this operation may act on"
    )


def test_a_missing_directory_fails_the_volume(fx: Fixture) -> None:
    for path in sorted(fx.data.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    fx.data.rmdir()
    fx.handle()
    assert fx.volume_status()["reason"] == (
        f"FileNotFoundError: volume directory {fx.data} not found on node {NODE}"
    )


# --- shards ------------------------------------------------------------------------------------------


@pytest.fixture
def sharded(tmp_path: Path) -> Fixture:
    return Fixture(tmp_path, shard_entries=2)


def _shard_messages(fx: Fixture) -> list[Message]:
    return fx.dispatch.to(node_queue(NODE))


def test_a_big_volume_is_cut_into_shards_each_sent_to_this_nodes_queue(sharded: Fixture) -> None:
    sharded.handle()

    shards = _shard_messages(sharded)
    assert [m.part for m in shards] == [f"{PART}#{i}" for i in range(len(shards))]
    assert len(shards) > 1
    assert all((m.uid, m.stage) == (sharded.uid, "Volumes") for m in shards)
    status = sharded.volume_status()
    assert (status["status"], status["totalSize"]) == ("InProgress", sum(len(b) for b in FILES.values()))
    # The volume is outstanding until its shards are done.
    assert sharded.state.pending(group=sharded.state.VOLUMES_PENDING) == [PART]
    group = BackupScratch.shard_group(CLAIM_PART)
    assert sharded.state.pending(group=group) == [str(i) for i in range(len(shards))]


def test_a_shard_message_stores_its_range(sharded: Fixture) -> None:
    sharded.handle()
    shards = _shard_messages(sharded)

    sharded.handle(shards[1].part)

    outcomes = dict(sharded.state.shard_outcomes(CLAIM_PART))
    assert list(outcomes) == [1]
    repository = sharded.repository()
    tree = load_tree(repository.store, repository.sealer, outcomes[1]["tree"])
    bounds = json.loads(sharded.state.group_plan(BackupScratch.shard_group(CLAIM_PART)) or "[]")
    start, end = ShardPlan(tuple(bytes.fromhex(b) for b in bounds), size=0, entries=0).range(1)
    paths = [e.path for e in iter_entries(repository.store, repository.sealer, tree) if e.path]
    assert paths and start is not None
    assert all(tree_order(start) <= tree_order(p) for p in paths)
    assert end is None or all(tree_order(p) < tree_order(end) for p in paths)
    assert sharded.volume_status()["status"] == "InProgress"
    assert sharded.state.pending(group=sharded.state.VOLUMES_PENDING) == [PART]


def test_the_last_shard_merges_the_volume(sharded: Fixture) -> None:
    sharded.handle()
    shards = _shard_messages(sharded)
    for message in reversed(shards):
        sharded.handle(message.part)

    tree = sharded.stored_tree()
    assert sharded.restored_files(tree) == FILES
    assert sharded.volume_status()["status"] == "Successful"
    assert sharded.state.volume_results()[CLAIM_PART]["tree"] == tree.id
    assert sharded.cluster.status(sharded.backup)["stage"] == "Applications"
    # A shard message delivered again after its shard was done does nothing (were the backup still in
    # its Volumes stage).
    obj = sharded.cluster.require(Kind.APPLICATION_BACKUP, NAMESPACE, "b1")
    sharded.cluster.patch_status(Kind.APPLICATION_BACKUP, obj, {"stage": "Volumes"})
    before, opened = len(sharded.cluster.calls), len(sharded.stores.opened)
    sharded.handle(shards[0].part)
    assert sharded.cluster.calls[before:] == ["get"] and len(sharded.stores.opened) == opened


def test_a_shard_message_while_another_task_holds_the_shard_is_dropped(sharded: Fixture) -> None:
    sharded.handle()
    part = _shard_messages(sharded)[0].part
    assert sharded.state.take_lease(part, "the-first-task", 30)
    sharded.handle(part)
    assert sharded.state.shard_outcomes(CLAIM_PART) == []


def test_the_volume_message_again_while_shards_are_out_sends_the_outstanding_ones(sharded: Fixture) -> None:
    sharded.handle()
    shards = _shard_messages(sharded)
    sharded.handle(shards[0].part)
    sharded.dispatch.clear()

    sharded.handle()  # a re-drive of the stalled stage

    assert [m.part for m in _shard_messages(sharded)] == [m.part for m in shards[1:]]


def test_a_failed_shard_fails_the_volume_with_the_shards_reason(
    sharded: Fixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    sharded.handle()
    shards = _shard_messages(sharded)
    sharded.stores.unavailable[(NAMESPACE, "loc")] = "BackupLocation app/loc is unavailable: gone"
    sharded.handle(shards[0].part)
    sharded.stores.unavailable.clear()
    for message in shards[1:]:
        sharded.handle(message.part)

    status = sharded.volume_status()
    assert (status["status"], status["reason"]) == (
        "Failed",
        "shard 0: BackupLocation app/loc is unavailable: gone",
    )
    assert sharded.state.pending(group=sharded.state.VOLUMES_PENDING) == []


# --- the data mover ------------------------------------------------------------------------------------


def moved(fx: Fixture, labels: dict[str, str] | None = None, read_claim: str = "") -> Path:
    """The volume planned as datamover and mounted as the backup service leaves it: the temporary claim
    made from its snapshot, bound to a CSI volume, mounted by a helper pod on this node, its files in the
    kubelet's directory for it. Returns that directory."""
    name = mover.derived_name("b1", "data", fx.uid)
    labels = mover.backup_labels("b1", fx.uid) if labels is None else labels
    source = fx.cluster.read_claim(NAMESPACE, "data")
    assert source is not None
    claim = mover.temp_claim(source, name, name, 0, labels)
    claim["spec"]["volumeName"] = f"pv-{name}"
    fx.cluster.put(claim, k.volume(f"pv-{name}", claim=(NAMESPACE, name), driver="csi.example.com"))
    pod = fx.cluster.put(k.pod("helper", NAMESPACE, claims=[name], node=NODE, uid="helper-uid"))
    mount = (
        fx.tmp_path
        / "kubelet"
        / "pods"
        / "helper-uid"
        / "volumes"
        / "kubernetes.io~csi"
        / f"pv-{name}"
        / "mount"
    )
    for file_name, body in FILES.items():
        path = mount / file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    plan = replace(fx.plan, mode="datamover", node=NODE, pod_uid=pod["metadata"]["uid"], source="pod",
                   path="", plugin_dir="kubernetes.io~csi", volume=f"pv-{name}",
                   read_claim=read_claim or name)  # fmt: skip
    fx.state.save_volume_plans({CLAIM_PART: plan.__dict__})
    # The source claim's own directory holds something else: what is read must be the snapshot's.
    (fx.data / "a.txt").write_bytes(b"changed after the snapshot")
    return mount


def test_a_datamover_volume_is_read_from_the_claim_made_from_its_snapshot(fx: Fixture) -> None:
    moved(fx)

    fx.handle()

    assert fx.volume_status()["status"] == "Successful"
    # Stored as the source claim's (the next backup of it is incremental against this tree).
    assert fx.restored_files(fx.stored_tree()) == FILES


def test_a_datamover_plan_naming_another_claim_to_read_is_refused(fx: Fixture) -> None:
    """Redis is not trusted: a plan pointing the agent at another claim of the namespace is refused."""
    moved(fx, read_claim="data")

    fx.handle()

    status = fx.volume_status()
    assert status["status"] == "Failed"
    assert status["reason"].startswith(
        "refused the volume's directory: the volume plan names the claim 'data'"
    )
    assert fx.stores.opened == []


def test_a_claim_of_the_temporary_name_not_made_by_the_backup_is_refused(fx: Fixture) -> None:
    moved(fx, labels={"app": "tenant"})

    fx.handle()

    status = fx.volume_status()
    assert status["status"] == "Failed"
    assert "it was not made by this operation" in status["reason"]
    assert fx.stores.opened == []
