"""The data mover through the real services: a CSI claim no pod mounts, with files in it, backed up with
``snapshotMoveData``, its claim deleted, restored, and the files compared byte for byte.

The stand-in CSI driver of ``tests/snapshotter.py`` keeps real files here (``data_root``, the dev
kubelet's volumes directory): a snapshot copies the volume's directory, a volume made from a snapshot
starts as a copy of it, and the dev kubelet shows a pod that mounts a CSI volume that volume's directory
(``docs/devstack.md``). What is checked is read from the API server and the volumes' directories, not
from Davit's status alone: the files, and that the helper pods, the temporary claim and the snapshot are
gone afterwards.
"""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from davit.format.layout import BackupRef
from davit.kube import clients
from devstack import demo_check
from devstack.kubelet import csi_volume_dir
from tests.conftest import StackEnv
from tests.helpers import wait_for
from tests.integration import test_csi_restore, test_csi_snapshots
from tests.integration.conftest import Services
from tests.integration.test_backup_resources import apply, backup_manifest, location_manifest, repository_for
from tests.integration.test_backup_resources import wait_final as wait_backup
from tests.snapshotter import Provisioner, SnapshotController

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

snapshot_crds = test_csi_snapshots.snapshot_crds
snapshot_class = test_csi_snapshots.snapshot_class
api = test_csi_snapshots.api
storage_class = test_csi_restore.storage_class
get_json = test_csi_restore.get_json
bound_claim = test_csi_restore.bound_claim
wait_restore = test_csi_restore.wait_restore

GROUP, VERSION = "snapshot.storage.k8s.io", "v1"
MOVER_LABEL = "davit.dev/data-mover"


def volumes_root(stack: StackEnv) -> Path:
    """The dev kubelet's ``--volumes`` directory of cluster a (``devstack.stack.Stack.volumes_root``)."""
    return stack.state_dir / "cluster-a" / "local-volumes"


@pytest.fixture(scope="module")
def data_snapshotter(stack: StackEnv, snapshot_class: str) -> Iterator[SnapshotController]:
    running = SnapshotController(clients.api_client(stack.kubeconfig), data_root=volumes_root(stack))
    running.start()
    yield running
    running.stop()
    for content in sorted(running.contents):
        stack.kubectl("delete", "volumesnapshotcontent", content, "--ignore-not-found", check=False)


@pytest.fixture(scope="module")
def data_provisioner(stack: StackEnv, storage_class: str) -> Iterator[Provisioner]:
    running = Provisioner(clients.api_client(stack.kubeconfig), data_root=volumes_root(stack))
    running.start()
    yield running
    running.stop()


def claim_directory(stack: StackEnv, claim: dict[str, Any]) -> Path:
    """Where the stand-in driver keeps the files of the claim's volume."""
    pv = get_json(stack, "pv", claim["spec"]["volumeName"])
    return csi_volume_dir(volumes_root(stack), pv["spec"]["csi"]["volumeHandle"])


def write_application_files(directory: Path) -> None:
    """What a database leaves on its volume: a table file, a log, many small files, a symlink."""
    rng = random.Random(7)  # noqa: S311 - test data, not a secret
    (directory / "db").mkdir(parents=True)
    (directory / "db" / "table.bin").write_bytes(rng.randbytes(3 << 20))
    (directory / "log.txt").write_text("".join(f"entry {i}\n" for i in range(20_000)))
    (directory / "small").mkdir()
    for i in range(50):
        (directory / "small" / f"f{i:03}").write_bytes(rng.randbytes(rng.randrange(1, 5000)))
    (directory / "current").symlink_to("db/table.bin")
    os.chmod(directory / "log.txt", 0o640)


def temporary_objects(stack: StackEnv, namespace: str) -> list[str]:
    """The data mover's pods and claims in the namespace, listed from the API server."""
    listed = get_json(stack, "-n", namespace, "pods,pvc", "-l", MOVER_LABEL)["items"]
    return sorted(f"{o['kind']} {o['metadata']['name']}" for o in listed)


def test_a_volume_moved_out_of_its_snapshot_comes_back_byte_for_byte(
    stack: StackEnv, namespace: str, services: Services, data_snapshotter: SnapshotController,
    data_provisioner: Provisioner, storage_class: str, tmp_path: Path,
) -> None:  # fmt: skip
    original = test_csi_restore.make_claim(stack, namespace, storage_class)
    write_application_files(claim_directory(stack, original))
    expected = demo_check.manifest(claim_directory(stack, original))
    assert len(expected) == 55
    apply(stack, location_manifest(stack, "local", namespace, tmp_path))
    apply(stack, backup_manifest(namespace, "moved", snapshotMoveData=True))

    status = wait_backup(stack, namespace, "moved", services, timeout=test_csi_restore.BACKUP_SECONDS)

    assert status["status"] == "Successful", status
    (volume,) = status["volumes"]
    assert (volume["persistentVolumeClaim"], volume["mode"], volume["status"]) == (
        "data",
        "datamover",
        "Successful",
    )
    assert volume["totalSize"] == demo_check.volume_totals(expected)[1]
    backup_uid = get_json(stack, "-n", namespace, "applicationbackup", "moved")["metadata"]["uid"]
    # The helper pod, the temporary claim and the snapshot are gone: the data is in the location.
    wait_for(
        "the data mover's objects to be gone", lambda: temporary_objects(stack, namespace) == [], timeout=60
    )
    snapshots = get_json(
        stack, "-n", namespace, "volumesnapshots", "-l", f"davit.dev/backup-uid={backup_uid}"
    )
    assert snapshots["items"] == [] or all("deletionTimestamp" in s["metadata"] for s in snapshots["items"])
    assert [c["metadata"]["name"] for c in get_json(stack, "-n", namespace, "pvc")["items"]] == ["data"]

    # The claim and its volume's files are gone; the restore brings them back from the location.
    stack.kubectl("-n", namespace, "delete", "pvc", "data", "--wait=true", "--timeout=60s")
    apply(stack, {"apiVersion": "davit.dev/v1alpha1", "kind": "ApplicationRestore",
                  "metadata": {"name": "back", "namespace": namespace},
                  "spec": {"backupName": "moved", "backupLocation": "loc"}})  # fmt: skip
    restored = wait_restore(stack, services, namespace, "back")

    assert restored["status"] == "Successful", restored
    (volume,) = restored["volumes"]
    assert (volume["persistentVolumeClaim"], volume["mode"], volume["status"]) == (
        "data",
        "datamover",
        "Successful",
    )
    claim = bound_claim(stack, namespace)
    assert claim["metadata"]["uid"] != original["metadata"]["uid"]
    assert "dataSource" not in claim["spec"]  # written back by the node agent, not made from a snapshot
    assert claim_directory(stack, claim) != claim_directory(stack, original)
    assert demo_check.manifest(claim_directory(stack, claim)) == expected
    wait_for(
        "the restore's helper pod to be gone", lambda: temporary_objects(stack, namespace) == [], timeout=60
    )
    # Nothing of the backup's own scaffolding came back with the application's objects.
    assert [c["metadata"]["name"] for c in get_json(stack, "-n", namespace, "pvc")["items"]] == ["data"]


def test_a_tenants_claim_in_the_way_of_the_temporary_claim_is_neither_read_nor_deleted(
    stack: StackEnv, namespace: str, services: Services, data_snapshotter: SnapshotController,
    data_provisioner: Provisioner, storage_class: str, tmp_path: Path,
) -> None:  # fmt: skip
    """The tenant sees its backup's uid as soon as it exists and makes a claim of the temporary claim's
    name first (while the snapshot is being cut), holding other data. The backup must not read that
    claim as the volume's data, nor delete it: the volume fails naming it."""
    test_csi_restore.make_claim(stack, namespace, storage_class)
    # The backup covers the application's objects only (not the claim planted below, whenever it comes).
    stack.kubectl("-n", namespace, "label", "pvc", "data", "app=db")
    location = location_manifest(stack, "local", namespace, tmp_path)
    apply(stack, location)
    data_snapshotter.behave("ready", delay=20)  # the window in which the tenant plants its claim
    try:
        apply(stack, backup_manifest(namespace, "planted", snapshotMoveData=True, selectors={"app": "db"}))
        backup_uid = str(get_json(stack, "-n", namespace, "applicationbackup", "planted")["metadata"]["uid"])
        planted_name = f"planted-data-{backup_uid.replace('-', '')[:8]}"
        planted = test_csi_restore.make_claim(stack, namespace, storage_class, name=planted_name)
        claim_directory(stack, planted).mkdir(parents=True, exist_ok=True)
        (claim_directory(stack, planted) / "not-the-volume").write_text("the tenant's own bytes")

        status = wait_backup(stack, namespace, "planted", services, timeout=test_csi_restore.BACKUP_SECONDS)
    finally:
        data_snapshotter.behave("ready")

    (volume,) = status["volumes"]
    assert (volume["mode"], volume["status"]) == ("datamover", "Failed"), status
    assert (
        f"claim {namespace}/{planted_name} exists, and it was not made by this operation" in volume["reason"]
    )
    assert status["status"] == "PartialSuccess"
    # Nothing was stored for it: the manifest's entry has no tree.
    manifest = repository_for(location).read_manifest(BackupRef(namespace, "planted", backup_uid))
    (entry,) = manifest["volumes"]
    assert entry["status"] == "Failed" and "tree" not in entry
    # The planted claim is still there, untouched; no helper pod was made for it or is left.
    kept = get_json(stack, "-n", namespace, "pvc", planted_name)
    assert kept["metadata"]["uid"] == planted["metadata"]["uid"]
    assert (claim_directory(stack, kept) / "not-the-volume").read_text() == "the tenant's own bytes"
    pods = get_json(stack, "-n", namespace, "pods")["items"]
    assert pods == []


def test_the_leftovers_of_an_operation_that_is_gone_are_swept_and_nothing_else(
    stack: StackEnv, namespace: str, stack_services: Any, storage_class: str, data_provisioner: Provisioner
) -> None:
    """A backup deleted (or failed, or whose worker died) before its finish removed its helper pod and
    temporary claim leaves them: the watcher deletes them at its next relist of the backups. The
    application's own pod and claim, unlabelled, stay."""
    stack_services(DAVIT_MOVER_GRACE_SECONDS="0")
    gone_uid = str(uuid.uuid4())
    labels = {MOVER_LABEL: "backup", "davit.dev/backup": "deleted", "davit.dev/backup-uid": gone_uid}
    test_csi_restore.make_claim(stack, namespace, storage_class, name="app-data")
    left = test_csi_restore.make_claim(stack, namespace, storage_class, name="deleted-data-0123abcd")
    stack.kubectl("-n", namespace, "label", "pvc", "deleted-data-0123abcd",
                  *(f"{k}={v}" for k, v in labels.items()))  # fmt: skip
    pods = (("app-0", "app-data", {"app": "db"}), ("deleted-data-0123abcd", left["metadata"]["name"], labels))
    for name, claim, pod_labels in pods:
        volume = {"name": "d", "persistentVolumeClaim": {"claimName": claim}}
        apply(stack, {"apiVersion": "v1", "kind": "Pod",
                      "metadata": {"name": name, "namespace": namespace, "labels": pod_labels},
                      "spec": {"containers": [{"name": "c", "image": "davit:latest"}],
                               "volumes": [volume]}})  # fmt: skip

    wait_for("the leftovers to be deleted", lambda: temporary_objects(stack, namespace) == [], timeout=180)

    assert [p["metadata"]["name"] for p in get_json(stack, "-n", namespace, "pods")["items"]] == ["app-0"]
    claims = get_json(stack, "-n", namespace, "pvc")["items"]
    assert [c["metadata"]["name"] for c in claims if "deletionTimestamp" not in c["metadata"]] == ["app-data"]
