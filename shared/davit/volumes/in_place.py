"""Restoring a backup's volume data into the existing claims of a running application (pure): which
volumes go where, which workloads must stop while their data is written, and how the replicas they had
are remembered.

An ApplicationRestore with ``inPlaceVolumes: true`` (KubeStash's RestoreSession, for a whole backup)
creates, changes and deletes no object: each volume the backup holds files of is written into the claim of
the same name (its namespace mapped by ``namespaceMapping``) that exists now. The Deployments,
StatefulSets and ReplicaSets whose pods mount those claims are scaled to zero first, so that nothing writes
to a volume while it is replaced; the data is written through a helper pod (``davit.volumes.mover``); then
every workload gets its replicas back. A volume whose claim is missing, or that a pod no such workload
controls mounts (a DaemonSet's, a Job's, a bare pod), is not written and fails with the reason.

The replicas a workload had are kept on the workload itself (:data:`REPLICAS_ANNOTATION`, beside the
restore's uid in :data:`RESTORE_ANNOTATION`), not only in Redis: whatever becomes of the restore, its
scratch state or the service, the number is where the workload is, and the restore's end (or the
watcher's sweep, for a restore that is gone) puts it back.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from davit import constants, timeutil
from davit.api.objects import RawObject
from davit.api.types import Status
from davit.volumes import restore_stage

#: On a workload scaled down by an in-place restore: that restore's uid (an annotation, and a label of the
#: same name so that the watcher's sweep can select the workloads).
RESTORE_ANNOTATION: Final = f"{constants.ANNOTATION_PREFIX}in-place-restore"
RESTORE_LABEL: Final = RESTORE_ANNOTATION
#: On a workload scaled down by an in-place restore: when (RFC 3339), for the sweep's grace period.
SINCE_ANNOTATION: Final = f"{constants.ANNOTATION_PREFIX}scaled-down-at"
#: On a workload scaled down by an in-place restore: the replicas it had, given back at the end.
REPLICAS_ANNOTATION: Final = f"{constants.ANNOTATION_PREFIX}replicas-before-restore"
#: The workloads an in-place restore scales, by (apiVersion, kind).
SCALABLE: Final = frozenset(
    {("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"), ("apps/v1", "ReplicaSet")}
)


@dataclass(frozen=True)
class Workload:
    api_version: str
    kind: str
    namespace: str
    name: str

    def ref(self) -> RawObject:
        return {"apiVersion": self.api_version, "kind": self.kind,
                "metadata": {"namespace": self.namespace, "name": self.name}}  # fmt: skip

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


def volume_targets(
    manifest: RawObject, mapping: Mapping[str, str]
) -> tuple[dict[str, RawObject], dict[str, str]]:
    """The backup's volumes as ``<namespace>/<claim>`` (namespace mapped): those with files to write (the
    tree, the size and the status entry to show) and those that cannot be written in place, with why."""
    targets: dict[str, RawObject] = {}
    refused: dict[str, str] = {}
    for volume in manifest.get("volumes") or []:
        namespace = str(mapping.get(volume.get("namespace"), volume.get("namespace")))
        claim = str(volume.get("persistentVolumeClaim"))
        claim_part = f"{namespace}/{claim}"
        if volume.get("status") != Status.SUCCESSFUL or not volume.get("tree"):
            if volume.get("mode") in restore_stage.FILE_MODES:
                refused[claim_part] = "the backup holds no data of this volume (it failed when backed up)"
            else:
                refused[claim_part] = (
                    f"a volume backed up as {volume.get('mode') or 'a snapshot'} cannot be written in place"
                )
            continue
        if volume.get("mode") not in restore_stage.FILE_MODES:
            refused[claim_part] = (
                f"a volume backed up as a CSI snapshot ({volume.get('mode')}) cannot be written in place"
            )
            continue
        size = int(volume.get("totalSize") or 0)
        targets[claim_part] = {
            "tree": volume["tree"],
            "size": size,
            "helper": True,
            "status": status_entry(namespace, claim, str(volume["mode"]), Status.PENDING, "", size),
        }
    return targets, refused


def status_entry(
    namespace: str, claim: str, mode: str, status: Status, reason: str, size: int = 0
) -> RawObject:
    return {
        "namespace": namespace, "persistentVolumeClaim": claim, "volume": "", "driver": "", "mode": mode,
        "status": status.value, "reason": reason, "totalSize": size, "bytesDone": 0,
    }  # fmt: skip


def mounts(pod: RawObject, claims: set[str]) -> set[str]:
    """Which of ``claims`` (names in the pod's namespace) the pod mounts."""
    volumes = (pod.get("spec") or {}).get("volumes") or []
    return {str(v["persistentVolumeClaim"]["claimName"]) for v in volumes
            if (v.get("persistentVolumeClaim") or {}).get("claimName") in claims}  # fmt: skip


def controller_of(obj: RawObject) -> RawObject | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def active(pod: RawObject) -> bool:
    """A pod that still has (or may start) containers on the volume: not deleted, not finished."""
    phase = (pod.get("status") or {}).get("phase")
    return not (pod.get("metadata") or {}).get("deletionTimestamp") and phase not in ("Succeeded", "Failed")


def replicas_before(workload: RawObject, restore_uid: str) -> int | None:
    """The replicas to give back: what this restore recorded on the workload, else what it has now. None
    when another in-place restore holds it (its record is that restore's to give back)."""
    annotations = (workload.get("metadata") or {}).get("annotations") or {}
    holder = annotations.get(RESTORE_ANNOTATION)
    if holder and holder != restore_uid:
        return None
    if holder == restore_uid:
        return recorded_replicas(workload)
    replicas = (workload.get("spec") or {}).get("replicas")
    return replicas if isinstance(replicas, int) and not isinstance(replicas, bool) else 1


def recorded_replicas(workload: RawObject) -> int:
    """The replicas recorded on a workload this restore scaled down (1 when the record is unreadable: a
    workload that runs is better than one left stopped)."""
    text = ((workload.get("metadata") or {}).get("annotations") or {}).get(REPLICAS_ANNOTATION)
    try:
        value = int(str(text))
    except ValueError:
        return 1
    return value if 0 <= value <= 100_000 else 1


def scale_down_patch(restore_uid: str, replicas: int, now: datetime.datetime) -> RawObject:
    return {
        "metadata": {
            "labels": {RESTORE_LABEL: restore_uid},
            "annotations": {RESTORE_ANNOTATION: restore_uid, REPLICAS_ANNOTATION: str(replicas),
                            SINCE_ANNOTATION: timeutil.format_time(now)},
        },
        "spec": {"replicas": 0},
    }  # fmt: skip


def scale_back_patch(workload: RawObject) -> RawObject:
    return {
        "metadata": {
            "labels": {RESTORE_LABEL: None},
            "annotations": {RESTORE_ANNOTATION: None, REPLICAS_ANNOTATION: None, SINCE_ANNOTATION: None},
        },
        "spec": {"replicas": recorded_replicas(workload)},
    }


def stranded(
    workloads: Sequence[RawObject], running: set[str], now: datetime.datetime, grace_seconds: float
) -> list[RawObject]:
    """The workloads held by an in-place restore that is not running (ended, failed or deleted) and were
    scaled down longer than ``grace_seconds`` ago (a restore created after the list of running ones was
    taken is not mistaken for a gone one); a record without a readable time counts as old."""
    found = []
    for workload in workloads:
        holder = held_by(workload)
        if not holder or holder in running:
            continue
        annotations = (workload.get("metadata") or {}).get("annotations") or {}
        since = timeutil.parse_time(annotations.get(SINCE_ANNOTATION))
        if since is not None and (now - since).total_seconds() < grace_seconds:
            continue
        found.append(workload)
    return found


def held_by(workload: RawObject) -> str | None:
    """The uid of the in-place restore that scaled the workload down, if one did."""
    holder = ((workload.get("metadata") or {}).get("annotations") or {}).get(RESTORE_ANNOTATION)
    return str(holder) if holder else None


def describe_pods(pods: Sequence[RawObject]) -> str:
    return ", ".join(sorted(f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in pods))


def unscalable_reason(claim: str, pod: RawObject, owner: Any) -> str:
    what = f"{owner.get('kind')} {owner.get('name')}" if isinstance(owner, dict) else "no controller"
    return (
        f"claim {pod['metadata']['namespace']}/{claim} is mounted by pod {pod['metadata']['name']} ({what}), "
        "which an in-place restore cannot scale down: stop it and restore again"
    )
