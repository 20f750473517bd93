"""Location sync (pure): which backups stored in a location become ApplicationBackup CRs, under which
names, and which of those imports go because their backup left the location.

A BackupLocation with ``sync: true`` mirrors the complete backups in its location into its namespace:
those made from that namespace, or all of them when the location is in the admin namespace. This is how
a second cluster sees, and restores, what the first one backed up. The retention service does the I/O
(``davit_services.retention.sync``); everything deciding lives here, testable without a cluster.

An import is an ordinary ApplicationBackup, ``Final``, with ``reclaimPolicy: Retain``, marked by two
annotations: the location that imported it and the backup it stands for. The watcher never starts a
marked object, and an import carries no finalizer, so deleting it never touches the data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from davit import constants, timeutil
from davit.api.objects import RawObject
from davit.api.types import Stage, Status, VolumeStatus
from davit.format.layout import BackupRef
from davit.operations import stages

#: The stage name of the message that asks the retention service to sync a BackupLocation.
SYNC_STAGE: Final = constants.RetentionAction.SYNC.value
#: On an imported ApplicationBackup: the name of the BackupLocation (in the same namespace) that imported it.
IMPORTED_FROM_ANNOTATION: Final = f"{constants.ANNOTATION_PREFIX}imported-from"
#: On an imported ApplicationBackup: ``<namespace>/<name>/<uid>`` of the backup it stands for, which is
#: where its data lives in the location (``BackupRef``) and is, in general, not the import's own name.
SOURCE_BACKUP_ANNOTATION: Final = f"{constants.ANNOTATION_PREFIX}source-backup"
#: Kubernetes' limit on an object's name.
MAX_NAME: Final = 253
#: Hex digits of the hash that ends a shortened name: 40 bits, so two names cut to the same prefix
#: still differ.
_DIGEST_CHARS: Final = 10
#: Spec fields not carried over. ``ttl``: the cluster that made the backup applies it and deletes the
#: data; the sync then removes the import. An importing cluster applying it too would delete the CR
#: only for the next sync to import it again.
_DROPPED_SPEC_FIELDS: Final = ("ttl",)


def is_imported(obj: RawObject) -> bool:
    """Whether ``obj`` is an import (and so never started as a new backup)."""
    return IMPORTED_FROM_ANNOTATION in (obj.get("metadata", {}).get("annotations") or {})


def format_source(ref: BackupRef) -> str:
    return f"{ref.namespace}/{ref.name}/{ref.uid}"


def parse_source(text: str | None) -> BackupRef | None:
    parts = (text or "").split("/")
    if len(parts) != 3 or not all(parts):
        return None
    return BackupRef(namespace=parts[0], name=parts[1], uid=parts[2])


def source_of(obj: RawObject) -> BackupRef | None:
    """The backup an import stands for; None for an object that is not an import."""
    annotations = obj.get("metadata", {}).get("annotations") or {}
    if IMPORTED_FROM_ANNOTATION not in annotations:
        return None
    return parse_source(annotations.get(SOURCE_BACKUP_ANNOTATION))


def data_ref(obj: RawObject) -> BackupRef:
    """Where an ApplicationBackup's data lives in its location: the source backup's for an import, its
    own namespace, name and uid otherwise."""
    meta = obj["metadata"]
    return source_of(obj) or BackupRef(meta["namespace"], meta["name"], meta["uid"])


def scope(location_namespace: str, admin_namespace: str) -> str | None:
    """The namespace whose backups a location in ``location_namespace`` imports; None: every one."""
    return None if location_namespace == admin_namespace else location_namespace


def import_name(ref: BackupRef, location_namespace: str, admin_namespace: str) -> str:
    """The name of the import of ``ref``.

    Outside the admin namespace only the namespace's own backups are imported, under their own names.
    In the admin namespace backups of every namespace meet, so each is named ``<namespace>.<name>``: a
    namespace never contains a dot, so the first dot separates the two and no two backups share a
    name. Beyond Kubernetes' 253 characters the name is cut and ends with a hash of the whole.
    """
    if location_namespace != admin_namespace:
        return ref.name
    name = f"{ref.namespace}.{ref.name}"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(f"{ref.namespace}/{ref.name}".encode()).hexdigest()[:_DIGEST_CHARS]
    return f"{name[: MAX_NAME - _DIGEST_CHARS - 1].rstrip('.-')}-{digest}"


@dataclass(frozen=True)
class Import:
    """An import to create (or whose status to write): its name and the backup it stands for."""

    name: str
    source: BackupRef


@dataclass(frozen=True)
class Removal:
    """An import whose backup left the location; ``uid`` makes the deletion hit only that object."""

    name: str
    uid: str
    source: BackupRef


@dataclass(frozen=True)
class Conflict:
    """A backup not imported because its name is taken; ``holder`` says by what."""

    name: str
    source: BackupRef
    holder: str


@dataclass(frozen=True)
class SyncPlan:
    #: Backups to import (the executor deletes first: a name may be freed by a removal).
    create: tuple[Import, ...] = ()
    #: Imports created without their status (a crash between the create and the status write).
    complete: tuple[Import, ...] = ()
    #: Imports whose backup is gone from the location.
    delete: tuple[Removal, ...] = ()
    conflicts: tuple[Conflict, ...] = ()

    @property
    def changes(self) -> bool:
        return bool(self.create or self.complete or self.delete)


def plan(
    location_namespace: str,
    location_name: str,
    admin_namespace: str,
    present: Iterable[BackupRef],
    existing: Iterable[RawObject],
) -> SyncPlan:
    """What a sync of the location ``location_namespace/location_name`` does.

    ``present``: the complete backups listed in the location (those out of scope are ignored).
    ``existing``: the cluster's ApplicationBackups in the location's namespace, and for a location in
    the admin namespace those of every namespace (to recognise backups this cluster made itself).

    A backup whose original CR is in this cluster (same uid) is not imported: this cluster made it. A
    backup already imported, by this location or another one in the namespace, is not imported again.
    An existing object is never replaced: a name held by anything but a removed import of this
    location is a conflict, reported and skipped.
    """
    wanted_scope = scope(location_namespace, admin_namespace)
    objects = list(existing)
    originals = {o["metadata"].get("uid") for o in objects if not is_imported(o)}
    local = {
        o["metadata"]["name"]: o for o in objects if o["metadata"].get("namespace") == location_namespace
    }
    imported = {source: o for o in local.values() if (source := source_of(o)) is not None}
    in_location = sorted(
        {ref for ref in present if wanted_scope is None or ref.namespace == wanted_scope},
        key=lambda r: (r.namespace, r.name, r.uid),
    )
    present_sources = set(in_location)

    delete = tuple(
        Removal(o["metadata"]["name"], o["metadata"]["uid"], source)
        for source, o in sorted(imported.items(), key=lambda item: item[1]["metadata"]["name"])
        if _imported_by(o, location_name)
        and source not in present_sources
        and not o["metadata"].get("deletionTimestamp")
    )
    freed = {removal.name for removal in delete}
    create: list[Import] = []
    complete: list[Import] = []
    conflicts: list[Conflict] = []
    claimed: dict[str, BackupRef] = {}
    for ref in in_location:
        if ref.uid in originals:
            continue
        holder = imported.get(ref)
        if holder is not None:
            status = holder.get("status") or {}
            if status.get("stage") != Stage.FINAL and not holder["metadata"].get("deletionTimestamp"):
                complete.append(Import(holder["metadata"]["name"], ref))
            continue
        name = import_name(ref, location_namespace, admin_namespace)
        taken_by = _holder(local.get(name), freed, claimed.get(name))
        if taken_by is not None:
            conflicts.append(Conflict(name, ref, taken_by))
            continue
        claimed[name] = ref
        create.append(Import(name, ref))
    return SyncPlan(tuple(create), tuple(complete), delete, tuple(conflicts))


def _imported_by(obj: RawObject, location_name: str) -> bool:
    return bool((obj["metadata"].get("annotations") or {}).get(IMPORTED_FROM_ANNOTATION) == location_name)


def _holder(existing: RawObject | None, freed: set[str], claimed: BackupRef | None) -> str | None:
    """What holds a name, or None when it is free for an import."""
    if claimed is not None:
        return f"the import of {format_source(claimed)} in this sync"
    if existing is None or existing["metadata"]["name"] in freed:
        return None
    source = source_of(existing)
    if source is not None:
        return f"an import of {format_source(source)}"
    return "an ApplicationBackup made in this cluster"


# --- the import's object and status -----------------------------------------------------------------


def imported_backup(
    location_namespace: str, location_name: str, item: Import, manifest: Mapping[str, Any]
) -> RawObject:
    """The ApplicationBackup that stands for ``item.source``: the original's spec, pointing at the
    syncing location, with ``reclaimPolicy: Retain`` so that nothing here ever deletes the data."""
    original = manifest.get("backup") or {}
    spec = {k: v for k, v in (original.get("spec") or {}).items() if k not in _DROPPED_SPEC_FIELDS}
    spec.update(backupLocation=location_name, reclaimPolicy="Retain")
    return {
        "apiVersion": constants.API_GROUP_VERSION,
        "kind": constants.Kind.APPLICATION_BACKUP.value,
        "metadata": {
            "name": item.name,
            "namespace": location_namespace,
            "annotations": {
                IMPORTED_FROM_ANNOTATION: location_name,
                SOURCE_BACKUP_ANNOTATION: format_source(item.source),
            },
        },
        "spec": spec,
    }


#: The fields ``status.volumes`` entries have (the manifest's entries carry a few more).
_VOLUME_FIELDS: Final = tuple(f.alias or name for name, f in VolumeStatus.model_fields.items())


def imported_status(
    location_name: str, manifest: Mapping[str, Any], backup_path: str, now: str
) -> dict[str, Any]:
    """The status of an import, from the backup's manifest: ``Final``; ``Successful``, or
    ``PartialSuccess`` when the manifest records failed volumes (as the original ended)."""
    summary = manifest.get("summary") or {}
    volumes = [
        {k: entry[k] for k in _VOLUME_FIELDS if entry.get(k) is not None}
        for entry in manifest.get("volumes") or []
        if isinstance(entry, Mapping)
    ]
    failed = sum(1 for v in volumes if v.get("status") == Status.FAILED)
    done = sum(1 for v in volumes if v.get("status") in (Status.SUCCESSFUL, Status.FAILED))
    started = summary.get("startedAt")
    finished = summary.get("finishedAt")
    begin, end = timeutil.parse_time(started), timeutil.parse_time(finished)
    note = f"imported from BackupLocation {location_name}"
    ended = Status.PARTIAL_SUCCESS if failed else Status.SUCCESSFUL
    reason = f"{note}; {failed} of {len(volumes)} volume(s) failed" if failed else note
    status: dict[str, Any] = {
        **stages.stage_fields(Stage.FINAL, ended, reason, finished or None),
        "resourceCount": int(summary.get("resourceCount") or 0),
        "volumes": volumes,
        "volumesProgress": f"{done}/{len(volumes)}",
        "totalSize": int(summary.get("totalSize") or 0),
        "storedSize": int(summary.get("storedSize") or 0),
        "backupPath": backup_path,
        "lastUpdateTimestamp": now,
    }
    if started:
        status["triggerTimestamp"] = started
    if begin and end:
        status["elapsed"] = timeutil.format_elapsed(max(0.0, (end - begin).total_seconds()))
    return status
