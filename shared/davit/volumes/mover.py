"""The data mover's temporary objects (pure): what is made to read a snapshot's files, and to write a
restored claim that no restored pod mounts.

Backup (``snapshotMoveData: true``): once a volume's VolumeSnapshot is ready, a temporary claim is made
from it (``dataSource`` the snapshot, in the claim's namespace, of the source claim's StorageClass) and a
helper pod mounts that claim; the node agent of the helper's node then reads the claim's directory as it
reads any filesystem volume, and the files go into the repository. The volume's entry says
``mode: datamover``, and a restore writes those files back as it writes a filesystem volume's.

Restore: a claim whose data is written back (a filesystem or data-mover volume) but that no restored pod
mounts gets a helper pod that mounts it, held by the restore's init container like a restored pod, so
the node agent has a directory to write into.

Every such object carries ``davit.dev/data-mover`` and the operation's uid label: that is how the
backup's finish, the restore's finish and the watcher's sweep find them to delete. Names are derived
from the operation and the claim (never read from Redis), so a retried task finds what an earlier one
made instead of making a second, and the node agent can check that the claim it is asked to read is the
one this backup made.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
from collections.abc import Sequence
from typing import Any, Final

from davit import timeutil
from davit.api.objects import RawObject
from davit.labels import label_value

#: On every temporary object; the value says which operation made it.
MOVER_LABEL: Final = "davit.dev/data-mover"
BACKUP: Final = "backup"
RESTORE: Final = "restore"
#: The operation's uid (the same labels snapshots and restored objects carry).
BACKUP_UID_LABEL: Final = "davit.dev/backup-uid"
RESTORE_UID_LABEL: Final = "davit.dev/restore-uid"
#: The pod volume name of the claim in a helper pod.
POD_VOLUME: Final = "data"
#: Where the helper's container mounts it (nothing reads it there: the node agent reads the node's view).
MOUNT_PATH: Final = "/data"
#: An unprivileged user of the Davit image; the helper never touches the files itself.
HELPER_USER: Final = 65532

#: Longest object name (a DNS subdomain).
MAX_NAME: Final = 253
#: Characters of the operation's uid in a derived name: enough to tell two operations of the same name
#: apart (one deleted and created again), short enough to keep the name readable.
SHORT_UID: Final = 8

#: The helper's only process: wait to be stopped, and stop at once on SIGTERM (as PID 1 a signal with no
#: handler would be ignored, and the pod would sit out its grace period).
HOLD_COMMAND: Final = [
    "python", "-c",
    "import signal, sys; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)); signal.pause()",
]  # fmt: skip


def derived_name(operation_name: str, claim: str, operation_uid: str) -> str:
    """``<operation>-<claim>-<first 8 of the operation's uid>``; longer than 253 characters, the front is
    cut and a digest of the whole name keeps two long claims of one operation apart. Both parts are DNS
    subdomains already (the API server validated them), so the result is one too."""
    short_uid = operation_uid.replace("-", "")[:SHORT_UID].lower()
    full = f"{operation_name}-{claim}-{short_uid}"
    if len(full) <= MAX_NAME:
        return full
    suffix = f"-{hashlib.sha256(full.encode()).hexdigest()[:8]}-{short_uid}"
    # A subdomain's labels must start and end alphanumeric: no "-" or "." before the suffix.
    return f"{operation_name}-{claim}"[: MAX_NAME - len(suffix)].rstrip("-.") + suffix


def backup_labels(backup_name: str, backup_uid: str) -> dict[str, str]:
    return {MOVER_LABEL: BACKUP, "davit.dev/backup": label_value(backup_name), BACKUP_UID_LABEL: backup_uid}


def restore_labels(restore_name: str, restore_uid: str) -> dict[str, str]:
    return {MOVER_LABEL: RESTORE, "davit.dev/restore": label_value(restore_name),
            RESTORE_UID_LABEL: restore_uid}  # fmt: skip


def selector(kind: str, uid: str) -> str:
    """The label selector of one operation's temporary objects."""
    uid_label = BACKUP_UID_LABEL if kind == BACKUP else RESTORE_UID_LABEL
    return f"{MOVER_LABEL}={kind},{uid_label}={uid}"


def temp_claim(
    source: RawObject, name: str, snapshot: str, restore_size: int, labels: dict[str, str]
) -> RawObject:
    """A claim of ``source``'s StorageClass made from VolumeSnapshot ``snapshot`` (same namespace), as big
    as the snapshot says it must be (what the source claim asked for when the snapshot does not say)."""
    spec = source.get("spec") or {}
    requested = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
    # The snapshot's size in bytes is a quantity too; a volume made from it may not be smaller.
    storage: Any = str(restore_size) if restore_size > 0 else (requested or "1Gi")
    body: RawObject = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": source["metadata"]["namespace"], "labels": dict(labels)},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": storage}},
            "dataSource": {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": snapshot},
        },
    }
    if spec.get("storageClassName"):
        body["spec"]["storageClassName"] = spec["storageClassName"]
    if spec.get("volumeMode"):
        body["spec"]["volumeMode"] = spec["volumeMode"]
    return body


def claim_made_from(claim: RawObject | None, snapshot: str, labels: dict[str, str]) -> str:
    """Why ``claim`` is not the temporary claim made from ``snapshot`` with ``labels`` ("" when it is)."""
    if claim is None:
        return "it is not there"
    found = (claim.get("metadata") or {}).get("labels") or {}
    if any(found.get(k) != v for k, v in labels.items()):
        return "it was not made by this operation (its labels differ)"
    source = (claim.get("spec") or {}).get("dataSource") or {}
    if (source.get("apiGroup"), source.get("kind"), source.get("name")) != (
        "snapshot.storage.k8s.io", "VolumeSnapshot", snapshot,
    ):  # fmt: skip
        return f"it is not made from VolumeSnapshot {snapshot}"
    return ""


def helper_pod(
    name: str, namespace: str, claim: str, image: str, labels: dict[str, str], read_only: bool
) -> RawObject:
    """A pod whose only use is to have the node mount ``claim``: it holds still, as an unprivileged user
    with nothing to escalate, until it is deleted."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 5,
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True, "runAsUser": HELPER_USER, "runAsGroup": HELPER_USER,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [{
                "name": "hold",
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "command": list(HOLD_COMMAND),
                "volumeMounts": [{"name": POD_VOLUME, "mountPath": MOUNT_PATH, "readOnly": read_only}],
                "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}},
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
            }],
            "volumes": [{"name": POD_VOLUME, "persistentVolumeClaim": {"claimName": claim,
                                                                       "readOnly": read_only}}],
        },
    }  # fmt: skip


def pod_placed(pod: RawObject | None) -> tuple[str, str] | None:
    """(node, uid) once ``pod`` is scheduled and running; None before."""
    if pod is None:
        return None
    node = (pod.get("spec") or {}).get("nodeName")
    if not node or (pod.get("status") or {}).get("phase") != "Running":
        return None
    return str(node), str(pod["metadata"]["uid"])


def unmounted_claims(claims: set[tuple[str, str]], objects: list[RawObject]) -> set[tuple[str, str]]:
    """Of ``claims`` ((namespace, name)), those no Pod among ``objects`` mounts."""
    mounted: set[tuple[str, str]] = set()
    for obj in objects:
        if obj.get("kind") != "Pod" or obj.get("apiVersion") != "v1":
            continue
        namespace = (obj.get("metadata") or {}).get("namespace")
        for volume in (obj.get("spec") or {}).get("volumes") or []:
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if claim:
                mounted.add((str(namespace), str(claim)))
    return set(claims) - mounted


def with_labels(obj: RawObject, labels: dict[str, str]) -> RawObject:
    """A copy of ``obj`` with ``labels`` added."""
    found = copy.deepcopy(obj)
    found.setdefault("metadata", {}).setdefault("labels", {}).update(labels)
    return found


def leftovers(
    items: Sequence[RawObject], kind: str, live_uids: set[str], now: datetime.datetime, grace_seconds: float
) -> list[RawObject]:
    """Of the data mover's pods and claims (``items``), those of ``kind`` (backup or restore) whose
    operation is not in ``live_uids`` (the operations of that kind not yet Final, listed before
    ``items``): their operation ended or is gone. One younger than ``grace_seconds`` is kept, since an
    operation created between the two lists is in neither. Pods come first: a claim in use stays until
    the pod that mounts it is gone."""
    uid_label = BACKUP_UID_LABEL if kind == BACKUP else RESTORE_UID_LABEL
    found = []
    for item in items:
        meta = item.get("metadata") or {}
        labels = meta.get("labels") or {}
        created = timeutil.parse_time(meta.get("creationTimestamp"))
        if labels.get(MOVER_LABEL) != kind or not labels.get(uid_label) or created is None:
            continue
        if labels[uid_label] not in live_uids and (now - created).total_seconds() >= grace_seconds:
            found.append(item)
    return sorted(found, key=lambda i: (i.get("kind") != "Pod", str(i["metadata"].get("namespace")),
                                        str(i["metadata"].get("name"))))  # fmt: skip
