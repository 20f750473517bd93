"""Claims backed up as CSI VolumeSnapshots, restored from them through the real services: into the same
namespace (the claim's ``dataSource`` is the backup's own snapshot) and into another one (through a copy:
a pre-provisioned VolumeSnapshotContent of the original handle and a VolumeSnapshot bound to it), and a
tenant's forged manifest that names another namespace's snapshot.

The snapshot CRDs, the test snapshot controller and a stand-in CSI provisioner (``tests/snapshotter.py``)
stand in for the external-snapshotter, the driver and its external-provisioner: the provisioner makes a
claim's volume from the snapshot its ``dataSource`` names and records that snapshot's handle in the
volume's ``spec.csi.volumeAttributes``, which is how these tests see where the data came from.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from davit.format.layout import BackupRef
from davit.kube import clients
from tests.conftest import StackEnv
from tests.helpers import wait_for
from tests.integration import test_csi_snapshots, test_restore
from tests.integration.conftest import Services
from tests.integration.tenants import events_of
from tests.integration.test_backup_resources import apply, backup_manifest, location_manifest, repository_for
from tests.integration.test_backup_resources import wait_final as wait_backup
from tests.integration.test_restore import ADMIN, backup, restore
from tests.snapshotter import DRIVER, SOURCE_HANDLE_ATTRIBUTE, Provisioner, SnapshotController

#: A backup and a restore through every service each, on a machine shared with other work.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

# The fixtures of the snapshot tests (CRDs, class, controller) and the restore tests' admin location.
snapshot_crds = test_csi_snapshots.snapshot_crds
snapshot_class = test_csi_snapshots.snapshot_class
api = test_csi_snapshots.api
controller = test_csi_snapshots.controller
snapshotter = test_csi_snapshots.snapshotter
admin_location = test_restore.admin_location

GROUP, VERSION = "snapshot.storage.k8s.io", "v1"
#: How long a backup may take here (the machine is shared: minutes, not the usual seconds).
BACKUP_SECONDS = 400
RESTORE_UID_LABEL = "davit.dev/restore-uid"


@pytest.fixture(scope="module")
def storage_class(stack: StackEnv, snapshot_class: str) -> Iterator[str]:
    """A StorageClass of the dev CSI driver (immediate binding: there is no pod to wait for)."""
    name = f"t-davit-csi-{uuid.uuid4().hex[:8]}"
    apply(stack, {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
                  "provisioner": DRIVER, "reclaimPolicy": "Delete",
                  "volumeBindingMode": "Immediate"})  # fmt: skip
    yield name
    stack.kubectl("delete", "storageclass", name, "--ignore-not-found", check=False)


@pytest.fixture(scope="module")
def provisioner(stack: StackEnv, storage_class: str) -> Iterator[Provisioner]:
    running = Provisioner(clients.api_client(stack.kubeconfig))
    running.start()
    yield running
    running.stop()


def get_json(stack: StackEnv, *args: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(stack.kubectl("get", *args, "-o", "json").stdout)
    return result


def make_claim(stack: StackEnv, namespace: str, storage_class: str, name: str = "data") -> dict[str, Any]:
    """A claim of the CSI class, provisioned (empty) by the stand-in provisioner and bound."""
    apply(stack, {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                  "metadata": {"name": name, "namespace": namespace},
                  "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": storage_class,
                           "resources": {"requests": {"storage": "1Gi"}}}})  # fmt: skip
    return bound_claim(stack, namespace, name)


def bound_claim(stack: StackEnv, namespace: str, name: str = "data") -> dict[str, Any]:
    def bound() -> dict[str, Any] | None:
        claim = get_json(stack, "-n", namespace, "pvc", name)
        return claim if (claim.get("status") or {}).get("phase") == "Bound" else None

    return wait_for(f"claim {namespace}/{name} to be bound", bound, timeout=60)


def backup_snapshot(stack: StackEnv, namespace: str, backup_uid: str) -> tuple[dict[str, Any], str]:
    """The backup's VolumeSnapshot of its claim and the storage handle its content holds."""
    (snapshot,) = get_json(
        stack, "-n", namespace, "volumesnapshots", "-l", f"davit.dev/backup-uid={backup_uid}"
    )["items"]
    content = get_json(stack, "volumesnapshotcontent", snapshot["status"]["boundVolumeSnapshotContentName"])
    handle = content["status"]["snapshotHandle"]
    assert handle
    return snapshot, handle


def source_handle(stack: StackEnv, claim: dict[str, Any]) -> str:
    """The snapshot handle the provisioner made the claim's volume from ("" for an empty volume)."""
    pv = get_json(stack, "pv", claim["spec"]["volumeName"])
    return str(((pv["spec"].get("csi") or {}).get("volumeAttributes") or {}).get(SOURCE_HANDLE_ATTRIBUTE, ""))


def restore_copies(stack: StackEnv, restore_uid: str) -> list[str]:
    """Every VolumeSnapshot and VolumeSnapshotContent labelled with the restore's uid, listed from the API."""
    selector = f"{RESTORE_UID_LABEL}={restore_uid}"
    snapshots = get_json(stack, "volumesnapshots", "-A", "-l", selector)["items"]
    contents = get_json(stack, "volumesnapshotcontents", "-l", selector)["items"]
    return [f"VolumeSnapshot {s['metadata']['namespace']}/{s['metadata']['name']}" for s in snapshots] + [
        f"VolumeSnapshotContent {c['metadata']['name']}" for c in contents
    ]


def test_a_claim_is_restored_from_its_snapshot_in_its_own_namespace(
    stack: StackEnv, namespace: str, services: Services, snapshotter: SnapshotController,
    provisioner: Provisioner, storage_class: str, tmp_path: Path,
) -> None:  # fmt: skip
    """A tenant's backup in snapshot mode, its claim deleted, restored by the tenant's own restore."""
    original = make_claim(stack, namespace, storage_class)
    assert source_handle(stack, original) == ""  # provisioned empty
    apply(stack, location_manifest(stack, "local", namespace, tmp_path))
    apply(stack, backup_manifest(namespace, "snap", volumeMode="snapshot"))
    status = wait_backup(stack, namespace, "snap", services, timeout=BACKUP_SECONDS)
    assert status["status"] == "Successful", status
    backup_uid = get_json(stack, "-n", namespace, "applicationbackup", "snap")["metadata"]["uid"]
    snapshot, handle = backup_snapshot(stack, namespace, backup_uid)

    stack.kubectl("-n", namespace, "delete", "pvc", "data", "--wait=true", "--timeout=60s")
    apply(stack, {"apiVersion": "davit.dev/v1alpha1", "kind": "ApplicationRestore",
                  "metadata": {"name": "back", "namespace": namespace},
                  "spec": {"backupName": "snap", "backupLocation": "loc"}})  # fmt: skip
    restored = wait_restore(stack, services, namespace, "back")

    assert restored["status"] == "Successful", restored
    claim = bound_claim(stack, namespace)
    assert claim["spec"]["dataSource"] == {
        "apiGroup": GROUP, "kind": "VolumeSnapshot", "name": snapshot["metadata"]["name"]}  # fmt: skip
    assert claim["metadata"]["uid"] != original["metadata"]["uid"]
    assert claim["spec"]["volumeName"] != original["spec"]["volumeName"]
    # The snapshot it names is bound to a content of the original handle, and the volume was made from it.
    used = get_json(stack, "-n", namespace, "volumesnapshot", snapshot["metadata"]["name"])
    content = get_json(stack, "volumesnapshotcontent", used["status"]["boundVolumeSnapshotContentName"])
    assert content["status"]["snapshotHandle"] == handle
    assert source_handle(stack, claim) == handle
    (volume,) = restored["volumes"]
    assert (volume["persistentVolumeClaim"], volume["mode"], volume["status"], volume["volume"]) == (
        "data", "snapshot", "Successful", claim["spec"]["volumeName"])  # fmt: skip
    assert volume["reason"] == f"provisioned from VolumeSnapshot {namespace}/{snapshot['metadata']['name']}"
    assert restored["volumesProgress"] == "1/1"
    assert "VolumeRestoredFromSnapshot" in {e["reason"] for e in events_of(stack, namespace, "back")}
    restore_uid = get_json(stack, "-n", namespace, "applicationrestore", "back")["metadata"]["uid"]
    assert restore_copies(stack, restore_uid) == []  # the backup's own snapshot: no copy


def test_a_claim_is_restored_into_another_namespace_through_a_copy_of_its_snapshot(
    stack: StackEnv, namespace: str, services: Services, snapshotter: SnapshotController,
    provisioner: Provisioner, storage_class: str, admin_location: str,
) -> None:  # fmt: skip
    make_claim(stack, namespace, storage_class)
    stack.kubectl("-n", namespace, "create", "configmap", "settings", "--from-literal=a=b")
    name = f"csi-{uuid.uuid4().hex[:6]}"
    backup(stack, services, admin_location, namespace, name)
    backup_uid = get_json(stack, "-n", ADMIN, "applicationbackup", name)["metadata"]["uid"]
    snapshot, handle = backup_snapshot(stack, namespace, backup_uid)
    target = f"{namespace}-copy"
    try:
        status = restore(stack, services, admin_location, f"{name}-back", name,
                         namespaceMapping={namespace: target})  # fmt: skip
        assert status["status"] == "Successful", status

        claim = bound_claim(stack, target)
        source = claim["spec"]["dataSource"]
        restore_obj = get_json(stack, "-n", ADMIN, "applicationrestore", f"{name}-back")
        copy_name = f"{name}-back-data-{restore_obj['metadata']['uid'].replace('-', '')[:8]}"
        assert source == {"apiGroup": GROUP, "kind": "VolumeSnapshot", "name": copy_name}
        # Made from the original's storage snapshot, through the copy in the target namespace.
        assert source_handle(stack, claim) == handle
        (volume,) = status["volumes"]
        assert (volume["namespace"], volume["mode"], volume["status"]) == (target, "snapshot", "Successful")
        assert volume["reason"] == f"provisioned from VolumeSnapshot {target}/{copy_name}"
        assert stack.kubectl("-n", target, "get", "configmap", "settings", check=False).returncode == 0
        # The copies went when the restore ended; the backup's snapshot and its content are untouched.
        uid = restore_obj["metadata"]["uid"]
        wait_for("the restore's copies to be gone", lambda: restore_copies(stack, uid) == [], timeout=30)
        kept = get_json(stack, "-n", namespace, "volumesnapshot", snapshot["metadata"]["name"])
        assert (
            kept["metadata"]["uid"] == snapshot["metadata"]["uid"]
            and "deletionTimestamp" not in kept["metadata"]
        )
        content = get_json(stack, "volumesnapshotcontent", kept["status"]["boundVolumeSnapshotContentName"])
        assert content["status"]["snapshotHandle"] == handle
    finally:
        stack.kubectl("delete", "namespace", target, "--wait=false", check=False)


def test_a_tenants_manifest_naming_another_namespaces_snapshot_creates_nothing(
    stack: StackEnv, namespace: str, services: Services, snapshotter: SnapshotController,
    provisioner: Provisioner, storage_class: str, tmp_path: Path,
) -> None:  # fmt: skip
    """The tenant of ``namespace`` rewrites its own backup's manifest (its bucket, its credentials) to record
    the victim's real VolumeSnapshot, and restores it with namespaceMapping victim → its own namespace (which
    validation allows: every object lands in its namespace). No copy, no snapshot, no claim may result."""
    victim = f"victim-{uuid.uuid4().hex[:6]}"
    stack.kubectl("create", "namespace", victim)
    try:
        make_claim(stack, victim, storage_class)
        (tmp_path / "victim" / "store").mkdir(parents=True)
        (tmp_path / "tenant" / "store").mkdir(parents=True)
        apply(stack, location_manifest(stack, "local", victim, tmp_path / "victim"))
        apply(stack, backup_manifest(victim, "theirs", volumeMode="snapshot"))
        assert (
            wait_backup(stack, victim, "theirs", services, timeout=BACKUP_SECONDS)["status"] == "Successful"
        )
        victim_uid = get_json(stack, "-n", victim, "applicationbackup", "theirs")["metadata"]["uid"]
        victim_snapshot, victim_handle = backup_snapshot(stack, victim, victim_uid)

        stack.kubectl("-n", namespace, "create", "configmap", "mine", "--from-literal=a=b")
        location = location_manifest(stack, "local", namespace, tmp_path / "tenant")
        apply(stack, location)
        apply(stack, backup_manifest(namespace, "mine"))
        assert (
            wait_backup(stack, namespace, "mine", services, timeout=BACKUP_SECONDS)["status"] == "Successful"
        )
        uid = get_json(stack, "-n", namespace, "applicationbackup", "mine")["metadata"]["uid"]
        ref = BackupRef(namespace, "mine", uid)
        repository = repository_for(location)
        manifest = repository.read_manifest(ref)
        forged_claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                        "metadata": {"name": "stolen", "namespace": victim},
                        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": storage_class,
                                 "resources": {"requests": {"storage": "1Gi"}}}}  # fmt: skip
        info = repository.write_part(ref, f"{victim}/v1/persistentvolumeclaims", [forged_claim])
        manifest["parts"].append({"part": info.part, "key": info.key, "count": info.count,
                                  "rawSize": info.raw_size, "storedSize": info.stored_size,
                                  "resources": []})  # fmt: skip
        manifest["volumes"] = [{
            "namespace": victim, "persistentVolumeClaim": "stolen", "mode": "snapshot",
            "status": "Successful",
            "volumeSnapshot": victim_snapshot["metadata"]["name"],
            "volumeSnapshotContent": victim_snapshot["status"]["boundVolumeSnapshotContentName"],
            "snapshotHandle": victim_handle, "totalSize": 2**30,
        }]  # fmt: skip
        repository.write_manifest(ref, manifest)
        apply(stack, {"apiVersion": "davit.dev/v1alpha1", "kind": "ApplicationRestore",
                      "metadata": {"name": "steal", "namespace": namespace},
                      "spec": {"backupName": "mine", "backupLocation": "loc",
                               "namespaceMapping": {victim: namespace}}})  # fmt: skip
        status = wait_restore(stack, services, namespace, "steal")
        restore_uid = get_json(stack, "-n", namespace, "applicationrestore", "steal")["metadata"]["uid"]

        # Listed from the cluster: no copy anywhere, no snapshot and no claim in the tenant's namespace.
        assert restore_copies(stack, restore_uid) == []
        assert get_json(stack, "-n", namespace, "volumesnapshots")["items"] == []
        assert get_json(stack, "-n", namespace, "pvc")["items"] == []
        contents = get_json(stack, "volumesnapshotcontents")["items"]
        assert [
            c for c in contents if (c["spec"].get("volumeSnapshotRef") or {}).get("namespace") == namespace
        ] == []
        # The restore says why, volume by volume.
        (volume,) = status["volumes"]
        assert (volume["mode"], volume["status"]) == ("snapshot", "Failed"), volume
        assert (
            f"a restore in namespace {namespace} makes claims only from snapshots of {namespace}"
            in volume["reason"]
        )
        assert status["status"] == "PartialSuccess", status  # the ConfigMap came back
        assert "VolumeSnapshotRestoreFailed" in {e["reason"] for e in events_of(stack, namespace, "steal")}
        # The victim's snapshot is as it was.
        again = get_json(stack, "-n", victim, "volumesnapshot", victim_snapshot["metadata"]["name"])
        assert again["metadata"]["uid"] == victim_snapshot["metadata"]["uid"]
    finally:
        stack.kubectl("delete", "namespace", victim, "--wait=false", check=False)


def wait_restore(stack: StackEnv, services: Services, namespace: str, name: str) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        status: dict[str, Any] = (
            get_json(stack, "-n", namespace, "applicationrestore", name).get("status") or {}
        )
        return status if status.get("stage") == "Final" else None

    try:
        return wait_for(f"restore {namespace}/{name} to finish", final, timeout=400)
    except AssertionError:
        print(services.logs())
        raise


def _copy(stack: StackEnv, namespace: str, name: str, restore_uid: str, policy: str = "Retain") -> str:
    """A copy as a restore makes it (labelled with its uid): a content of a handle and a snapshot bound to
    it; returns the content's name."""
    content = f"davit-{namespace}-{name}"
    labels = {RESTORE_UID_LABEL: restore_uid}
    apply(stack, {"apiVersion": f"{GROUP}/{VERSION}", "kind": "VolumeSnapshotContent",
                  "metadata": {"name": content, "labels": labels},
                  "spec": {"deletionPolicy": policy, "driver": DRIVER,
                           "source": {"snapshotHandle": f"h-{name}"},
                           "volumeSnapshotRef": {"kind": "VolumeSnapshot", "namespace": namespace,
                                                 "name": name}}})  # fmt: skip
    apply(stack, {"apiVersion": f"{GROUP}/{VERSION}", "kind": "VolumeSnapshot",
                  "metadata": {"name": name, "namespace": namespace, "labels": labels},
                  "spec": {"source": {"volumeSnapshotContentName": content}}})  # fmt: skip
    return content


def test_the_snapshot_copies_of_a_deleted_restore_are_removed_and_nothing_else(
    stack: StackEnv, namespace: str, snapshot_crds: None, stack_services: Any
) -> None:
    """A restore deleted before its Final stage leaves its copies: the watcher deletes them at its next
    relist of the restores. A live restore's copies stay, and so does anything shaped otherwise (a
    content that would delete its storage snapshot), whatever its labels."""
    stack_services(DAVIT_SNAPSHOT_COPY_GRACE_SECONDS="0")
    # A restore that exists (it fails validation, and stays): its copies are not orphans.
    apply(stack, {"apiVersion": "davit.dev/v1alpha1", "kind": "ApplicationRestore",
                  "metadata": {"name": "alive", "namespace": namespace},
                  "spec": {"backupName": "nothing", "backupLocation": "nowhere"}})  # fmt: skip
    live_uid = get_json(stack, "-n", namespace, "applicationrestore", "alive")["metadata"]["uid"]
    gone_uid = str(uuid.uuid4())
    orphan = _copy(stack, namespace, "orphan", gone_uid)
    kept = _copy(stack, namespace, "kept", live_uid)
    deleting = _copy(stack, namespace, "deleting", gone_uid, policy="Delete")
    contents = [orphan, kept, deleting]

    def names(kind: str, *scope: str) -> set[str]:
        items = get_json(stack, *scope, kind, "-l", RESTORE_UID_LABEL)["items"]
        return {i["metadata"]["name"] for i in items}

    try:
        wait_for("the orphaned copy to be deleted", lambda: orphan not in names("volumesnapshotcontents"),
                 timeout=120)  # fmt: skip
        wait_for("the orphaned snapshot to be deleted",
                 lambda: "orphan" not in names("volumesnapshots", "-n", namespace), timeout=60)  # fmt: skip
        # Listed from the cluster: the live restore's copy and the Delete-policy content are there.
        assert {kept, deleting} <= names("volumesnapshotcontents")
        assert {"kept", "deleting"} <= names("volumesnapshots", "-n", namespace)
    finally:
        for content in contents:
            stack.kubectl("delete", "volumesnapshotcontent", content, "--ignore-not-found", "--wait=false",
                          check=False)  # fmt: skip
