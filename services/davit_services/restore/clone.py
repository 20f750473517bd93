"""An ApplicationClone: a backup of the source namespace and a restore of it into the destination, each an
ordinary Davit operation the clone creates and follows.

* **Staging location**: the BackupLocation of the admin namespace named by the ``clone_location``
  setting, else the first Available one there (by name). Deduplication makes the staging backup cheap
  when the source was backed up to that location before.
* **Volumes** stage: the staging ApplicationBackup ``<clone>-<uid prefix>`` (the clone's selectors and
  exec rules, reclaimPolicy Delete) is created and runs.
* **Applications** stage: with ``replacePolicy: Fail``, the clone plans the restore first and fails,
  writing nothing, if the destination holds any object the clone would write. Then the staging
  ApplicationRestore (namespace mapping source → destination, replacePolicy Delete or Retain) runs; its
  counts and volumes are copied into the clone's status as it goes and when it ends.
* **Final**: the clone ends as its restore did; the staging backup is deleted (its data with it, up to
  what other backups share); the restore stays for inspection. Both carry an owner reference to the
  clone, so deleting the clone deletes them.

No task waits for a staging operation: the clone's task creates it and returns. Its message is sent again
by the watcher when the staging operation changes (``davit_services.watcher.clones``): its task then shows
the staging operation's progress, or, once that ended, moves the clone on. Every step is idempotent
(objects are found by name before being created), so a clone whose message or worker was lost is picked
up again by the watcher's stall detection from the stage it had reached.
"""

from __future__ import annotations

from typing import Any

import structlog

from davit import constants, errors, labels
from davit.api.objects import RawObject
from davit.api.types import Stage, Status
from davit.constants import Kind
from davit.kube.client import ApiException
from davit.operations import progress, stages
from davit.operations.messages import Message
from davit.operations.ports import Cluster, Ports
from davit.restore.plan import plan_restore
from davit.tenancy import RestoreGuard
from davit_services.restore.apply import Applier, describe, key_of
from davit_services.restore.restore import RestoreRefused, namespace_default, read_backup

log = structlog.get_logger(__name__)
KIND = Kind.APPLICATION_CLONE
#: What of a staging operation's status the clone shows while it runs (and, from its restore, at the end).
SHOWN = ("resourcesByKind", "volumes", "volumesProgress")
CONFLICTS_SHOWN = 5


class CloneFailed(errors.Permanent):
    """The clone cannot go on; the reason goes into its status as it is."""


class CloneMoved(errors.Transient):
    """The clone changed while its task was moving it on (a progress update raced the stage change): the
    task is tried again and looks afresh (a message for a stage the clone has left is dropped)."""


def handle(ports: Ports, message: Message) -> None:
    obj = ports.cluster.current(KIND, message.namespace, message.name, message.uid, message.stage)
    if obj is None:
        return
    stage = (obj.get("status") or {}).get("stage")
    if stage == Stage.FINAL:
        log.info("message.stale", current_stage=stage)
        return
    if stage == Stage.INITIAL:
        started = progress.advance(ports, KIND, obj, Stage.INITIAL, stages.Outcome.STARTED,
                                   "backing up the source namespace", check_version=True)  # fmt: skip
        if started is None:  # another worker took the same message
            return
        obj = started
    try:
        drive(ports, obj)
    except CloneFailed as exc:
        current = ports.cluster.get(KIND, message.namespace, message.name) or obj
        progress.fail(ports, KIND, current, str(exc))


def _names(obj: RawObject) -> str:
    """The staging backup's and restore's name: the clone's, made unique by its uid."""
    return f"{obj['metadata']['name']}-{obj['metadata']['uid'][:8]}"


def _owned_by(obj: RawObject) -> dict[str, Any]:
    meta = obj["metadata"]
    owner = {"apiVersion": constants.API_GROUP_VERSION, "kind": KIND.value, "name": meta["name"],
             "uid": meta["uid"], "controller": True, "blockOwnerDeletion": False}  # fmt: skip
    return {
        "ownerReferences": [owner],
        "labels": {f"{constants.ANNOTATION_PREFIX}clone": labels.label_value(meta["name"])},
    }


def drive(ports: Ports, obj: RawObject) -> None:
    """Take the clone as far as it can go now: create its stage's staging operation if it has none; while
    that runs, show its progress and return; once it ended, move the clone on."""
    meta, spec = obj["metadata"], obj.get("spec") or {}
    namespace, name = meta["namespace"], _names(obj)
    if (obj.get("status") or {}).get("stage") == Stage.VOLUMES:
        location = staging_location(ports, namespace)
        backup_spec = {
            "backupLocation": location,
            "namespaces": [spec["sourceNamespace"]],
            "reclaimPolicy": "Delete",
            **{k: spec[k] for k in ("selectors", "preExecRule", "postExecRule") if spec.get(k)},
        }
        _create(ports.cluster, namespace, Kind.APPLICATION_BACKUP,
                {"metadata": {"name": name, **_owned_by(obj)}, "spec": backup_spec})  # fmt: skip
        backup = _ended(ports, obj, Kind.APPLICATION_BACKUP, name)
        if backup is None:
            return
        status = backup.get("status") or {}
        if status.get("status") not in (Status.SUCCESSFUL, Status.PARTIAL_SUCCESS):
            _delete(ports.cluster, namespace, Kind.APPLICATION_BACKUP, name)
            raise CloneFailed(f"the backup of {spec['sourceNamespace']} failed: {status.get('reason')}")
        if spec.get("replacePolicy") == "Fail":
            _refuse_conflicts(ports, obj, location, name)
        obj = _moved_on(ports, obj, Stage.VOLUMES, stages.Outcome.DONE,
                        f"restoring into {spec['destinationNamespace']}",
                        extra={"resourceCount": status.get("resourceCount")})  # fmt: skip
    location = ((ports.cluster.get(Kind.APPLICATION_BACKUP, namespace, name) or {}).get("spec") or {}).get(
        "backupLocation"
    ) or staging_location(ports, namespace)
    restore_spec = {
        "backupName": name,
        "backupLocation": location,
        "namespaceMapping": {spec["sourceNamespace"]: spec["destinationNamespace"]},
        "replacePolicy": "Delete" if spec.get("replacePolicy") == "Delete" else "Retain",
    }
    _create(ports.cluster, namespace, Kind.APPLICATION_RESTORE,
            {"metadata": {"name": name, **_owned_by(obj)}, "spec": restore_spec})  # fmt: skip
    restored = _ended(ports, obj, Kind.APPLICATION_RESTORE, name)
    if restored is None:
        return
    status = restored.get("status") or {}
    _delete(ports.cluster, namespace, Kind.APPLICATION_BACKUP, name)
    _moved_on(
        ports, obj, Stage.APPLICATIONS, stages.outcome_of(Status(status.get("status") or Status.FAILED)),
        status.get("reason") or "",
        extra={k: status[k] for k in (*SHOWN, "resourceCount") if k in status},
    )  # fmt: skip


def _moved_on(
    ports: Ports, obj: RawObject, stage: Stage, outcome: stages.Outcome, reason: str, extra: dict[str, Any]
) -> RawObject:
    """Move the clone on from ``stage``, unless it changed since it was read: then CloneMoved (retried),
    so that two tasks seeing the same ended staging operation move it on once."""
    moved = progress.advance(ports, KIND, obj, stage, outcome, reason, extra=extra, check_version=True)
    if moved is None:
        raise CloneMoved(f"the clone changed while it left stage {stage.value}")
    return moved


def staging_location(ports: Ports, namespace: str) -> str:
    """The BackupLocation a clone stages its backup through (see the module docstring)."""
    if ports.settings.clone_location:
        return ports.settings.clone_location
    items = ports.cluster.list_all(Kind.BACKUP_LOCATION, namespace, sort=False)
    available = sorted(
        i["metadata"]["name"] for i in items if (i.get("status") or {}).get("phase") == "Available"
    )
    if not available:
        raise CloneFailed(
            f"no Available BackupLocation in {namespace} to stage the clone through "
            "(create one, or name one with DAVIT_CLONE_LOCATION)"
        )
    return str(available[0])


def _refuse_conflicts(ports: Ports, obj: RawObject, location: str, name: str) -> None:
    """replacePolicy Fail: the objects the clone would write, planned as its restore will plan them; any
    of them already in the destination fails the clone before anything is written."""
    meta, spec = obj["metadata"], obj.get("spec") or {}
    restore_spec = {"backupName": name, "backupLocation": location,
                    "namespaceMapping": {spec["sourceNamespace"]: spec["destinationNamespace"]}}  # fmt: skip
    try:
        manifest, objects = read_backup(ports, meta["namespace"], restore_spec)
    except RestoreRefused as exc:
        raise CloneFailed(str(exc)) from exc
    plan = plan_restore(
        objects, restore_spec, backup_name=name, backup_uid=manifest["backup"]["metadata"]["uid"],
        restore_name=name, restore_uid=meta["uid"], cluster_scoped_allowed=False,
    )  # fmt: skip
    applier = Applier(ports.cluster, RestoreGuard(meta["namespace"], ports.settings.admin_namespace))
    existing = applier.existing(plan.objects)
    conflicts = [o for o in plan.objects if key_of(o) in existing and not namespace_default(o)]
    if conflicts:
        _delete(ports.cluster, meta["namespace"], Kind.APPLICATION_BACKUP, name)
        shown = ", ".join(describe(o) for o in conflicts[:CONFLICTS_SHOWN])
        more = f" and {len(conflicts) - CONFLICTS_SHOWN} more" if len(conflicts) > CONFLICTS_SHOWN else ""
        raise CloneFailed(
            f"replacePolicy Fail: {spec['destinationNamespace']} already holds {len(conflicts)} object(s) "
            f"the clone would write: {shown}{more}; nothing was written"
        )


def _create(cluster: Cluster, namespace: str, kind: Kind, body: RawObject) -> None:
    body = {"apiVersion": constants.API_GROUP_VERSION, "kind": kind.value, **body}
    try:
        cluster.create(kind, namespace, body)
    except ApiException as exc:
        if exc.status != 409:  # made by an earlier attempt
            raise


def _delete(cluster: Cluster, namespace: str, kind: Kind, name: str) -> None:
    try:
        cluster.delete(kind, namespace, name)
    except ApiException as exc:
        if exc.status != 404:
            raise


def _ended(ports: Ports, clone: RawObject, kind: Kind, name: str) -> RawObject | None:
    """The staging operation once it ended; None while it runs (its progress is shown on the clone)."""
    current = ports.cluster.get(kind, clone["metadata"]["namespace"], name)
    if current is None:
        raise CloneFailed(f"the clone's {kind.value} {name} disappeared")
    status = current.get("status") or {}
    if status.get("stage") == Stage.FINAL:
        return current
    progress.heartbeat(ports, KIND, clone, {k: status[k] for k in SHOWN if k in status})
    return None
