"""Claims restored from the CSI VolumeSnapshots a backup took: the pure planning and checks
(``davit.restore.snapshots``), and the restore handler on in-memory ports (``tests.unit.restore_world``)
with the snapshots in the fake API server: the same namespace through the backup's own snapshot, another
namespace through a copy, a snapshot that is gone, and a tenant's forged manifest."""

from __future__ import annotations

import copy
import datetime
from pathlib import Path
from typing import Any

import pytest

from davit.api.objects import RawObject
from davit.constants import Kind
from davit.format.layout import BackupRef
from davit.kube import csi
from davit.operations.messages import Message
from davit.restore import snapshots
from davit.restore.snapshots import SnapshotVolume
from davit.restore.tiers import TIERS, TierGroup
from tests.fakes import cluster as fakes
from tests.fakes.scratch import ScratchFactory
from tests.unit.restore_world import (
    ADMIN,
    BACKUP,
    BACKUP_UID,
    LOCATION,
    NAMESPACE,
    RESTORE,
    RESTORE_UID,
    World,
    configmap,
)

DRIVER = "dev.csi.davit.dev"
HANDLE = "snap-handle-1"


def volume(**changes: Any) -> SnapshotVolume:
    fields = {"namespace": NAMESPACE, "claim": "data", "snapshot": "b1-data-b0000000",
              "content": "snapcontent-1", "handle": HANDLE, "total_size": 2**30}  # fmt: skip
    return SnapshotVolume(**{**fields, **changes})


def snapshot_object(
    namespace: str = NAMESPACE, name: str = "b1-data-b0000000", claim: str = "data",
    backup_uid: str = BACKUP_UID, content: str = "snapcontent-1", uid: str = "snap-uid-1",
) -> RawObject:  # fmt: skip
    """The backup's VolumeSnapshot as the snapshotter left it: ready, bound to its content."""
    return {
        "apiVersion": snapshots.API_VERSION, "kind": "VolumeSnapshot",
        "metadata": {"name": name, "namespace": namespace, "uid": uid,
                     "labels": {csi.BACKUP_LABEL: BACKUP, csi.BACKUP_UID_LABEL: backup_uid}},
        "spec": {"source": {"persistentVolumeClaimName": claim}, "volumeSnapshotClassName": "csi-class"},
        "status": {"readyToUse": True, "boundVolumeSnapshotContentName": content, "restoreSize": "1Gi"},
    }  # fmt: skip


def content_object(snapshot: RawObject, name: str = "snapcontent-1", handle: str = HANDLE) -> RawObject:
    meta = snapshot["metadata"]
    return {
        "apiVersion": snapshots.API_VERSION, "kind": "VolumeSnapshotContent", "metadata": {"name": name},
        "spec": {"deletionPolicy": "Delete", "driver": DRIVER, "source": {"volumeHandle": "vol-1"},
                 "volumeSnapshotClassName": "csi-class",
                 "volumeSnapshotRef": {"kind": "VolumeSnapshot", "namespace": meta["namespace"],
                                       "name": meta["name"], "uid": meta["uid"]}},
        "status": {"readyToUse": True, "snapshotHandle": handle, "restoreSize": 2**30},
    }  # fmt: skip


def check(vol: SnapshotVolume, snapshot: RawObject | None, content: RawObject | None,
          restore_namespace: str = NAMESPACE) -> snapshots.Verified | str:  # fmt: skip
    return snapshots.verify(vol, snapshot, content, backup_uid=BACKUP_UID,
                            restore_namespace=restore_namespace, admin_namespace=ADMIN)  # fmt: skip


# --- the pure rules ----------------------------------------------------------------------------------


def test_the_manifests_successful_snapshot_volumes_are_read_and_odd_entries_left_out() -> None:
    manifest = {"volumes": [
        {"namespace": "app", "persistentVolumeClaim": "data", "mode": "snapshot", "status": "Successful",
         "volumeSnapshot": "s1", "volumeSnapshotContent": "c1", "snapshotHandle": "h1", "totalSize": 10},
        {"namespace": "app", "persistentVolumeClaim": "old", "mode": "snapshot", "status": "Failed",
         "volumeSnapshot": "s2"},
        {"namespace": "app", "persistentVolumeClaim": "fs", "mode": "filesystem", "status": "Successful",
         "tree": "t"},
        {"namespace": "app", "persistentVolumeClaim": "odd", "mode": "snapshot", "status": "Successful",
         "volumeSnapshot": ["not", "a", "name"]},
        "not an entry",
        {"namespace": "app", "persistentVolumeClaim": "sized", "mode": "snapshot", "status": "Successful",
         "volumeSnapshot": "s3", "totalSize": True},
    ]}  # fmt: skip
    assert snapshots.snapshot_volumes(manifest) == [
        SnapshotVolume("app", "data", "s1", "c1", "h1", 10),
        SnapshotVolume("app", "sized", "s3", "", "", 0),
    ]
    assert snapshots.snapshot_volumes({}) == []


def test_a_ready_snapshot_of_the_backup_is_verified_with_the_clusters_handle() -> None:
    snapshot = snapshot_object()
    verified = check(volume(), snapshot, content_object(snapshot))
    assert verified == snapshots.Verified(
        snapshot_uid="snap-uid-1", content="snapcontent-1", handle=HANDLE, driver=DRIVER,
        snapshot_class="csi-class", restore_size="1Gi",
    )  # fmt: skip
    # A manifest without a handle (an older backup) takes the cluster's.
    assert isinstance(check(volume(handle=""), snapshot, content_object(snapshot)), snapshots.Verified)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda s, c: (None, None), "is gone: the claim was not created"),
        (lambda s, c: ({**s, "metadata": {**s["metadata"], "deletionTimestamp": "now"}}, c), "being deleted"),
        (
            lambda s, c: (snapshot_object(backup_uid="someone-else"), c),
            "was not taken by this restore's backup",
        ),
        (lambda s, c: (snapshot_object(claim="other"), c), "is a snapshot of claim other, not of data"),
        (lambda s, c: ({**s, "status": {**s["status"], "readyToUse": False}}, c), "is not ready to use"),
        (lambda s, c: ({**s, "status": {"readyToUse": True}}, c), "is bound to no VolumeSnapshotContent"),
        (lambda s, c: (snapshot_object(content="snapcontent-2"), c), "the backup recorded snapcontent-1"),
        (lambda s, c: (s, None), "its VolumeSnapshotContent snapcontent-1 is gone"),
        (lambda s, c: (s, content_object(snapshot_object(uid="another"))), "bound to another VolumeSnapshot"),
        (lambda s, c: (s, {**c, "status": {}}), "has no snapshot handle"),
        (lambda s, c: (s, content_object(s, handle="other-handle")), "another snapshot than the backup"),
        (lambda s, c: (s, {**c, "spec": {**c["spec"], "driver": ""}}), "names no driver"),
    ],
)
def test_a_snapshot_that_is_not_usable_says_why(change: Any, expected: str) -> None:
    snapshot = snapshot_object()
    found, content = change(snapshot, content_object(snapshot))
    reason = check(volume(), found, content)
    assert isinstance(reason, str) and expected in reason, reason


def test_a_tenants_restore_uses_only_its_own_namespaces_snapshots() -> None:
    foreign = volume(namespace="victim")
    snapshot = snapshot_object(namespace="victim")
    reason = check(foreign, snapshot, content_object(snapshot))
    assert reason == ("VolumeSnapshot victim/b1-data-b0000000 is in namespace victim: a restore in namespace "
                      "app makes claims only from snapshots of app")  # fmt: skip
    # The admin namespace's restore may use any namespace's, given the rest holds.
    assert isinstance(check(foreign, snapshot, content_object(snapshot), restore_namespace=ADMIN),
                      snapshots.Verified)  # fmt: skip


def test_claims_get_the_backups_snapshot_in_its_namespace_and_a_copy_elsewhere() -> None:
    vols = [volume(), volume(namespace="other", claim="logs"), volume(claim="not-restored")]
    sources = snapshots.claim_sources(
        vols, {"other": "moved"}, {("app", "data"), ("moved", "logs")}, RESTORE, RESTORE_UID
    )
    assert sorted(sources) == ["app/data", "moved/logs"]
    same, moved = sources["app/data"], sources["moved/logs"]
    assert (same.data_source, same.copy, same.content_name) == ("b1-data-b0000000", False, "")
    assert (moved.data_source, moved.copy) == ("r1-logs-70000000", True)
    assert moved.content_name == "davit-moved-r1-logs-70000000"


def test_copy_names_stay_valid_and_distinct_when_long() -> None:
    long_claim = "c" * 250
    first = snapshots.copy_snapshot_name(RESTORE, long_claim, RESTORE_UID)
    second = snapshots.copy_snapshot_name(RESTORE, long_claim + "x", RESTORE_UID)
    assert len(first) <= 253 and len(second) <= 253 and first != second
    assert first.endswith("-70000000")
    assert len(snapshots.copy_content_name("n" * 63, first)) <= 253


def test_the_copy_is_a_retained_pre_provisioned_content_of_the_original_handle() -> None:
    snapshot = snapshot_object()
    verified = check(volume(), snapshot, content_object(snapshot))
    assert isinstance(verified, snapshots.Verified)
    content = snapshots.copied_content("davit-moved-x", "moved", "x", verified, RESTORE, RESTORE_UID)
    assert content["spec"] == {
        "deletionPolicy": "Retain", "driver": DRIVER, "source": {"snapshotHandle": HANDLE},
        "volumeSnapshotClassName": "csi-class",
        "volumeSnapshotRef": {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                              "namespace": "moved", "name": "x"},
    }  # fmt: skip
    assert content["metadata"]["labels"][snapshots.RESTORE_UID_LABEL] == RESTORE_UID
    made = snapshots.copied_snapshot("x", "moved", "davit-moved-x", verified, RESTORE, RESTORE_UID)
    assert made["spec"]["source"] == {"volumeSnapshotContentName": "davit-moved-x"}
    assert snapshots.made_by(made, RESTORE_UID) and not snapshots.made_by(made, "another")
    assert snapshots.same_copy(content, content)
    other = copy.deepcopy(content)
    other["spec"]["source"]["snapshotHandle"] = "another"
    assert not snapshots.same_copy(other, content)


def _copies(restore_uid: str, created: str) -> tuple[RawObject, RawObject]:
    snapshot = snapshot_object()
    verified = check(volume(), snapshot, content_object(snapshot))
    assert isinstance(verified, snapshots.Verified)
    content = snapshots.copied_content("davit-moved-x", "moved", "x", verified, RESTORE, restore_uid)
    made = snapshots.copied_snapshot("x", "moved", "davit-moved-x", verified, RESTORE, restore_uid)
    for item in (content, made):
        item["metadata"]["creationTimestamp"] = created
    return made, content


def test_copies_of_a_restore_that_is_gone_are_orphans_once_past_the_grace_period() -> None:
    now = datetime.datetime(2026, 12, 2, 12, 0, tzinfo=datetime.UTC)
    old, young = "2026-12-02T11:00:00Z", "2026-12-02T11:59:00Z"
    gone, live = _copies("uid-of-a-deleted-restore", old), _copies(RESTORE_UID, old)
    fresh = _copies("uid-of-a-restore-created-after-the-list", young)
    # A content that would delete its storage snapshot, or a snapshot that is no pre-provisioned copy,
    # is never taken for a copy, whatever its labels say.
    # (A snapshot bound to a Delete content would take the storage snapshot with it.)
    deleting = copy.deepcopy(gone[1])
    deleting["metadata"]["name"] = "davit-moved-deleting"
    deleting["spec"]["deletionPolicy"] = "Delete"
    bound_to_deleting = copy.deepcopy(gone[0])
    bound_to_deleting["spec"]["source"] = {"volumeSnapshotContentName": "davit-moved-deleting"}
    dynamic = copy.deepcopy(gone[0])
    dynamic["spec"]["source"] = {"persistentVolumeClaimName": "data"}
    unlabelled = snapshot_object()
    unlabelled["metadata"]["creationTimestamp"] = old

    items = [*gone, *live, *fresh, deleting, bound_to_deleting, dynamic, unlabelled]
    orphans = snapshots.orphaned_copies(items, {RESTORE_UID}, now, grace_seconds=600)

    assert orphans == list(gone)


def test_the_plan_makes_the_claims_from_their_snapshots_and_leaves_out_the_rest() -> None:
    def claim(name: str) -> RawObject:
        meta = {"name": name, "namespace": "app"}
        return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta,
                "spec": {"volumeName": f"pv-{name}", "storageClassName": "csi",
                         "dataSource": {"kind": "PersistentVolumeClaim", "name": "seed"},
                         "dataSourceRef": {"kind": "PersistentVolumeClaim", "name": "seed"}}}  # fmt: skip

    def pv(name: str, claim: str) -> RawObject:
        return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
                "spec": {"claimRef": {"namespace": "app", "name": claim}}}  # fmt: skip

    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "app"}}
    tiers = [TierGroup(TIERS[0], (pv("pv-data", "data"), pv("pv-gone", "gone"), pv("pv-keep", "keep"))),
             TierGroup(TIERS[1], (claim("data"), claim("gone"), claim("keep"), config))]  # fmt: skip
    sources = snapshots.claim_sources([volume()], {}, {("app", "data")}, RESTORE, RESTORE_UID)
    rewritten, removed = snapshots.rewrite_tiers(tiers, sources, {"app/gone"})

    items = {(o["kind"], o["metadata"]["name"]): o for g in rewritten for o in g.items}
    assert sorted(items) == [("ConfigMap", "c"), ("PersistentVolume", "pv-keep"),
                             ("PersistentVolumeClaim", "data"),
                             ("PersistentVolumeClaim", "keep")]  # fmt: skip
    data = items["PersistentVolumeClaim", "data"]["spec"]
    assert data == {
        "storageClassName": "csi",
        "dataSource": {
            "apiGroup": "snapshot.storage.k8s.io",
            "kind": "VolumeSnapshot",
            "name": "b1-data-b0000000",
        },
    }
    assert items["PersistentVolumeClaim", "keep"] == claim("keep")  # untouched
    assert sorted(o["metadata"]["name"] for o in removed) == ["gone", "pv-data", "pv-gone"]
    assert tiers[1].items[0] == claim("data")  # the input is not modified


def test_the_snapshot_labels_are_the_backups() -> None:
    assert snapshots.BACKUP_UID_LABEL == csi.BACKUP_UID_LABEL
    assert (snapshots.GROUP, snapshots.VERSION) == (csi.GROUP, csi.VERSION)


# --- the restore handler -------------------------------------------------------------------------------


def backed_up_claim(namespace: str = NAMESPACE, name: str = "data") -> RawObject:
    """A bound CSI claim as the backup stored it."""
    return {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": namespace, "uid": f"old-{name}", "resourceVersion": "5",
                     "annotations": {"pv.kubernetes.io/bind-completed": "yes"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                 "storageClassName": "csi", "volumeName": f"pvc-old-{name}"},
        "status": {"phase": "Bound"},
    }  # fmt: skip


def manifest_volume(namespace: str = NAMESPACE, name: str = "data", **changes: Any) -> RawObject:
    return {
        "namespace": namespace, "persistentVolumeClaim": name, "volume": f"pvc-old-{name}", "driver": DRIVER,
        "mode": "snapshot", "status": "Successful", "reason": "", "volumeSnapshot": "b1-data-b0000000",
        "volumeSnapshotContent": "snapcontent-1", "volumeSnapshotClass": "csi-class", "restoreSize": "1Gi",
        "totalSize": 2**30, "bytesDone": 2**30, "snapshotHandle": HANDLE, **changes,
    }  # fmt: skip


def write_backup(world: World, namespace: str, objects: list[RawObject], volumes: list[RawObject]) -> None:
    """A complete backup in ``namespace`` (``World.write_backup`` for any namespace)."""
    world.cluster.put(fakes.backup(BACKUP, namespace, stage="Final", status="Successful", uid=BACKUP_UID,
                                   backupLocation=LOCATION, namespaces=[NAMESPACE]))  # fmt: skip
    repository = world.stores.repository(namespace, LOCATION)
    ref = BackupRef(namespace, BACKUP, BACKUP_UID)
    info = repository.write_part(ref, f"{NAMESPACE}/v1/objects", objects)
    repository.write_manifest(ref, {
        "backup": {"metadata": {"namespace": namespace, "name": BACKUP, "uid": BACKUP_UID}},
        "parts": [{"part": info.part, "key": info.key, "count": info.count}],
        "volumes": volumes,
    })  # fmt: skip


def provisioner(world: World) -> Any:
    """Stands in for a CSI provisioner (runs where the Volumes stage waits): binds every claim made from
    a VolumeSnapshot to a new CSI volume."""

    def provision(_seconds: float) -> None:
        for claim in world.cluster.of_kind("PersistentVolumeClaim"):
            source = (claim.get("spec") or {}).get("dataSource") or {}
            if source.get("kind") != "VolumeSnapshot" or (claim.get("status") or {}).get("phase") == "Bound":
                continue
            meta = claim["metadata"]
            name = f"pvc-{meta['uid']}"
            world.cluster.put(
                {**claim, "spec": {**claim["spec"], "volumeName": name}, "status": {"phase": "Bound"}},
                fakes.volume(name, claim=(meta["namespace"], meta["name"]), driver=DRIVER),
            )

    return provision


@pytest.fixture
def world(tmp_path: Path, scratch_factory: ScratchFactory, monkeypatch: pytest.MonkeyPatch) -> World:
    made = World.create(tmp_path, scratch_factory)
    made.cluster.put(fakes.location(LOCATION, ADMIN))
    monkeypatch.setattr("davit_services.restore.volumes.time.sleep", provisioner(made))
    return made


def with_snapshot(world: World, namespace: str = NAMESPACE) -> RawObject:
    snapshot = world.cluster.put(snapshot_object(namespace=namespace))
    world.cluster.put(content_object(snapshot))
    return snapshot


def events(world: World, reason: str) -> list[str]:
    return [e.message for e in world.cluster.events if e.reason == reason]


def test_a_claim_is_restored_from_the_backups_snapshot_in_its_namespace(world: World) -> None:
    with_snapshot(world)
    world.write_backup([backed_up_claim()], [manifest_volume()])
    world.deliver(world.new_restore())
    status = world.status()
    assert status["volumes"] == [
        {"namespace": NAMESPACE, "persistentVolumeClaim": "data", "volume": "", "driver": "",
         "mode": "snapshot", "status": "Pending", "reason": "", "totalSize": 2**30, "bytesDone": 0},
    ]  # fmt: skip
    world.run()

    claim = world.objects("PersistentVolumeClaim")["data"]
    assert claim["spec"]["dataSource"] == {
        "apiGroup": "snapshot.storage.k8s.io",
        "kind": "VolumeSnapshot",
        "name": "b1-data-b0000000",
    }
    status = world.status()
    assert (status["stage"], status["status"]) == ("Final", "Successful"), status
    (entry,) = status["volumes"]
    assert (entry["mode"], entry["status"], entry["volume"], entry["driver"], entry["bytesDone"]) == (
        "snapshot",
        "Successful",
        claim["spec"]["volumeName"],
        DRIVER,
        2**30,
    )
    assert entry["reason"] == f"provisioned from VolumeSnapshot {NAMESPACE}/b1-data-b0000000"
    assert status["volumesProgress"] == "1/1"
    assert events(world, "VolumeRestoredFromSnapshot") == [
        f"claim {NAMESPACE}/data provisioned from VolumeSnapshot {NAMESPACE}/b1-data-b0000000 "
        f"(volume {claim['spec']['volumeName']})"
    ]
    # No copy in its own namespace, and the backup's snapshot is left as it was.
    assert [c["metadata"]["name"] for c in world.cluster.of_kind("VolumeSnapshotContent")] == [
        "snapcontent-1"
    ]
    assert [s["metadata"]["name"] for s in world.cluster.of_kind("VolumeSnapshot")] == ["b1-data-b0000000"]


def test_a_claim_whose_snapshot_is_gone_is_not_created_and_the_restore_says_so(world: World) -> None:
    world.write_backup([backed_up_claim(), configmap("c")], [manifest_volume()])
    world.deliver(world.new_restore())
    world.run()

    assert world.objects("PersistentVolumeClaim") == {}
    assert "c" in world.objects("ConfigMap")
    status = world.status()
    assert (status["stage"], status["status"]) == ("Final", "PartialSuccess"), status
    (entry,) = status["volumes"]
    reason = ("VolumeSnapshot app/b1-data-b0000000 is gone: the claim was not created (it would have come "
              "back empty)")  # fmt: skip
    assert (entry["mode"], entry["status"], entry["reason"]) == ("snapshot", "Failed", reason)
    assert status["reason"] == f"volume {NAMESPACE}/data: {reason}"
    assert events(world, "VolumeSnapshotRestoreFailed") == [f"claim {NAMESPACE}/data: {reason}"]


def test_a_claim_restored_into_another_namespace_comes_from_a_copy_removed_at_the_end(world: World) -> None:
    with_snapshot(world)
    write_backup(world, ADMIN, [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
                                backed_up_claim()], [manifest_volume()])  # fmt: skip
    created: list[RawObject] = []
    create_object = world.cluster.create_object

    def recording(resource: Any, namespace: Any, body: RawObject) -> RawObject:
        if body["kind"] in ("Namespace", "PersistentVolumeClaim") or body["kind"].startswith(
            "VolumeSnapshot"
        ):
            # A copy is made once its namespace exists, right before its claim.
            created.append(copy.deepcopy(body))
        return create_object(resource, namespace, body)

    world.cluster.create_object = recording  # type: ignore[method-assign]
    world.deliver(world.new_restore(ADMIN, namespaceMapping={NAMESPACE: "moved"}))
    assert created == []  # nothing before the Applications stage: "moved" does not exist yet
    world.run()

    copy_name = "r1-data-70000000"
    assert [(o["kind"], o["metadata"]["name"]) for o in created] == [
        ("Namespace", "moved"), ("VolumeSnapshotContent", f"davit-moved-{copy_name}"),
        ("VolumeSnapshot", copy_name), ("PersistentVolumeClaim", "data"),
    ]  # fmt: skip
    content, made = created[1], created[2]
    assert content["metadata"]["labels"][snapshots.RESTORE_UID_LABEL] == RESTORE_UID
    assert content["spec"]["source"] == {"snapshotHandle": HANDLE}  # the cluster's, as the manifest has it
    assert (content["spec"]["deletionPolicy"], content["spec"]["driver"]) == ("Retain", DRIVER)
    assert content["spec"]["volumeSnapshotRef"]["namespace"] == "moved"
    assert (made["metadata"]["namespace"], made["spec"]["source"]) == (
        "moved", {"volumeSnapshotContentName": content["metadata"]["name"]})  # fmt: skip
    claim = world.objects("PersistentVolumeClaim", "moved")["data"]
    assert claim["spec"]["dataSource"]["name"] == copy_name
    status = world.status(ADMIN)
    assert (status["stage"], status["status"]) == ("Final", "Successful"), status
    assert status["volumes"][0]["reason"] == f"provisioned from VolumeSnapshot moved/{copy_name}"
    # The copies went at the end; the backup's snapshot and content stay.
    assert world.cluster.find("VolumeSnapshot", "moved", copy_name) is None
    assert [c["metadata"]["name"] for c in world.cluster.of_kind("VolumeSnapshotContent")] == [
        "snapcontent-1"
    ]
    assert world.cluster.find("VolumeSnapshot", NAMESPACE, "b1-data-b0000000") is not None


def test_a_copy_whose_snapshot_went_since_planning_is_not_written(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The snapshot is checked again right before the copy is written."""
    with_snapshot(world)
    write_backup(world, ADMIN, [backed_up_claim(), configmap("c")], [manifest_volume()])
    from davit_services.restore import snapshots as service

    planned = service.plan

    def plan_then_lose(*args: Any) -> Any:
        result = planned(*args)
        world.cluster.objects.pop(("VolumeSnapshot", NAMESPACE, "b1-data-b0000000"))
        return result

    monkeypatch.setattr(service, "plan", plan_then_lose)
    world.deliver(world.new_restore(ADMIN, namespaceMapping={NAMESPACE: "moved"}))
    world.run()

    assert [c["metadata"]["name"] for c in world.cluster.of_kind("VolumeSnapshotContent")] == [
        "snapcontent-1"
    ]
    assert world.objects("PersistentVolumeClaim", None) == {}
    status = world.status(ADMIN)
    assert (status["stage"], status["status"]) == ("Final", "PartialSuccess"), status
    assert "is gone" in status["volumes"][0]["reason"]


def test_a_tenants_forged_manifest_naming_another_namespaces_snapshot_creates_nothing(world: World) -> None:
    """The tenant of ``app`` maps namespace victim onto its own (allowed: it writes only into app) and
    rewrites its manifest to record the victim's real snapshot, hoping for a copy of the victim's data."""
    victim = with_snapshot(world, "victim")
    world.write_backup([backed_up_claim("victim")], [manifest_volume("victim")])
    world.cluster.calls.clear()
    world.deliver(world.new_restore(namespaceMapping={"victim": NAMESPACE}))
    world.run()

    # Listed from the (fake) API server: no content, no snapshot and no claim were made.
    assert [c["metadata"]["name"] for c in world.cluster.of_kind("VolumeSnapshotContent")] == [
        "snapcontent-1"
    ]
    assert [s["metadata"]["uid"] for s in world.cluster.of_kind("VolumeSnapshot")] == [
        victim["metadata"]["uid"]
    ]
    assert world.objects("PersistentVolumeClaim", None) == {}
    status = world.status()
    assert (status["stage"], status["status"]) == ("Final", "Failed"), status  # nothing came back
    assert (
        "a restore in namespace app makes claims only from snapshots of app" in status["volumes"][0]["reason"]
    )
    # The victim's snapshot was not even read on the tenant's behalf.
    assert "get_object" not in world.cluster.calls
    assert world.cluster.find(Kind.APPLICATION_RESTORE, NAMESPACE, RESTORE) is not None


def test_a_claim_that_was_already_there_is_retained_and_no_snapshot_is_used(world: World) -> None:
    with_snapshot(world)
    world.cluster.put(fakes.claim("data", NAMESPACE, volume="pv-live"))
    world.write_backup([backed_up_claim()], [manifest_volume()])
    world.deliver(world.new_restore())
    world.run()

    assert "dataSource" not in world.objects("PersistentVolumeClaim")["data"]["spec"]
    status = world.status()
    assert (status["stage"], status["status"]) == ("Final", "Successful"), status
    assert status["volumes"][0]["status"] == "Successful"
    assert "retained" in status["volumes"][0]["reason"]


def test_the_targets_of_a_lost_scratch_state_come_back_from_the_status_and_the_manifest() -> None:
    from davit_services.restore import snapshots as service

    obj = fakes.restore(RESTORE, ADMIN, stage="Volumes", uid=RESTORE_UID, backupName=BACKUP,
                        namespaceMapping={NAMESPACE: "moved"})  # fmt: skip
    entries = [
        {"namespace": "moved", "persistentVolumeClaim": "data", "mode": "snapshot", "status": "Pending"},
        {"namespace": "moved", "persistentVolumeClaim": "done", "mode": "snapshot", "status": "Successful"},
        {"namespace": "moved", "persistentVolumeClaim": "files", "mode": "filesystem", "status": "Pending"},
    ]
    obj["status"]["volumes"] = entries
    obj["metadata"]["name"] = RESTORE
    manifest = {"volumes": [manifest_volume(), manifest_volume(name="done")]}
    assert service.lost_targets(obj, manifest) == {
        "moved/data": {"snapshot": "r1-data-70000000", "snapshotNamespace": "moved", "size": 2**30}
    }
    obj["spec"]["namespaceMapping"] = {}
    obj["status"]["volumes"] = [{**entries[0], "namespace": NAMESPACE}]
    assert service.lost_targets(obj, manifest) == {
        f"{NAMESPACE}/data": {"snapshot": "b1-data-b0000000", "snapshotNamespace": NAMESPACE, "size": 2**30}
    }


def test_the_snapshots_a_backup_took_are_never_restored_as_objects() -> None:
    """Backed up with the namespace (they are its objects when the backup reads it), they are the
    backup's: restored, one would snapshot the restored claim it names."""
    from davit.restore.plan import plan_restore

    taken = snapshot_object()
    own = {**snapshot_object(name="users"), "metadata": {"name": "users", "namespace": NAMESPACE}}
    plan = plan_restore([taken, own], {}, backup_name=BACKUP, backup_uid=BACKUP_UID, restore_name=RESTORE,
                        restore_uid=RESTORE_UID, cluster_scoped_allowed=True)  # fmt: skip
    assert [o["metadata"]["name"] for o in plan.objects] == ["users"]
    (skipped,) = plan.skipped
    assert (skipped.source.name, skipped.code) == ("b1-data-b0000000", "NeverRestored")


def test_a_claim_from_a_snapshot_is_settled_after_the_scratch_state_was_lost(world: World) -> None:
    """Redis lost the Volumes stage's state: the claim's target comes back from the status and the
    manifest, and the claim, bound meanwhile, is settled as before (not failed StateLost)."""
    with_snapshot(world)
    world.write_backup([backed_up_claim()], [manifest_volume()])
    world.deliver(world.new_restore())
    obj = world.restore()
    entry = {"namespace": NAMESPACE, "persistentVolumeClaim": "data", "volume": "", "driver": "",
             "mode": "snapshot", "status": "Pending", "reason": "", "totalSize": 2**30,
             "bytesDone": 0}  # fmt: skip
    world.cluster.put({**obj, "status": {**obj["status"], "stage": "Volumes", "status": "InProgress",
                                         "volumes": [entry]}})  # fmt: skip
    claim = restore_snapshots_claim()
    world.cluster.put(claim)
    world.scratch.restore(RESTORE_UID).clear()  # the state is gone, its layout marker with it
    world.dispatch.clear()

    world.deliver(Message(Kind.APPLICATION_RESTORE, NAMESPACE, RESTORE, RESTORE_UID, "Volumes"))
    world.run()

    status = world.status()
    assert (status["stage"], status["status"]) == ("Final", "Successful"), status
    assert status["volumes"][0]["status"] == "Successful"
    assert status["volumes"][0]["reason"] == f"provisioned from VolumeSnapshot {NAMESPACE}/b1-data-b0000000"


def restore_snapshots_claim() -> RawObject:
    """The claim the restore made from the backup's snapshot, not bound yet."""
    claim = fakes.claim("data", NAMESPACE)
    claim["spec"]["dataSource"] = {
        "apiGroup": snapshots.GROUP,
        "kind": "VolumeSnapshot",
        "name": "b1-data-b0000000",
    }
    return claim
