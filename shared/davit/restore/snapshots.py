"""Restoring claims from the CSI VolumeSnapshots a backup took (pure): which claims, from which snapshot,
whether the snapshot is one this restore may use, and the objects that make a snapshot usable in another
namespace.

A backup in snapshot mode records per claim the VolumeSnapshot it took (``volumeSnapshot``, its bound
``volumeSnapshotContent``, class, ``restoreSize`` and, since it is read from the content, the storage
system's ``snapshotHandle``). A restore creates the claim again with ``spec.dataSource`` naming a
VolumeSnapshot, and the CSI provisioner makes the new volume from it:

* **same namespace**: the dataSource is the backup's own VolumeSnapshot, still there;
* **another namespace** (``namespaceMapping``, clones): a VolumeSnapshot cannot be used across namespaces,
  so the restore copies it, as Velero does: a pre-provisioned VolumeSnapshotContent with the original's
  ``snapshotHandle`` and driver, ``deletionPolicy: Retain`` (deleting the copy never deletes the storage
  snapshot, which the backup owns), bound to a new VolumeSnapshot in the target namespace (both labelled
  with the restore's uid), and the claim's dataSource names that one.

What may be used is decided from the API, never from the manifest alone (the manifest lies in a bucket the
tenant can rewrite): the snapshot must exist in the namespace the manifest names, carry the label with the
uid of the backup the restore reads (the ApplicationBackup as the API server has it), be of the recorded
claim, ready, and bound to a content that points back at it (its uid), whose handle is taken from the
cluster. A restore outside the admin namespace uses only snapshots of its own namespace. ``verify`` is that
check; the restore service makes it when planning and again right before it writes a copy.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from davit import timeutil
from davit.api.objects import RawObject
from davit.backup.selection import ApiResource
from davit.restore.tiers import TierGroup, group_kind

GROUP = "snapshot.storage.k8s.io"
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"
#: The label carrying the uid of the backup that took a VolumeSnapshot (``davit.kube.csi`` sets it).
BACKUP_UID_LABEL = "davit.dev/backup-uid"
#: The label carrying the uid of the restore that made a copy (how its copies are found and removed).
RESTORE_UID_LABEL = "davit.dev/restore-uid"
#: The label naming that restore (informative).
RESTORE_LABEL = "davit.dev/restore"
MODE = "snapshot"

_VERBS = frozenset({"get", "list", "create", "delete"})
SNAPSHOTS = ApiResource(GROUP, VERSION, "volumesnapshots", "VolumeSnapshot", True, _VERBS)
CONTENTS = ApiResource(GROUP, VERSION, "volumesnapshotcontents", "VolumeSnapshotContent", False, _VERBS)

#: Longest object name (a DNS subdomain); characters of the restore's uid in a copy's name.
MAX_NAME = 253
SHORT_UID = 8


@dataclass(frozen=True)
class SnapshotVolume:
    """A volume the backup's manifest records as a successful snapshot (untrusted: from the bucket)."""

    namespace: str
    claim: str
    snapshot: str
    content: str
    handle: str
    total_size: int

    @property
    def where(self) -> str:
        return f"{self.namespace}/{self.snapshot}"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def snapshot_volumes(manifest: RawObject) -> list[SnapshotVolume]:
    """The manifest's volumes taken as VolumeSnapshots that succeeded (entries of the wrong shape are
    left out: the restore then finds no snapshot for them, and their claims are restored as before)."""
    found = []
    for volume in manifest.get("volumes") or []:
        if not isinstance(volume, dict) or volume.get("mode") != MODE or volume.get("status") != "Successful":
            continue
        namespace, claim = _text(volume.get("namespace")), _text(volume.get("persistentVolumeClaim"))
        snapshot = _text(volume.get("volumeSnapshot"))
        if not (namespace and claim and snapshot):
            continue
        size = volume.get("totalSize")
        found.append(
            SnapshotVolume(
                namespace=namespace,
                claim=claim,
                snapshot=snapshot,
                content=_text(volume.get("volumeSnapshotContent")),
                handle=_text(volume.get("snapshotHandle")),
                total_size=size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else 0,
            )
        )
    return found


@dataclass(frozen=True)
class Verified:
    """What the cluster says about a usable snapshot."""

    snapshot_uid: str
    content: str
    handle: str
    driver: str
    snapshot_class: str
    restore_size: Any


def namespace_refusal(volume: SnapshotVolume, restore_namespace: str, admin_namespace: str) -> str | None:
    """Why a restore in ``restore_namespace`` may not even look at ``volume``'s snapshot: outside the admin
    namespace, a restore uses only snapshots of its own namespace (whatever the manifest and the restore's
    namespaceMapping say)."""
    if restore_namespace in (admin_namespace, volume.namespace):
        return None
    return (
        f"VolumeSnapshot {volume.where} is in namespace {volume.namespace}: a restore in namespace "
        f"{restore_namespace} makes claims only from snapshots of {restore_namespace}"
    )


def verify(
    volume: SnapshotVolume,
    snapshot: RawObject | None,
    content: RawObject | None,
    *,
    backup_uid: str,
    restore_namespace: str,
    admin_namespace: str,
) -> Verified | str:
    """Whether the restore in ``restore_namespace`` may make a claim from ``volume``'s snapshot, given the
    VolumeSnapshot and its bound VolumeSnapshotContent as read from the API (None: not there); the reason
    (a string) when it may not. ``backup_uid`` is the uid of the ApplicationBackup the API server has."""
    where = f"VolumeSnapshot {volume.where}"
    refused = namespace_refusal(volume, restore_namespace, admin_namespace)
    if refused:
        return refused
    if snapshot is None:
        return f"{where} is gone: the claim was not created (it would have come back empty)"
    meta = snapshot.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return f"{where} is being deleted"
    if (meta.get("labels") or {}).get(BACKUP_UID_LABEL) != backup_uid:
        return f"{where} was not taken by this restore's backup (label {BACKUP_UID_LABEL})"
    spec, status = snapshot.get("spec") or {}, snapshot.get("status") or {}
    source = _text((spec.get("source") or {}).get("persistentVolumeClaimName"))
    if source != volume.claim:
        return f"{where} is a snapshot of claim {source or '(none)'}, not of {volume.claim}"
    if status.get("readyToUse") is not True:
        return f"{where} is not ready to use"
    bound = _text(status.get("boundVolumeSnapshotContentName"))
    if not bound:
        return f"{where} is bound to no VolumeSnapshotContent"
    if volume.content and bound != volume.content:
        return f"{where} is bound to VolumeSnapshotContent {bound}, the backup recorded {volume.content}"
    if content is None:
        return f"{where}: its VolumeSnapshotContent {bound} is gone"
    ref = (content.get("spec") or {}).get("volumeSnapshotRef") or {}
    if (ref.get("namespace"), ref.get("name"), ref.get("uid")) != (volume.namespace, volume.snapshot,
                                                                   meta.get("uid")):  # fmt: skip
        return f"{where}: VolumeSnapshotContent {bound} is bound to another VolumeSnapshot"
    handle = _text((content.get("status") or {}).get("snapshotHandle"))
    if not handle:
        return f"{where}: VolumeSnapshotContent {bound} has no snapshot handle"
    if volume.handle and volume.handle != handle:
        return f"{where}: VolumeSnapshotContent {bound} holds another snapshot than the backup recorded"
    driver = _text((content.get("spec") or {}).get("driver"))
    if not driver:
        return f"{where}: VolumeSnapshotContent {bound} names no driver"
    return Verified(
        snapshot_uid=_text(meta.get("uid")),
        content=bound,
        handle=handle,
        driver=driver,
        snapshot_class=_text(spec.get("volumeSnapshotClassName"))
        or _text((content.get("spec") or {}).get("volumeSnapshotClassName")),
        restore_size=status.get("restoreSize"),
    )


# --- the copy in another namespace -------------------------------------------------------------------


def _bounded(full: str, short_uid: str) -> str:
    """``full`` as an object name: past 253 characters cut, with a digest of the whole keeping two long
    names apart, and the short uid kept at the end."""
    if len(full) <= MAX_NAME:
        return full
    suffix = f"-{hashlib.sha256(full.encode()).hexdigest()[:8]}-{short_uid}"
    return full[: MAX_NAME - len(suffix)].rstrip("-.") + suffix


def _short(uid: str) -> str:
    return uid.replace("-", "")[:SHORT_UID].lower()


def copy_snapshot_name(restore_name: str, claim: str, restore_uid: str) -> str:
    """The copied VolumeSnapshot in the target namespace: ``<restore>-<claim>-<first 8 of its uid>``."""
    return _bounded(f"{restore_name}-{claim}-{_short(restore_uid)}", _short(restore_uid))


def copy_content_name(namespace: str, snapshot_name: str) -> str:
    """The copied VolumeSnapshotContent (cluster-scoped, so the namespace is part of the name)."""
    return _bounded(f"davit-{namespace}-{snapshot_name}", snapshot_name[-SHORT_UID:])


def _labels(restore_name: str, restore_uid: str) -> dict[str, str]:
    return {RESTORE_LABEL: restore_name[:63].rstrip("-._"), RESTORE_UID_LABEL: restore_uid}


def copied_content(
    name: str, snapshot_namespace: str, snapshot_name: str, verified: Verified, restore_name: str,
    restore_uid: str,
) -> RawObject:  # fmt: skip
    """A pre-provisioned VolumeSnapshotContent of the original's handle and driver, bound to the copy."""
    spec: dict[str, Any] = {
        "deletionPolicy": "Retain",
        "driver": verified.driver,
        "source": {"snapshotHandle": verified.handle},
        "volumeSnapshotRef": {"apiVersion": API_VERSION, "kind": "VolumeSnapshot",
                              "namespace": snapshot_namespace, "name": snapshot_name},
    }  # fmt: skip
    if verified.snapshot_class:
        spec["volumeSnapshotClassName"] = verified.snapshot_class
    return {
        "apiVersion": API_VERSION,
        "kind": "VolumeSnapshotContent",
        "metadata": {"name": name, "labels": _labels(restore_name, restore_uid)},
        "spec": spec,
    }


def copied_snapshot(
    name: str, namespace: str, content_name: str, verified: Verified, restore_name: str, restore_uid: str
) -> RawObject:
    """The VolumeSnapshot in the target namespace, bound to the pre-provisioned content."""
    spec: dict[str, Any] = {"source": {"volumeSnapshotContentName": content_name}}
    if verified.snapshot_class:
        spec["volumeSnapshotClassName"] = verified.snapshot_class
    return {
        "apiVersion": API_VERSION,
        "kind": "VolumeSnapshot",
        "metadata": {"name": name, "namespace": namespace, "labels": _labels(restore_name, restore_uid)},
        "spec": spec,
    }


def orphaned_copies(
    items: Sequence[RawObject], live_restore_uids: set[str], now: datetime.datetime, grace_seconds: float
) -> list[RawObject]:
    """The copies (VolumeSnapshots and VolumeSnapshotContents labelled with a restore's uid) whose restore
    is gone: deleted before its Final stage removed them. ``live_restore_uids`` is every restore's uid,
    listed *before* ``items``; a copy younger than ``grace_seconds`` is kept, since a restore created
    between the two lists made its copies after the first and is not in it.

    Only what a copy looks like is taken, so that deleting it never deletes a storage snapshot: a content
    that keeps its snapshot (``Retain``), and a snapshot bound to such a content of the same restore (a
    snapshot bound to a ``Delete`` content would take the storage snapshot with it). Snapshots come
    first in the result: a content goes after the snapshot bound to it."""

    def orphan(item: RawObject) -> str | None:
        meta = item.get("metadata") or {}
        uid = (meta.get("labels") or {}).get(RESTORE_UID_LABEL)
        created = timeutil.parse_time(meta.get("creationTimestamp"))
        if not uid or uid in live_restore_uids or created is None:
            return None
        return str(uid) if (now - created).total_seconds() >= grace_seconds else None

    contents = {
        (item["metadata"]["name"], uid): item
        for item in items
        if item.get("kind") == "VolumeSnapshotContent"
        and (uid := orphan(item))
        and (item.get("spec") or {}).get("deletionPolicy") == "Retain"
    }
    snapshots = [
        item
        for item in items
        if item.get("kind") == "VolumeSnapshot"
        and (uid := orphan(item))
        and (((item.get("spec") or {}).get("source") or {}).get("volumeSnapshotContentName"), uid) in contents
    ]
    return [*snapshots, *contents.values()]


def made_by(obj: RawObject | None, restore_uid: str) -> bool:
    """Whether ``obj`` (found under a copy's name) is this restore's copy."""
    labels = ((obj or {}).get("metadata") or {}).get("labels") or {}
    return bool(labels.get(RESTORE_UID_LABEL) == restore_uid)


def same_copy(content: RawObject, wanted: RawObject) -> bool:
    """Whether an existing copied content is the one ``wanted`` describes (a retried restore's)."""
    spec, want = content.get("spec") or {}, wanted["spec"]
    ref, want_ref = spec.get("volumeSnapshotRef") or {}, want["volumeSnapshotRef"]
    return (
        (spec.get("source") or {}).get("snapshotHandle") == want["source"]["snapshotHandle"]
        and spec.get("driver") == want["driver"]
        and (ref.get("namespace"), ref.get("name")) == (want_ref["namespace"], want_ref["name"])
    )


# --- the plan --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimSource:
    """Where a restored claim (``namespace``/``claim`` in the target) gets its data: ``volume``'s snapshot,
    through ``data_source`` (the backup's own snapshot, or the copy when ``copy``)."""

    namespace: str
    claim: str
    volume: SnapshotVolume
    data_source: str
    copy: bool

    @property
    def part(self) -> str:
        return f"{self.namespace}/{self.claim}"

    @property
    def content_name(self) -> str:
        return copy_content_name(self.namespace, self.data_source) if self.copy else ""


def claim_sources(
    volumes: Sequence[SnapshotVolume],
    namespace_mapping: Mapping[str, str],
    restored_claims: set[tuple[str, str]],
    restore_name: str,
    restore_uid: str,
) -> dict[str, ClaimSource]:
    """``<target namespace>/<claim>`` → its source, for the snapshot volumes whose claim the restore
    creates (a claim filtered out of the restore is not restored from its snapshot either)."""
    found = {}
    for volume in volumes:
        target = namespace_mapping.get(volume.namespace, volume.namespace)
        if (target, volume.claim) not in restored_claims:
            continue
        copy = target != volume.namespace
        name = copy_snapshot_name(restore_name, volume.claim, restore_uid) if copy else volume.snapshot
        source = ClaimSource(target, volume.claim, volume, name, copy)
        found[source.part] = source
    return found


def status_entry(source: ClaimSource, status: str = "Pending", reason: str = "") -> dict[str, Any]:
    """The claim's entry in the restore's ``status.volumes``."""
    return {
        "namespace": source.namespace, "persistentVolumeClaim": source.claim, "volume": "", "driver": "",
        "mode": MODE, "status": status, "reason": reason, "totalSize": source.volume.total_size,
        "bytesDone": 0,
    }  # fmt: skip


def from_snapshot(claim: RawObject, data_source: str) -> RawObject:
    """The restored claim provisioned from VolumeSnapshot ``data_source``: its dataSource set, never bound
    to a volume by name (the provisioner makes a new one from the snapshot)."""
    spec = {k: v for k, v in (claim.get("spec") or {}).items() if k not in ("volumeName", "dataSourceRef")}
    spec["dataSource"] = {"apiGroup": GROUP, "kind": "VolumeSnapshot", "name": data_source}
    return {**claim, "spec": spec}


def rewrite_tiers(
    tiers: Sequence[TierGroup[RawObject]], sources: Mapping[str, ClaimSource], left_out: set[str]
) -> tuple[list[TierGroup[RawObject]], list[RawObject]]:
    """The plan's tiers with the claims of ``sources`` made from their snapshots, the claims of
    ``left_out`` (``<namespace>/<claim>``: no usable snapshot) removed, and the PersistentVolumes bound to
    any of them removed (the claim gets a new volume, the old one is not brought back beside it).
    Returns the tiers and the objects removed."""
    touched = set(sources) | left_out
    removed: list[RawObject] = []
    rewritten = []
    for group in tiers:
        items = []
        for item in group.items:
            meta = item.get("metadata") or {}
            kind = group_kind(item)
            if kind == ("", "PersistentVolumeClaim"):
                part = f"{meta.get('namespace')}/{meta.get('name')}"
                if part in left_out:
                    removed.append(item)
                    continue
                if part in sources:
                    items.append(from_snapshot(item, sources[part].data_source))
                    continue
            elif kind == ("", "PersistentVolume"):
                ref = (item.get("spec") or {}).get("claimRef") or {}
                if f"{ref.get('namespace')}/{ref.get('name')}" in touched:
                    removed.append(item)
                    continue
            items.append(item)
        if items:
            rewritten.append(TierGroup(group.tier, tuple(items)))
    return rewritten, removed
