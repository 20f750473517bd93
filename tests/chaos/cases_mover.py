"""A chaos case of the data mover: CSI claims that no pod mounts, backed up with ``snapshotMoveData``
(each snapshot read through a temporary claim and a helper pod), restored into another namespace (the
files written through the restore's helper pods), with the backup service, the restore service and
the node agents SIGKILLed along the way.

The stack has no CSI driver: the tests' stand-ins (``tests/snapshotter.py``) run in this process, with
the snapshot CRDs, keeping real files where the dev kubelet shows them to the pods (``docs/devstack.md``).
Verified byte for byte from the volumes' directories, and the data mover's pods, claims and snapshots
listed from the API server as gone afterwards.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from devstack import demo_check
from devstack.kubelet import csi_volume_dir
from tests.chaos.bed import CLUSTER, AppShape, Bed, CaseFailed, Point, fill_volume, unique
from tests.chaos.cases import (
    NODE_AGENTS,
    PACKS_STORED,
    RESTORE_VOLUMES,
    VOLUMES_BEING_WRITTEN,
    Result,
    case,
    cleanup,
    count_stored,
    expect_successful,
    faults_for,
    record_faults,
)
from tests.snapshotter import DRIVER, Provisioner, SnapshotController

CRD_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "snapshot-crds"
CLAIMS = ("data-a", "data-b")
MOVER_LABEL = "davit.dev/data-mover"

VOLUME_MOUNTED = Point(
    "Volumes, a snapshot mounted by its helper pod",
    lambda v: v.stage == "Volumes" and v.count("volume.mounted") >= 1 and not v.count("volume.completed"),
)


@contextmanager
def csi_driver(bed: Bed) -> Iterator[str]:
    """The snapshot CRDs, a VolumeSnapshotClass and a StorageClass of the stand-in driver, and the
    stand-ins running; yields the StorageClass's name."""
    bed.kubectl("apply", "-f", str(CRD_DIR))
    bed.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(CRD_DIR))
    suffix = uuid.uuid4().hex[:8]
    snapshot_class, storage_class = f"chaos-csi-{suffix}", f"chaos-csi-{suffix}"
    bed.apply({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
               "metadata": {"name": snapshot_class}, "driver": DRIVER,
               "deletionPolicy": "Delete"})  # fmt: skip
    bed.apply({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
               "metadata": {"name": storage_class}, "provisioner": DRIVER, "reclaimPolicy": "Delete",
               "volumeBindingMode": "Immediate"})  # fmt: skip
    root = bed.stack.volumes_root(CLUSTER)
    snapshotter = SnapshotController(bed.api, data_root=root)
    provisioner = Provisioner(bed.api, data_root=root)
    snapshotter.start()
    provisioner.start()
    try:
        yield storage_class
    finally:
        provisioner.stop()
        snapshotter.stop()
        bed.kubectl("delete", "storageclass", storage_class, "--ignore-not-found")
        bed.kubectl("delete", "volumesnapshotclass", snapshot_class, "--ignore-not-found")


def _json(bed: Bed, *args: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(bed.kubectl("get", *args, "-o", "json"))
    return found


def claim_dirs(bed: Bed, namespace: str) -> dict[str, Path] | None:
    """Each bound claim's volume directory (the stand-in driver's), once all of ``CLAIMS`` are bound."""
    found = {}
    for claim in _json(bed, "-n", namespace, "pvc")["items"]:
        if (claim.get("status") or {}).get("phase") != "Bound":
            return None
        pv = _json(bed, "pv", claim["spec"]["volumeName"])
        found[claim["metadata"]["name"]] = csi_volume_dir(
            bed.stack.volumes_root(CLUSTER), pv["spec"]["csi"]["volumeHandle"]
        )
    return found if set(found) == set(CLAIMS) else None


def deploy(
    bed: Bed, namespace: str, storage_class: str, shape: AppShape
) -> dict[str, list[demo_check.FileEntry]]:
    """Two claims no pod mounts, their volumes filled; every entry of each (type, mode, mtime, size,
    sha256, link target)."""
    if bed.kubectl("get", "namespace", namespace, check=False):
        bed.kubectl("delete", "namespace", namespace, "--timeout=180s")
    bed.kubectl("create", "namespace", namespace)
    for name in CLAIMS:
        bed.apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                   "metadata": {"name": name, "namespace": namespace},
                   "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": storage_class,
                            "resources": {"requests": {"storage": "1Gi"}}}})  # fmt: skip
    dirs = bed.wait("both claims bound", lambda: claim_dirs(bed, namespace), timeout=120)
    for index, name in enumerate(CLAIMS):
        dirs[name].mkdir(parents=True, exist_ok=True)
        fill_volume(dirs[name], 70 + index, shape)
    return {name: demo_check.manifest(dirs[name]) for name in CLAIMS}


def leftovers(bed: Bed, *namespaces: str) -> list[str]:
    """The data mover's pods and claims in ``namespaces``, listed from the API server."""
    found = []
    for namespace in namespaces:
        for item in _json(bed, "-n", namespace, "pods,pvc", "-l", MOVER_LABEL)["items"]:
            found.append(f"{item['kind']} {namespace}/{item['metadata']['name']}")
    return found


@case(
    "data-mover",
    "CSI claims no pod mounts, backed up with snapshotMoveData: the backup service SIGKILLed with a "
    "snapshot mounted, the node agents with its first packs stored; restored into another namespace with "
    "the restore service and the node agents SIGKILLed while the volumes are written",
)
def data_mover(bed: Bed, result: Result) -> None:
    with csi_driver(bed) as storage_class:
        source = unique("chaos-mover")
        before = deploy(bed, source, storage_class, bed.shape)
        location, path = bed.location(unique("mover-loc"))
        backup = unique("mover")
        bed.backup(backup, location, source, snapshotMoveData=True)
        backup_faults = faults_for(bed, [VOLUME_MOUNTED], ("backup",)) + faults_for(
            bed, [PACKS_STORED], NODE_AGENTS
        )
        status, hit = bed.run("applicationbackups", backup, path, backup_faults)
        record_faults(result, [h for h in hit if VOLUME_MOUNTED.name in h], ("backup",), [VOLUME_MOUNTED])
        record_faults(result, [h for h in hit if PACKS_STORED.name in h], NODE_AGENTS, [PACKS_STORED])
        expect_successful("backup", backup, status, result)
        modes = sorted({str(v.get("mode")) for v in status.get("volumes") or []})
        if modes != ["datamover"]:
            raise CaseFailed(f"backup {backup} took its volumes as {modes}, not datamover")

        target, restore = unique("mover-to"), unique("mover-r")
        bed.restore(restore, backup, location, {source: target})
        # In the order they come: the stage entered (claims not yet handed out), then the writing.
        restore_faults = faults_for(bed, [RESTORE_VOLUMES], ("restore",)) + faults_for(
            bed, [VOLUMES_BEING_WRITTEN], NODE_AGENTS
        )
        status, hit = bed.run("applicationrestores", restore, path, restore_faults, target=target)
        record_faults(result, [h for h in hit if VOLUMES_BEING_WRITTEN.name in h], NODE_AGENTS,
                      [VOLUMES_BEING_WRITTEN])  # fmt: skip
        record_faults(result, [h for h in hit if RESTORE_VOLUMES.name in h], ("restore",), [RESTORE_VOLUMES])
        expect_successful("restore", restore, status, result)

        dirs = bed.wait("the restored claims bound", lambda: claim_dirs(bed, target), timeout=120)
        after = {name: demo_check.manifest(dirs[name]) for name in CLAIMS}
        differences = demo_check.volume_differences(before, after)
        result.lost += len(differences)
        result.notes += differences[:10]
        result.objects_verified += len(CLAIMS)  # the claims, bound again
        for name, entries in before.items():
            bad = {
                d.split(": ", 1)[1].split(" ", 1)[0] for d in differences if d.startswith(f"volume {name}:")
            }
            result.bytes_verified += sum(
                e.size or 0 for e in entries if e.type == "file" and e.path not in bad
            )
        bed.wait(
            "the data mover's pods and claims to be gone", lambda: not leftovers(bed, source, target), 120
        )
        uid = (bed.get("applicationbackups", backup) or {}).get("metadata", {}).get("uid", "")
        snapshots = _json(bed, "-n", source, "volumesnapshots", "-l", f"davit.dev/backup-uid={uid}")["items"]
        if [s for s in snapshots if "deletionTimestamp" not in s["metadata"]]:
            raise CaseFailed(f"backup {backup} left {len(snapshots)} VolumeSnapshot(s) behind")
        count_stored(result, path)
        cleanup(
            bed, location, path, [source, target], backups=[backup], restores=[restore], keep=not result.ok
        )
