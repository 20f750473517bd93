"""Snapshot mode against the real API server: the snapshot.storage.k8s.io/v1 CRDs installed from
tests/fixtures/snapshot-crds, a VolumeSnapshotClass for the dev CSI driver and the test controller
(tests/snapshotter.py) standing in for the external-snapshotter and the driver. Nothing else is faked:
the VolumeSnapshot is created, bound and waited for through the API server.

The module installs the CRDs (and removes them at its end unless they were there before) and removes its
VolumeSnapshotClass at its end, so later tests see no snapshot class, as before.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from davit.format.layout import BackupRef
from davit.kube import clients, csi
from davit.volumes.claims import VolumePlan, plan_volume
from tests.conftest import REPO_ROOT, StackEnv
from tests.helpers import wait_for
from tests.integration.conftest import Services
from tests.integration.test_backup_resources import (
    apply,
    backup_manifest,
    location_manifest,
    repository_for,
    wait_final,
)
from tests.snapshotter import DRIVER, SnapshotController

pytestmark = pytest.mark.integration

CRD_DIR = REPO_ROOT / "tests" / "fixtures" / "snapshot-crds"
CRDS = (
    "volumesnapshotclasses.snapshot.storage.k8s.io",
    "volumesnapshots.snapshot.storage.k8s.io",
    "volumesnapshotcontents.snapshot.storage.k8s.io",
)
GROUP, VERSION = "snapshot.storage.k8s.io", "v1"


def _get_json(stack: StackEnv, *args: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(stack.kubectl("get", *args, "-o", "json").stdout)
    return result


@pytest.fixture(scope="module")
def snapshot_crds(stack: StackEnv) -> Iterator[None]:
    existing = {
        line.removeprefix("customresourcedefinition.apiextensions.k8s.io/")
        for line in stack.kubectl("get", "crd", "-o", "name").stdout.split()
    }
    installed_here = not set(CRDS) <= existing
    stack.kubectl("apply", "-f", str(CRD_DIR))
    stack.kubectl("wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{c}" for c in CRDS))
    yield
    if installed_here:
        stack.kubectl("delete", "-f", str(CRD_DIR), "--ignore-not-found", "--timeout=60s", check=False)


@pytest.fixture(scope="module")
def api(stack: StackEnv) -> client.ApiClient:
    return clients.api_client(stack.kubeconfig)


@pytest.fixture(scope="module")
def snapshot_class(snapshot_crds: None, api: client.ApiClient) -> Iterator[str]:
    name = f"t-davit-csi-{uuid.uuid4().hex[:8]}"
    custom = client.CustomObjectsApi(api)
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "VolumeSnapshotClass",
        "metadata": {"name": name},
        "driver": DRIVER,
        "deletionPolicy": "Delete",
    }

    def create() -> bool:
        try:
            custom.create_cluster_custom_object(GROUP, VERSION, "volumesnapshotclasses", body)
        except ApiException as exc:
            if exc.status != 409:
                raise
        return True

    # Right after Established the new resource may still be missing from the API server's handlers.
    wait_for("the VolumeSnapshotClass to be created", create)
    yield name
    try:
        custom.delete_cluster_custom_object(GROUP, VERSION, "volumesnapshotclasses", name)
    except ApiException as exc:
        if exc.status != 404:
            raise


@pytest.fixture(scope="module")
def controller(stack: StackEnv, snapshot_class: str, api: client.ApiClient) -> Iterator[SnapshotController]:
    snapshotter = SnapshotController(clients.api_client(stack.kubeconfig))  # a connection pool of its own
    snapshotter.start()
    yield snapshotter
    snapshotter.stop()
    custom = client.CustomObjectsApi(api)
    for content in sorted(snapshotter.contents):
        try:
            custom.delete_cluster_custom_object(GROUP, VERSION, "volumesnapshotcontents", content)
        except ApiException as exc:
            if exc.status != 404:
                raise


@pytest.fixture
def snapshotter(controller: SnapshotController) -> Iterator[SnapshotController]:
    """The controller, answering "ready" again after the test whatever the test made it do."""
    yield controller
    controller.behave("ready")


@pytest.fixture(scope="module")
def csi_claim(stack: StackEnv, api: client.ApiClient, snapshot_class: str) -> Iterator[VolumePlan]:
    """A hand-made CSI PersistentVolume of the dev driver and a claim bound to it, in a namespace of its
    own, planned for snapshot mode as the backup plans it. Shared by the module's tests (each takes its
    snapshots as a backup of its own uid): the PV controller binds a pre-bound claim only at its periodic
    resync, which takes seconds."""
    core = client.CoreV1Api(api)
    suffix = uuid.uuid4().hex[:10]
    namespace, pv_name = f"t-csi-{suffix}", f"t-csi-{suffix}"
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": pv_name},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "volumeMode": "Filesystem",
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": namespace,
                         "name": "data"},
            "csi": {"driver": DRIVER, "volumeHandle": f"vol-{pv_name}", "fsType": "ext4"},
        },
    }  # fmt: skip
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": namespace},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "",
            "volumeName": pv_name,
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
    stack.kubectl("create", "namespace", namespace)
    core.create_persistent_volume(pv)
    try:
        core.create_namespaced_persistent_volume_claim(namespace, pvc)

        def bound() -> dict[str, Any] | None:
            claim = _get_json(stack, "-n", namespace, "pvc", "data")
            return claim if claim.get("status", {}).get("phase") == "Bound" else None

        claim = wait_for("the claim to bind to the CSI volume", bound, timeout=60)
        classes = client.CustomObjectsApi(api).list_cluster_custom_object(
            GROUP, VERSION, "volumesnapshotclasses"
        )
        drivers = {str(c.get("driver")) for c in classes["items"]}
        plan = plan_volume(claim, _get_json(stack, "pv", pv_name), [], None, drivers)
        assert plan.mode == "snapshot", plan
        yield plan
    finally:
        # The namespace takes the claim and the VolumeSnapshots along (the controller, their contents).
        stack.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        stack.kubectl("delete", "pv", pv_name, "--wait=false", "--ignore-not-found", check=False)


def _snapshots(stack: StackEnv, namespace: str, backup_uid: str) -> list[dict[str, Any]]:
    """The VolumeSnapshots of one backup."""
    selector = f"davit.dev/backup-uid={backup_uid}"
    items: list[dict[str, Any]] = _get_json(stack, "-n", namespace, "volumesnapshots", "-l", selector)[
        "items"
    ]
    return items


def test_a_snapshot_is_taken_waited_for_and_recorded(
    stack: StackEnv, api: client.ApiClient, snapshotter: SnapshotController, snapshot_class: str,
    csi_claim: VolumePlan,
) -> None:  # fmt: skip
    backup_uid = str(uuid.uuid4())
    snapshotter.behave("ready", delay=2)  # not ready at once: the wait has to watch for it
    started = time.monotonic()
    result = csi.snapshot_volume(api, csi_claim, "nightly", backup_uid, timeout_seconds=60)
    assert time.monotonic() - started >= 1.5

    name = f"nightly-data-{backup_uid.replace('-', '')[:8]}"
    [snapshot] = _snapshots(stack, csi_claim.namespace, backup_uid)
    assert snapshot["metadata"]["name"] == name
    assert snapshot["metadata"]["labels"] == {
        "davit.dev/backup": "nightly",
        "davit.dev/backup-uid": backup_uid,
    }
    assert snapshot["spec"] == {
        "source": {"persistentVolumeClaimName": "data"},
        "volumeSnapshotClassName": snapshot_class,
    }
    status = snapshot["status"]
    assert status["readyToUse"] is True
    assert status["restoreSize"] == "1Gi"
    assert status["creationTime"]
    assert result == {
        "status": "Successful",
        "reason": "",
        "volumeSnapshot": name,
        "volumeSnapshotContent": status["boundVolumeSnapshotContentName"],
        "volumeSnapshotClass": snapshot_class,
        "restoreSize": "1Gi",
        "totalSize": 2**30,
        "bytesDone": 2**30,
        "snapshotHandle": f"snap-{snapshot['metadata']['uid']}",
    }
    # The content it is bound to points back at it.
    content = _get_json(stack, "volumesnapshotcontent", result["volumeSnapshotContent"])
    assert content["spec"]["volumeSnapshotRef"]["name"] == name
    assert content["spec"]["volumeSnapshotRef"]["uid"] == snapshot["metadata"]["uid"]
    assert content["spec"]["source"] == {"volumeHandle": f"vol-{csi_claim.volume}"}
    assert content["status"]["readyToUse"] is True
    assert content["status"]["restoreSize"] == 2**30


def test_taking_it_again_is_idempotent(
    stack: StackEnv, api: client.ApiClient, snapshotter: SnapshotController, csi_claim: VolumePlan
) -> None:
    backup_uid = str(uuid.uuid4())
    first = csi.snapshot_volume(api, csi_claim, "nightly", backup_uid, timeout_seconds=60)
    [snapshot] = _snapshots(stack, csi_claim.namespace, backup_uid)

    second = csi.snapshot_volume(api, csi_claim, "nightly", backup_uid, timeout_seconds=60)
    assert second == first
    [again] = _snapshots(stack, csi_claim.namespace, backup_uid)
    assert again["metadata"]["uid"] == snapshot["metadata"]["uid"]
    contents = _get_json(stack, "volumesnapshotcontents")["items"]
    bound_here = [c for c in contents if c["spec"]["volumeSnapshotRef"]["uid"] == snapshot["metadata"]["uid"]]
    assert len(bound_here) == 1

    # Another backup of the same claim (a new uid) takes a snapshot of its own.
    other_uid = str(uuid.uuid4())
    other = csi.snapshot_volume(api, csi_claim, "nightly", other_uid, timeout_seconds=60)
    assert other["volumeSnapshot"] != first["volumeSnapshot"]
    assert len(_snapshots(stack, csi_claim.namespace, other_uid)) == 1
    assert len(_snapshots(stack, csi_claim.namespace, backup_uid)) == 1


def test_a_snapshot_never_ready_times_out(
    stack: StackEnv, api: client.ApiClient, snapshotter: SnapshotController, csi_claim: VolumePlan
) -> None:
    snapshotter.behave("never")
    backup_uid = str(uuid.uuid4())
    name = csi.snapshot_name("nightly", "data", backup_uid)
    started = time.monotonic()
    with pytest.raises(csi.SnapshotTimeout) as raised:
        csi.snapshot_volume(api, csi_claim, "nightly", backup_uid, timeout_seconds=3)
    elapsed = time.monotonic() - started
    assert 3 <= elapsed < 10, elapsed
    message = str(raised.value)
    assert f"{csi_claim.namespace}/{name}" in message
    assert "after 3s" in message
    # The controller did bind it (the driver is "still cutting"); it is just not ready.
    [snapshot] = _snapshots(stack, csi_claim.namespace, backup_uid)
    assert snapshot["status"]["boundVolumeSnapshotContentName"]
    assert snapshot["status"]["readyToUse"] is False


def test_the_snapshotters_error_is_surfaced(
    api: client.ApiClient, snapshotter: SnapshotController, csi_claim: VolumePlan
) -> None:
    failure = (
        f"CreateSnapshot failed: rpc error: code = ResourceExhausted desc = quota {uuid.uuid4().hex[:6]}"
    )
    snapshotter.behave("error", error_message=failure)
    backup_uid = str(uuid.uuid4())
    started = time.monotonic()
    with pytest.raises(csi.SnapshotError) as raised:
        csi.snapshot_volume(api, csi_claim, "nightly", backup_uid, timeout_seconds=60)
    assert not isinstance(raised.value, csi.SnapshotTimeout)
    assert time.monotonic() - started < 30
    name = csi.snapshot_name("nightly", "data", backup_uid)
    assert str(raised.value) == f"VolumeSnapshot {csi_claim.namespace}/{name} failed: {failure}"


def test_a_snapshot_of_another_backup_under_the_same_name_is_not_taken_over(
    stack: StackEnv, api: client.ApiClient, snapshot_class: str, csi_claim: VolumePlan
) -> None:
    backup_uid = str(uuid.uuid4())
    name = csi.snapshot_name("nightly", "data", backup_uid)
    foreign = csi.snapshot_body(name, csi_claim, snapshot_class, "nightly", "someone-else")
    stack.kubectl("apply", "-f", "-", stdin=json.dumps(foreign))
    with pytest.raises(csi.SnapshotError, match="exists but was not created by this backup"):
        csi.snapshot_volume(api, csi_claim, "nightly", backup_uid, timeout_seconds=5)


def test_a_backup_through_the_services_snapshots_its_csi_volume(
    stack: StackEnv,
    csi_claim: VolumePlan,
    snapshotter: SnapshotController,
    services: Services,
    tmp_path: Path,
) -> None:
    namespace = csi_claim.namespace
    apply(stack, location_manifest(stack, "local", namespace, tmp_path))
    apply(stack, backup_manifest(namespace, "with-snapshot"))
    status = wait_final(stack, namespace, "with-snapshot", services, timeout=120)
    assert status["status"] == "Successful", status
    (volume,) = status["volumes"]
    assert (volume["mode"], volume["status"], volume["persistentVolumeClaim"]) == (
        "snapshot",
        "Successful",
        "data",
    )
    uid = _get_json(stack, "-n", namespace, "applicationbackup", "with-snapshot")["metadata"]["uid"]
    (snapshot,) = _snapshots(stack, namespace, uid)
    assert snapshot["status"]["readyToUse"] is True
    manifest = repository_for(location_manifest(stack, "local", namespace, tmp_path)).read_manifest(
        BackupRef(namespace, "with-snapshot", uid)
    )
    assert manifest["volumes"][0]["volumeSnapshot"] == snapshot["metadata"]["name"]


def test_deleting_a_snapshot_backup_deletes_its_volumesnapshots_only_with_reclaim_policy_delete(
    stack: StackEnv,
    csi_claim: VolumePlan,
    snapshotter: SnapshotController,
    snapshot_class: str,
    services: Services,
    tmp_path: Path,
) -> None:
    namespace = csi_claim.namespace
    location = location_manifest(stack, "local", namespace, tmp_path)
    apply(stack, location)
    # Another backup's snapshot of the same claim: deleting one backup must leave it alone.
    other_uid = str(uuid.uuid4())
    other = csi.snapshot_name("other", csi_claim.claim, other_uid)
    foreign = csi.snapshot_body(other, csi_claim, snapshot_class, "other", other_uid)
    stack.kubectl("apply", "-f", "-", stdin=json.dumps(foreign))
    policies = {"snap-delete": "Delete", "snap-retain": "Retain"}
    for name, policy in policies.items():
        apply(stack, backup_manifest(namespace, name, reclaimPolicy=policy))
    uids: dict[str, str] = {}
    snapshots: dict[str, str] = {}
    for name in policies:
        assert wait_final(stack, namespace, name, services)["status"] == "Successful"
        uids[name] = _get_json(stack, "-n", namespace, "applicationbackup", name)["metadata"]["uid"]
        (snapshot,) = _snapshots(stack, namespace, uids[name])
        snapshots[name] = snapshot["metadata"]["uid"]

    for name in policies:
        stack.kubectl("-n", namespace, "delete", "applicationbackup", name, "--wait=false")
    wait_for(
        "both backups to be gone",
        lambda: all(
            stack.kubectl("-n", namespace, "get", "applicationbackup", name, check=False).returncode != 0
            for name in policies
        ),
        timeout=60,
    )

    wait_for(
        "the VolumeSnapshot of the backup with reclaimPolicy Delete to be deleted",
        lambda: not _snapshots(stack, namespace, uids["snap-delete"]),
        timeout=30,
    )
    repository = repository_for(location)
    assert not repository.has_manifest(BackupRef(namespace, "snap-delete", uids["snap-delete"]))
    # Retain: the snapshot stays, untouched, like the data (the finalizer went after the decision, so a
    # deletion would have been asked for by now).
    (kept,) = _snapshots(stack, namespace, uids["snap-retain"])
    assert kept["metadata"]["uid"] == snapshots["snap-retain"]
    assert "deletionTimestamp" not in kept["metadata"]
    assert repository.has_manifest(BackupRef(namespace, "snap-retain", uids["snap-retain"]))
    (foreign,) = _snapshots(stack, namespace, other_uid)
    assert "deletionTimestamp" not in foreign["metadata"]
