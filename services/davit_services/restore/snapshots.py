"""A restore's claims made from CSI VolumeSnapshots, in the restore service (the rules are
``davit.restore.snapshots``'s): the check of each snapshot against the API, the copy of a snapshot into
another namespace, and the removal of the copies once the restore ends.

Everything goes through the Cluster's object methods; every snapshot the restore uses is read from the API
right before it is used, never taken from the manifest or the scratch state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from davit import constants
from davit.api.objects import RawObject
from davit.api.types import Status
from davit.constants import Kind
from davit.kube.client import ApiException
from davit.operations.ports import Cluster, Ports, RestoreScratch
from davit.restore import snapshots
from davit.restore.plan import RestorePlan
from davit.restore.snapshots import CONTENTS, SNAPSHOTS, ClaimSource, SnapshotVolume, Verified
from davit.tenancy import RestoreGuard, UnsafeName, backup_namespace, restore_guard
from davit.volumes import backup_stage
from davit.volumes.restore_stage import GROUP, PART_PREFIX, fail_volume, volume_done
from davit_services.restore.apply import api_message

log = structlog.get_logger(__name__)

#: Objects per list when finding a restore's copies.
LIST_LIMIT = 500
#: The Events about a claim made from a snapshot: it came back, or why it did not.
SNAPSHOT_RESTORED = "VolumeRestoredFromSnapshot"
SNAPSHOT_FAILED = "VolumeSnapshotRestoreFailed"


def check(
    cluster: Cluster, source: ClaimSource, *, backup_uid: str, restore_namespace: str, admin_namespace: str
) -> Verified | str:
    """The snapshot ``source`` names, as the API has it now, if the restore may use it; else the reason."""
    volume = source.volume
    refused = snapshots.namespace_refusal(volume, restore_namespace, admin_namespace)
    if refused:
        return refused  # not even read on the tenant's behalf
    try:
        snapshot = cluster.get_object(SNAPSHOTS, volume.namespace, volume.snapshot)
        content = None
        bound = ((snapshot or {}).get("status") or {}).get("boundVolumeSnapshotContentName")
        if snapshot is not None and isinstance(bound, str) and bound:
            content = cluster.get_object(CONTENTS, None, bound)
    except UnsafeName as exc:
        return f"VolumeSnapshot {volume.where}: {exc}"
    except ApiException as exc:
        if exc.status != 404:  # 404: the snapshot CRDs are not installed, so no snapshot is there
            return f"VolumeSnapshot {volume.where} could not be read: {api_message(exc)}"
        snapshot = content = None
    return snapshots.verify(
        volume, snapshot, content, backup_uid=backup_uid, restore_namespace=restore_namespace,
        admin_namespace=admin_namespace,
    )  # fmt: skip


def make_copy(
    cluster: Cluster, guard: RestoreGuard, source: ClaimSource, *, backup_uid: str, restore_name: str,
    restore_uid: str,
) -> str | None:  # fmt: skip
    """Copy ``source``'s snapshot into its target namespace (a pre-provisioned VolumeSnapshotContent and a
    VolumeSnapshot bound to it); None when the copy is there, else the reason. The snapshot is checked
    again right before the write, and the content is written only by a restore in the admin namespace:
    it is cluster-scoped."""
    if not guard.admin:
        return (
            f"VolumeSnapshot {source.volume.where}: copying it into {source.namespace} writes a "
            "cluster-scoped VolumeSnapshotContent, which only a restore in the admin namespace "
            f"{guard.admin_namespace} does"
        )
    verified = check(
        cluster, source, backup_uid=backup_uid, restore_namespace=guard.restore_namespace,
        admin_namespace=guard.admin_namespace,
    )  # fmt: skip
    if isinstance(verified, str):
        return verified
    content_name = source.content_name
    snapshot = snapshots.copied_snapshot(
        source.data_source, source.namespace, content_name, verified, restore_name, restore_uid
    )
    refused = guard.refusal(snapshot, True)
    if refused:
        return refused
    content = snapshots.copied_content(
        content_name, source.namespace, source.data_source, verified, restore_name, restore_uid
    )
    try:
        _create(cluster, content, None, lambda found: snapshots.same_copy(found, content), restore_uid)
        _create(
            cluster, snapshot, source.namespace, lambda found: _bound_to(found, content_name), restore_uid
        )
    except (ApiException, UnsafeName, _Taken) as exc:
        reason = api_message(exc) if isinstance(exc, ApiException) else str(exc)
        return f"VolumeSnapshot {source.volume.where} could not be copied into {source.namespace}: {reason}"
    log.info("volumesnapshot.copied", source=source.volume.where, content=content_name,
             snapshot=f"{source.namespace}/{source.data_source}")  # fmt: skip
    return None


class _Taken(Exception):
    """An object of a copy's name is there and is not this restore's copy."""


def _bound_to(snapshot: RawObject, content_name: str) -> bool:
    source = (snapshot.get("spec") or {}).get("source") or {}
    return bool(source.get("volumeSnapshotContentName") == content_name)


def _create(
    cluster: Cluster,
    body: RawObject,
    namespace: str | None,
    same: Callable[[RawObject], bool],
    restore_uid: str,
) -> None:
    """Create ``body``; one of its name already there must be this restore's (a retried task's)."""
    resource = CONTENTS if namespace is None else SNAPSHOTS
    try:
        cluster.create_object(resource, namespace, body)
        return
    except ApiException as exc:
        if exc.status != 409:
            raise
    name = body["metadata"]["name"]
    found = cluster.get_object(resource, namespace, name)
    if found is None or not snapshots.made_by(found, restore_uid) or not same(found):
        where = f"{namespace}/{name}" if namespace else name
        raise _Taken(f"{resource.kind} {where} exists and is not this restore's copy")


def remove_copies(cluster: Cluster, restore_uid: str, namespaces: list[str]) -> list[str]:
    """Delete the copies labelled with ``restore_uid``: the VolumeSnapshots in ``namespaces``, then the
    contents (``Retain``: the storage snapshot stays, the backup's own content holds it). What could not
    be deleted is logged and left, labelled, for a later look; returns what was asked to go."""
    selector = f"{snapshots.RESTORE_UID_LABEL}={restore_uid}"
    deleted: list[str] = []
    for resource, scopes in ((SNAPSHOTS, [*namespaces]), (CONTENTS, [None])):
        for scope in scopes:
            try:
                page = cluster.list_page(resource, scope, selector, LIST_LIMIT, None)
            except ApiException as exc:
                if exc.status != 404:
                    log.warning("volumesnapshot.copies_not_listed", namespace=scope, reason=api_message(exc))
                continue
            for item in page.items:
                name = item["metadata"]["name"]
                try:
                    cluster.delete_object(resource, scope, name, "Background")
                except ApiException as exc:
                    if exc.status != 404:
                        log.warning("volumesnapshot.copy_not_deleted", name=name, reason=api_message(exc))
                        continue
                deleted.append(f"{resource.kind} {scope + '/' if scope else ''}{name}")
    return deleted


# --- the restore's Initial stage -------------------------------------------------------------------------


@dataclass(frozen=True)
class SnapshotPlan:
    """The restore's claims from snapshots: those whose snapshot the API vouches for, and those left out
    with the reason (their claims are not created)."""

    usable: dict[str, ClaimSource] = field(default_factory=dict)
    unusable: dict[str, tuple[ClaimSource, str]] = field(default_factory=dict)
    backup_uid: str = ""


def plan(ports: Ports, obj: RawObject, manifest: RawObject, restore_plan: RestorePlan) -> tuple[
    RestorePlan, SnapshotPlan
]:  # fmt: skip
    """Which restored claims come from which snapshot, each checked against the API; the restore plan
    with those claims made from their snapshot and the claims without a usable one left out."""
    meta, spec = obj["metadata"], obj.get("spec") or {}
    restored = {
        (str(o["metadata"].get("namespace")), str(o["metadata"].get("name")))
        for o in restore_plan.objects
        if (o.get("apiVersion"), o.get("kind")) == ("v1", "PersistentVolumeClaim")
    }
    sources = snapshots.claim_sources(
        snapshots.snapshot_volumes(manifest),
        restore_plan.namespace_mapping,
        restored,
        meta["name"],
        meta["uid"],
    )
    if not sources:
        return restore_plan, SnapshotPlan()
    # The uid of the backup as the API server has it: the label its snapshots carry.
    backup = ports.cluster.get(Kind.APPLICATION_BACKUP, backup_namespace(obj), spec["backupName"]) or {}
    backup_uid = str((backup.get("metadata") or {}).get("uid") or "")
    usable: dict[str, ClaimSource] = {}
    unusable: dict[str, tuple[ClaimSource, str]] = {}
    for part, source in sorted(sources.items()):
        checked = check(
            ports.cluster, source, backup_uid=backup_uid, restore_namespace=meta["namespace"],
            admin_namespace=ports.settings.admin_namespace,
        )  # fmt: skip
        if isinstance(checked, str):
            unusable[part] = (source, checked)
        else:
            usable[part] = source
    tiers, _removed = snapshots.rewrite_tiers(restore_plan.tiers, usable, set(unusable))
    return dataclasses.replace(restore_plan, tiers=tuple(tiers)), SnapshotPlan(usable, unusable, backup_uid)


def prepare(
    ports: Ports, obj: RawObject, state: RestoreScratch, snapshot_plan: SnapshotPlan
) -> list[dict[str, Any]]:
    """Keep the claims from snapshots as volumes of the Volumes stage (with what their copy needs, made
    when their claim is: ``before_claims``); every claim's ``status.volumes`` entry, the unusable ones
    failed with their reason (and an Event)."""
    entries = []
    for part, (source, reason) in sorted(snapshot_plan.unusable.items()):
        entries.append(snapshots.status_entry(source, Status.FAILED.value, reason))
        state.log("volume.failed", claim=part, mode=snapshots.MODE, reason=reason)
        ports.cluster.record_event(obj, "Warning", SNAPSHOT_FAILED, f"claim {part}: {reason}",
                                   constants.COMPONENT_WORKER)  # fmt: skip
    targets: dict[str, dict[str, Any]] = {}
    for part, source in sorted(snapshot_plan.usable.items()):
        entries.append(snapshots.status_entry(source))
        volume = source.volume
        targets[part] = {
            "snapshot": source.data_source, "snapshotNamespace": source.namespace, "copy": source.copy,
            "size": volume.total_size,
            "source": {"namespace": volume.namespace, "claim": volume.claim, "snapshot": volume.snapshot,
                       "content": volume.content, "handle": volume.handle},
        }  # fmt: skip
    if targets:
        state.save_volume_targets(targets)
        state.add_pending([PART_PREFIX + part for part in targets], group=GROUP)
    return entries


def _source_of(part: str, target: dict[str, Any]) -> ClaimSource | None:
    """The claim's source as kept in the scratch state (a hint only: ``make_copy`` checks it against the
    API, and only an admin namespace's restore copies at all)."""
    recorded = target.get("source")
    if not isinstance(recorded, dict) or not target.get("copy"):
        return None
    namespace, claim = part.split("/", 1)
    try:
        volume = SnapshotVolume(
            namespace=str(recorded["namespace"]), claim=str(recorded["claim"]),
            snapshot=str(recorded["snapshot"]), content=str(recorded.get("content") or ""),
            handle=str(recorded.get("handle") or ""), total_size=int(target.get("size") or 0),
        )  # fmt: skip
    except (KeyError, TypeError, ValueError):
        return None
    return ClaimSource(namespace, claim, volume, str(target.get("snapshot") or ""), True)


def before_claims(
    ports: Ports, obj: RawObject, state: RestoreScratch, items: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Before a chunk of the Applications stage is created: the copy each of its claims from another
    namespace's snapshot needs, made now (its namespace exists by now: Namespaces come in an earlier step)
    and checked against the API right before the write. A claim whose copy cannot be made is taken out of
    the chunk (not created) and its volume fails with the reason. Returns the chunk's items to create."""
    wanted = []
    for item in items:
        created = item.get("object") or {}
        if not _is_claim(created):
            continue
        part = _part(created)
        if not state.is_pending(PART_PREFIX + part, group=GROUP):
            continue
        source = _source_of(part, state.volume_target(part))
        if source is not None:
            wanted.append((part, source))
    if not wanted:
        return items
    meta = obj["metadata"]
    guard = restore_guard(meta["namespace"], ports.settings.admin_namespace, obj.get("spec") or {})
    backup = ports.cluster.get(
        Kind.APPLICATION_BACKUP, backup_namespace(obj), (obj.get("spec") or {})["backupName"]
    )
    backup_uid = str(((backup or {}).get("metadata") or {}).get("uid") or "")
    left_out = set()
    for part, source in wanted:
        reason = make_copy(ports.cluster, guard, source, backup_uid=backup_uid, restore_name=meta["name"],
                           restore_uid=meta["uid"])  # fmt: skip
        if reason is None:
            continue
        left_out.add(part)
        state.log("volume.failed", claim=part, mode=snapshots.MODE, reason=reason)
        ports.cluster.record_event(obj, "Warning", SNAPSHOT_FAILED, f"claim {part}: {reason}",
                                   constants.COMPONENT_WORKER)  # fmt: skip
        fields = {"status": Status.FAILED.value, "reason": reason}
        backup_stage.update_volume(ports, meta["namespace"], meta["name"], part, fields,
                                   kind=Kind.APPLICATION_RESTORE)  # fmt: skip
        # Done in Applications (as a claim kept under Retain is): no claim, nothing for Volumes to wait for.
        state.drop_volume_target(part)
        state.finish(PART_PREFIX + part, group=GROUP)
    return [item for item in items if not (_is_claim(item["object"]) and _part(item["object"]) in left_out)]


def _is_claim(obj: RawObject) -> bool:
    return (obj.get("apiVersion"), obj.get("kind")) == ("v1", "PersistentVolumeClaim")


def _part(obj: RawObject) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


# --- the restore's Volumes stage -------------------------------------------------------------------------


def settle(ports: Ports, obj: RawObject, state: RestoreScratch, part: str, target: dict[str, Any]) -> bool:
    """A claim made from a snapshot is done once the provisioner bound it to its new volume (or lost it);
    whether it is done. The claim must name the snapshot it was given: one that was there before and kept
    (Retain) was settled when its create found it, and any other is not this restore's."""
    claim_part = part.removeprefix(PART_PREFIX)
    namespace, claim = claim_part.split("/", 1)
    where = f"VolumeSnapshot {target.get('snapshotNamespace', namespace)}/{target.get('snapshot')}"
    pvc = ports.cluster.read_claim(namespace, claim)
    if pvc is None:
        return False  # not created yet, or its create failed (the deadline fails it)
    phase = (pvc.get("status") or {}).get("phase")
    source = (pvc.get("spec") or {}).get("dataSource") or {}
    if (source.get("kind"), source.get("name")) != ("VolumeSnapshot", target.get("snapshot")):
        fail(ports, obj, state, part, f"the claim is not the one this restore made from {where}")
        return True
    if phase == "Lost":
        fail(ports, obj, state, part, f"the claim made from {where} lost its volume")
        return True
    volume_name = (pvc.get("spec") or {}).get("volumeName")
    if phase != "Bound" or not volume_name:
        return False
    pv = ports.cluster.read_volume(str(volume_name)) or {}
    driver = str(((pv.get("spec") or {}).get("csi") or {}).get("driver") or "")
    size = int(target.get("size") or 0)
    meta = obj["metadata"]
    fields = {"status": Status.SUCCESSFUL.value, "reason": f"provisioned from {where}", "volume": volume_name,
              "driver": driver, "bytesDone": size}  # fmt: skip
    backup_stage.update_volume(
        ports, meta["namespace"], meta["name"], claim_part, fields, kind=Kind.APPLICATION_RESTORE
    )
    state.log("volume.restored", claim=claim_part, mode=snapshots.MODE, volume=volume_name, source=where)
    ports.cluster.record_event(obj, "Normal", SNAPSHOT_RESTORED,
                               f"claim {claim_part} provisioned from {where} (volume {volume_name})",
                               constants.COMPONENT_WORKER)  # fmt: skip
    volume_done(ports, obj, state, part)
    return True


def fail(ports: Ports, obj: RawObject, state: RestoreScratch, part: str, reason: str) -> None:
    """The claim did not come back from its snapshot: the volume fails with ``reason``, and an Event."""
    ports.cluster.record_event(obj, "Warning", SNAPSHOT_FAILED,
                               f"claim {part.removeprefix(PART_PREFIX)}: {reason}",
                               constants.COMPONENT_WORKER)  # fmt: skip
    fail_volume(ports, obj, state, part, reason)


def cleanup(ports: Ports, obj: RawObject) -> None:
    """At the end of the restore: its copies go (the claims made from them no longer need them)."""
    volumes = (obj.get("status") or {}).get("volumes") or []
    namespaces = sorted(
        {str(v.get("namespace")) for v in volumes if isinstance(v, dict) and v.get("mode") == snapshots.MODE}
    )
    if namespaces:
        removed = remove_copies(ports.cluster, obj["metadata"]["uid"], namespaces)
        if removed:
            log.info("volumesnapshot.copies_removed", removed=removed)


def lost_targets(obj: RawObject, manifest: RawObject) -> dict[str, dict[str, Any]]:
    """The Volumes-stage targets of the restore's claims from snapshots, rebuilt from its status and the
    backup's manifest (for a scratch state that was lost): ``<namespace>/<claim>`` → target, for each
    ``mode: snapshot`` entry not done yet. The snapshot each claim names is derived as when planning;
    ``settle`` then checks it against the claim itself."""
    meta, spec = obj["metadata"], obj.get("spec") or {}
    mapping = dict(spec.get("namespaceMapping") or {})
    by_target = {
        f"{mapping.get(v.namespace, v.namespace)}/{v.claim}": v for v in snapshots.snapshot_volumes(manifest)
    }
    targets: dict[str, dict[str, Any]] = {}
    for entry in (obj.get("status") or {}).get("volumes") or []:
        if not isinstance(entry, dict) or entry.get("mode") != snapshots.MODE:
            continue
        if entry.get("status") in (Status.SUCCESSFUL, Status.FAILED):
            continue
        part = f"{entry.get('namespace')}/{entry.get('persistentVolumeClaim')}"
        volume = by_target.get(part)
        if volume is None:
            continue
        namespace, claim = part.split("/", 1)
        copy = namespace != volume.namespace
        name = snapshots.copy_snapshot_name(meta["name"], claim, meta["uid"]) if copy else volume.snapshot
        targets[part] = {"snapshot": name, "snapshotNamespace": namespace, "size": volume.total_size}
    return targets
