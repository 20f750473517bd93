"""Deleting an ApplicationBackup: with reclaimPolicy Delete (Stork's default) its VolumeSnapshots are
deleted and its data leaves the location, manifest first; with Retain both stay. Either way the finalizer
goes last."""

from __future__ import annotations

import structlog

from davit import constants
from davit.constants import Kind
from davit.format.layout import BackupRef
from davit.kube import csi
from davit.operations.messages import Message
from davit.operations.ports import Ports
from davit.operations.runtime import LocationUnavailable

log = structlog.get_logger(__name__)
KIND = Kind.APPLICATION_BACKUP


def handle(ports: Ports, message: Message) -> None:
    cluster = ports.cluster
    obj = cluster.current(KIND, message.namespace, message.name, message.uid)
    if obj is None:
        return
    meta, spec = obj["metadata"], obj.get("spec") or {}
    if not meta.get("deletionTimestamp") or constants.BACKUP_FINALIZER not in (meta.get("finalizers") or []):
        return
    policy = spec.get("reclaimPolicy") or "Delete"
    if policy == "Delete":
        # Before the data and whatever the location's state: the snapshots are in this cluster, and a
        # refusal raises, so the task is retried and the finalizer stays until they are gone.
        snapshots = cluster.delete_backup_snapshots(csi.snapshot_namespaces(obj), meta["uid"])
        if snapshots:
            log.info("backup.volumesnapshots_deleted", volumeSnapshots=snapshots)
        try:
            repository = ports.stores.repository(meta["namespace"], spec["backupLocation"])
        except LocationUnavailable as exc:
            # Keeping the finalizer would make the backup impossible to delete while its location is
            # gone; say loudly what was left behind instead.
            note = f"data left in place: {exc.reason}"
            cluster.record_event(obj, "Warning", "DataRetained", note, constants.COMPONENT_WORKER)
            log.warning("backup.data_left", reason=exc.reason)
        else:
            removed = repository.delete_backup(BackupRef(meta["namespace"], meta["name"], meta["uid"]))
            log.info("backup.data_deleted", objects=removed)
    else:
        log.info("backup.data_retained")  # and its VolumeSnapshots with it
    cluster.remove_finalizer(KIND, obj, constants.BACKUP_FINALIZER)
