"""Snapshot mode (SPEC §5): a ``snapshot.storage.k8s.io/v1`` VolumeSnapshot per PVC, waited for
``readyToUse`` and recorded in the manifest for a restore in the same cluster.

The VolumeSnapshot is created in the claim's namespace with a name derived from the backup and the claim,
so a retried or re-sent task finds the one it created before instead of cutting a second snapshot. The
CSI external-snapshotter and the volume's driver do the rest; this module only asks and waits (a watch
on the one object, bounded by a deadline), and fails with the snapshot's own ``status.error`` when the
snapshotter reports one.

Every VolumeSnapshot carries the backup's uid in the label ``davit.dev/backup-uid``, failed and timed-out
ones too: that label, not the manifest, is how deleting the backup finds the snapshots to delete.

The helpers before the API calls are pure (class choice, naming, status parsing) and unit-tested.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

import structlog
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines
from urllib3.exceptions import HTTPError as Urllib3Error

from davit import errors
from davit.api.objects import RawObject
from davit.labels import label_value
from davit.volumes import mover
from davit.volumes.claims import VolumePlan

log = structlog.get_logger(__name__)

GROUP = "snapshot.storage.k8s.io"
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"
SNAPSHOTS = "volumesnapshots"
CONTENTS = "volumesnapshotcontents"
CLASSES = "volumesnapshotclasses"
#: The annotation the external-snapshotter reads to pick a class when a snapshot names none.
DEFAULT_CLASS_ANNOTATION = "snapshot.storage.kubernetes.io/is-default-class"
BACKUP_LABEL = "davit.dev/backup"
BACKUP_UID_LABEL = "davit.dev/backup-uid"

#: Longest single watch request while waiting, so ``heartbeat`` runs at least this often.
HEARTBEAT_SECONDS = 30.0


class SnapshotError(errors.Transient):
    """A VolumeSnapshot could not be taken (the message, saying which and why, goes into the backup's
    ``status.volumes[].reason``) or deleted."""


class SnapshotTimeout(SnapshotError):
    """The VolumeSnapshot was not ready to use within the timeout."""


# --- pure helpers ----------------------------------------------------------------------------------------


def choose_class(classes: list[RawObject], driver: str) -> str:
    """The VolumeSnapshotClass to use for a volume of ``driver``: the only one for that driver, else the
    one annotated ``snapshot.storage.kubernetes.io/is-default-class: "true"`` (the external-snapshotter's
    rule for a snapshot that names no class; like it, several or no default among several is an error)."""
    matching = sorted(
        (c for c in classes if str(c.get("driver", "")) == driver), key=lambda c: str(c["metadata"]["name"])
    )
    if not matching:
        raise SnapshotError(f"no VolumeSnapshotClass for driver {driver}")
    if len(matching) == 1:
        return str(matching[0]["metadata"]["name"])
    defaults = [
        str(c["metadata"]["name"])
        for c in matching
        if str((c["metadata"].get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION, "")).lower() == "true"
    ]
    names = ", ".join(str(c["metadata"]["name"]) for c in matching)
    if len(defaults) == 1:
        return defaults[0]
    if not defaults:
        raise SnapshotError(
            f"{len(matching)} VolumeSnapshotClasses for driver {driver} ({names}) and none is annotated "
            f'{DEFAULT_CLASS_ANNOTATION}="true"'
        )
    raise SnapshotError(
        f"{len(defaults)} VolumeSnapshotClasses for driver {driver} are annotated "
        f'{DEFAULT_CLASS_ANNOTATION}="true" ({", ".join(defaults)}); exactly one may be'
    )


def snapshot_name(backup_name: str, claim: str, backup_uid: str) -> str:
    """``<backup>-<claim>-<first 8 of the backup's uid>`` (``davit.volumes.mover.derived_name``)."""
    return mover.derived_name(backup_name, claim, backup_uid)


def snapshot_body(
    name: str, plan: VolumePlan, class_name: str, backup_name: str, backup_uid: str
) -> RawObject:
    return {
        "apiVersion": API_VERSION,
        "kind": "VolumeSnapshot",
        "metadata": {
            "name": name,
            "namespace": plan.namespace,
            "labels": {BACKUP_LABEL: label_value(backup_name), BACKUP_UID_LABEL: backup_uid},
        },
        "spec": {
            "volumeSnapshotClassName": class_name,
            "source": {"persistentVolumeClaimName": plan.claim},
        },
    }


def parse_quantity(value: Any) -> int:
    """A Kubernetes quantity (``1Gi``, ``500M``, ``1073741824``, an integer) in bytes, rounded up; 0 for
    none or nonsense (the size is informative, a snapshot is not failed over it)."""
    if value is None or isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    text = str(value).strip()
    binary = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
    decimal = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
               "k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9), "T": Decimal(10**12),
               "P": Decimal(10**15), "E": Decimal(10**18)}  # fmt: skip
    factor: Decimal | int
    if text[-2:] in binary:
        number, factor = text[:-2], binary[text[-2:]]
    elif text[-1:] in decimal and not text[-1:].isdigit():
        number, factor = text[:-1], decimal[text[-1:]]
    else:
        number, factor = text, 1  # plain or with an exponent ("1e9")
    try:
        amount = Decimal(number) * factor
    except (InvalidOperation, ValueError):
        return 0
    if not amount.is_finite() or amount <= 0:
        return 0
    return math.ceil(amount)


@dataclass(frozen=True)
class SnapshotState:
    """What a VolumeSnapshot's status says."""

    ready: bool
    error: str
    content: str
    restore_size: Any
    creation_time: str

    @classmethod
    def of(cls, snapshot: RawObject) -> SnapshotState:
        status = snapshot.get("status") or {}
        error = status.get("error") or {}
        message = ""
        if error:
            message = str(error.get("message") or "") or "the snapshotter reported an error without a message"
        return cls(
            ready=status.get("readyToUse") is True,
            error=message,
            content=str(status.get("boundVolumeSnapshotContentName") or ""),
            restore_size=status.get("restoreSize"),
            creation_time=str(status.get("creationTime") or ""),
        )


def outcome(state: SnapshotState) -> Literal["ready", "failed", "waiting"]:
    """Ready wins over an error: the snapshotter keeps the last error it saw while it retries, and a
    snapshot that became ready is usable."""
    if state.ready:
        return "ready"
    return "failed" if state.error else "waiting"


def result_entry(
    name: str, class_name: str, state: SnapshotState, restore_size: Any = None, snapshot_handle: str = ""
) -> dict[str, Any]:
    """The volume's entry for the manifest (merged into ``status.volumes[]``). ``snapshot_handle``, the
    storage system's id of the snapshot from the bound content, is recorded when known: a restore
    compares it with what the cluster's content says then."""
    size = state.restore_size if state.restore_size is not None else restore_size
    total = parse_quantity(size)
    handle = {"snapshotHandle": snapshot_handle} if snapshot_handle else {}
    return {
        "status": "Successful",
        "reason": "",
        "volumeSnapshot": name,
        "volumeSnapshotContent": state.content,
        "volumeSnapshotClass": class_name,
        "restoreSize": "" if size is None else str(size),
        "totalSize": total,
        "bytesDone": total,
        **handle,
    }


def backup_selector(backup_uid: str) -> str:
    """The label selector of the VolumeSnapshots taken for the backup of uid ``backup_uid``."""
    return f"{BACKUP_UID_LABEL}={backup_uid}"


def snapshot_namespaces(backup: RawObject) -> list[str]:
    """The namespaces where ``backup`` may have VolumeSnapshots: those of its volumes planned in snapshot
    mode, whatever became of them. ``status.volumes[]`` is written with the plan, before any snapshot is
    asked for, and a failed or timed-out snapshot stays behind (labelled) like a successful one."""
    volumes = (backup.get("status") or {}).get("volumes") or []
    return sorted(
        {str(v["namespace"]) for v in volumes if v.get("mode") == "snapshot" and v.get("namespace")}
    )


def owned_by(snapshot: RawObject, plan: VolumePlan, backup_uid: str) -> bool:
    """Whether an existing VolumeSnapshot of our name is the one this backup asked for."""
    labels = snapshot["metadata"].get("labels") or {}
    source = (snapshot.get("spec") or {}).get("source") or {}
    return (
        labels.get(BACKUP_UID_LABEL) == backup_uid and source.get("persistentVolumeClaimName") == plan.claim
    )


# --- against the API server ------------------------------------------------------------------------------


def _json(response: Any) -> RawObject:
    data: RawObject = json.loads(response.data)
    return data


def snapshot_drivers(api: client.ApiClient) -> set[str]:
    """Drivers that have a VolumeSnapshotClass (none when the snapshot CRDs are not installed)."""
    try:
        response = client.CustomObjectsApi(api).list_cluster_custom_object(
            GROUP, VERSION, CLASSES, _preload_content=False
        )
    except ApiException as exc:
        if exc.status == 404:
            return set()
        raise
    return {str(c.get("driver")) for c in _json(response).get("items", [])}


def _list_classes(custom: Any) -> list[RawObject]:
    try:
        response = custom.list_cluster_custom_object(GROUP, VERSION, CLASSES, _preload_content=False)
    except ApiException as exc:
        if exc.status == 404:
            raise SnapshotError(f"the {GROUP}/{VERSION} CRDs are not installed") from exc
        raise
    items: list[RawObject] = _json(response).get("items", [])
    return items


def _get_snapshot(custom: Any, namespace: str, name: str) -> RawObject | None:
    try:
        return _json(
            custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, SNAPSHOTS, name, _preload_content=False
            )
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _check_existing(existing: RawObject, plan: VolumePlan, backup_uid: str) -> RawObject:
    meta = existing["metadata"]
    where = f"{meta['namespace']}/{meta['name']}"
    if not owned_by(existing, plan, backup_uid):
        raise SnapshotError(
            f"VolumeSnapshot {where} exists but was not created by this backup for claim {plan.claim}"
        )
    if meta.get("deletionTimestamp"):
        raise SnapshotError(f"VolumeSnapshot {where} is being deleted")
    log.info("volumesnapshot.exists", namespace=meta["namespace"], name=meta["name"], claim=plan.claim)
    return existing


def ensure_snapshot(custom: Any, plan: VolumePlan, name: str, backup_name: str, backup_uid: str) -> RawObject:
    """The backup's VolumeSnapshot of the claim: the one a previous attempt created (whatever the classes
    are now), else a new one of the class for the volume's driver."""
    existing = _get_snapshot(custom, plan.namespace, name)
    if existing is not None:
        return _check_existing(existing, plan, backup_uid)
    class_name = choose_class(_list_classes(custom), plan.driver)
    body = snapshot_body(name, plan, class_name, backup_name, backup_uid)
    try:
        created = _json(
            custom.create_namespaced_custom_object(
                GROUP, VERSION, plan.namespace, SNAPSHOTS, body, _preload_content=False
            )
        )
    except ApiException as exc:
        if exc.status != 409:
            raise
        existing = _get_snapshot(custom, plan.namespace, name)  # another attempt created it meanwhile
        if existing is None:
            raise SnapshotError(
                f"VolumeSnapshot {plan.namespace}/{name} vanished while being created"
            ) from exc
        return _check_existing(existing, plan, backup_uid)
    log.info(
        "volumesnapshot.created",
        namespace=plan.namespace,
        name=name,
        claim=plan.claim,
        snapshotClass=class_name,
    )
    return created


def _settled(snapshot: RawObject) -> bool:
    return outcome(SnapshotState.of(snapshot)) != "waiting"


def _watch_until_settled(custom: Any, snapshot: RawObject, seconds: float) -> RawObject | None:
    """Follow the snapshot for up to ``seconds`` from the version in hand; returns its latest form once
    it is ready or failed, or None when the watch ended first (the caller reads it again)."""
    meta = snapshot["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    timeout = max(1, math.ceil(seconds))
    response = custom.list_namespaced_custom_object(
        GROUP, VERSION, namespace, SNAPSHOTS,
        field_selector=f"metadata.name={name}", watch=True, resource_version=meta["resourceVersion"],
        timeout_seconds=timeout, allow_watch_bookmarks=True, _preload_content=False,
        _request_timeout=(10, timeout + 10),
    )  # fmt: skip
    try:
        for line in iter_resp_lines(response):
            if not line:
                continue
            event = json.loads(line)
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                return None  # typically 410 Gone: read it again and watch from there
            if kind == "DELETED":
                raise SnapshotError(
                    f"VolumeSnapshot {namespace}/{name} was deleted before it was ready to use"
                )
            if kind in ("ADDED", "MODIFIED") and _settled(obj):
                return obj
    except Urllib3Error:
        return None  # the connection dropped or went quiet: read it again
    finally:
        response.close()
        response.release_conn()
    return None


def _content_status(custom: Any, content: str) -> RawObject:
    """The bound content's ``status``: its ``snapshotHandle``, and ``restoreSize`` (bytes) for drivers that
    leave the snapshot's empty; {} when it cannot be read."""
    if not content:
        return {}
    try:
        found = _json(
            custom.get_cluster_custom_object(GROUP, VERSION, CONTENTS, content, _preload_content=False)
        )
    except ApiException as exc:
        if exc.status in (403, 404):
            return {}
        raise
    status = found.get("status")
    return status if isinstance(status, dict) else {}


def snapshot_volume(
    api: client.ApiClient,
    plan: VolumePlan,
    backup_name: str,
    backup_uid: str,
    timeout_seconds: float,
    heartbeat: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Snapshot ``plan``'s claim and wait until the snapshot is ready to use; returns the volume's entry for
    the manifest. Raises SnapshotError (SnapshotTimeout after ``timeout_seconds``) with the reason.

    ``heartbeat`` is called at least every 30 s while waiting (to keep the backup's status fresh)."""
    if plan.mode != "snapshot":
        raise ValueError(f"{plan.part} is planned as {plan.mode}, not snapshot")
    deadline = time.monotonic() + timeout_seconds
    custom = client.CustomObjectsApi(api)
    name = snapshot_name(backup_name, plan.claim, backup_uid)
    created = ensure_snapshot(custom, plan, name, backup_name, backup_uid)
    class_name = str((created.get("spec") or {}).get("volumeSnapshotClassName") or "")
    snapshot: RawObject | None = created
    where = f"{plan.namespace}/{name}"
    while True:
        if snapshot is None:
            snapshot = _get_snapshot(custom, plan.namespace, name)
            if snapshot is None:
                raise SnapshotError(f"VolumeSnapshot {where} was deleted before it was ready to use")
        state = SnapshotState.of(snapshot)
        if outcome(state) == "ready":
            content = _content_status(custom, state.content)
            handle = content.get("snapshotHandle")
            result = result_entry(name, class_name, state, content.get("restoreSize"),
                                  handle if isinstance(handle, str) else "")  # fmt: skip
            log.info("volumesnapshot.ready", namespace=plan.namespace, name=name, content=state.content,
                     restoreSize=result["restoreSize"])  # fmt: skip
            return result
        if outcome(state) == "failed":
            raise SnapshotError(f"VolumeSnapshot {where} failed: {state.error}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SnapshotTimeout(
                f"VolumeSnapshot {where} was not ready to use after {timeout_seconds:g}s (timeout)"
            )
        if heartbeat is not None:
            heartbeat()
        snapshot = _watch_until_settled(custom, snapshot, min(remaining, HEARTBEAT_SECONDS))


def api_reason(exc: ApiException) -> str:
    """The API server's own message for a refused call (its Status object), else the HTTP status."""
    try:
        message = str(json.loads(exc.body or "{}").get("message") or "")
    except (ValueError, AttributeError):
        message = ""
    return message or f"{exc.status} {exc.reason}"


def delete_backup_snapshots(api: client.ApiClient, namespaces: list[str], backup_uid: str) -> list[str]:
    """Delete the VolumeSnapshots labelled with ``backup_uid`` in ``namespaces``; returns the
    ``namespace/name`` of each one asked to go (the snapshotter then releases its content, as the content's
    deletionPolicy says). Without the snapshot CRDs, or when a snapshot is already gone, there is nothing
    to do; any other refusal raises SnapshotError, so the backup's deletion is retried and, failing that,
    keeps its finalizer with the reason in its status."""
    custom = client.CustomObjectsApi(api)
    deleted: list[str] = []
    for namespace in namespaces:
        try:
            listed = _json(
                custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, SNAPSHOTS,
                    label_selector=backup_selector(backup_uid), _preload_content=False,
                )
            )  # fmt: skip
        except ApiException as exc:
            if exc.status == 404:
                continue  # the snapshot CRDs are not installed: no snapshot can exist
            raise SnapshotError(
                f"the VolumeSnapshots in {namespace} could not be listed: {api_reason(exc)}"
            ) from exc
        for snapshot in listed.get("items", []):
            name = snapshot["metadata"]["name"]
            try:
                custom.delete_namespaced_custom_object(
                    GROUP, VERSION, namespace, SNAPSHOTS, name, _preload_content=False
                )
            except ApiException as exc:
                if exc.status == 404:
                    continue
                raise SnapshotError(
                    f"VolumeSnapshot {namespace}/{name} could not be deleted: {api_reason(exc)}"
                ) from exc
            deleted.append(f"{namespace}/{name}")
    return deleted
