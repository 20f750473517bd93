"""A backup's stages owned by the snapshot service: Initial → PreExecRule → Volumes → (export) and
PostExecRule → Final, where the manifest is written last."""

from __future__ import annotations

from typing import Any

import structlog
from kubernetes.client.exceptions import ApiException

from davit import constants, progress, queueing, timeutil
from davit.api.types import Stage, Status
from davit.constants import Kind, Queue
from davit.format.layout import BackupRef
from davit.messages import Message
from davit.opstate import OperationState
from davit.runtime import LocationUnavailable, Runtime

log = structlog.get_logger(__name__)
RawObject = dict[str, Any]
KIND = Kind.APPLICATION_BACKUP


def handle(rt: Runtime, message: Message) -> None:
    obj = rt.ops.get(KIND, message.namespace, message.name)
    if obj is None or obj["metadata"]["uid"] != message.uid:
        log.info("operation.gone")
        return
    stage = (obj.get("status") or {}).get("stage")
    if message.stage == Stage.INITIAL and stage == Stage.INITIAL:
        start(rt, obj)
    elif message.stage == Stage.POST_EXEC_RULE and stage == Stage.POST_EXEC_RULE:
        finish(rt, obj)
    else:
        log.info("message.stale", current_stage=stage)


def start(rt: Runtime, obj: RawObject) -> None:
    meta, spec = obj["metadata"], obj.get("spec") or {}
    state = OperationState(rt.redis, meta["uid"])
    try:
        obj = progress.set_stage(
            rt, KIND, obj, Stage.PRE_EXEC_RULE, Status.IN_PROGRESS, "checking the backup location",
            check_version=True,
        )  # fmt: skip
    except ApiException as exc:
        if exc.status == 409:  # another worker took the same message
            log.info("message.duplicate")
            return
        raise
    # Before anything is written: from now on, deleting the backup goes through its reclaimPolicy.
    obj = {**rt.ops.add_finalizer(KIND, obj, constants.BACKUP_FINALIZER), "status": obj.get("status")}
    state.log("backup.started", backupLocation=spec.get("backupLocation"))
    try:
        rt.repository(meta["namespace"], spec["backupLocation"], verify=True)
    except LocationUnavailable as exc:
        state.log("backup.failed", reason=exc.reason)
        progress.fail(rt, KIND, obj, exc.reason)
        return
    if spec.get("preExecRule"):
        # Exec rules run through the Kubernetes exec API; until that lands, refuse rather than take a
        # backup the user believes was quiesced.
        reason = "preExecRule is not supported by this version of Davit yet"
        progress.fail(rt, KIND, obj, reason)
        return
    obj = progress.set_stage(
        rt, KIND, obj, Stage.VOLUMES, Status.IN_PROGRESS, "no volume data is backed up by this version",
        extra={"volumes": [], "volumesProgress": "0/0"},
    )  # fmt: skip
    obj = progress.set_stage(rt, KIND, obj, Stage.APPLICATIONS, Status.PENDING, "queued for davit.export")
    queueing.send(
        rt.celery,
        Message(KIND, meta["namespace"], meta["name"], meta["uid"], Stage.APPLICATIONS.value),
        Queue.EXPORT,
    )


def finish(rt: Runtime, obj: RawObject) -> None:
    meta, spec = obj["metadata"], obj.get("spec") or {}
    state = OperationState(rt.redis, meta["uid"])
    if spec.get("postExecRule"):
        progress.fail(rt, KIND, obj, "postExecRule is not supported by this version of Davit yet")
        return
    repository = rt.repository(meta["namespace"], spec["backupLocation"])
    ref = BackupRef(meta["namespace"], meta["name"], meta["uid"])
    parts = state.parts()
    resources = [entry for info in parts.values() for entry in info.get("resources", [])]
    total = sum(int(info["rawSize"]) for info in parts.values())
    stored = sum(int(info["storedSize"]) for info in parts.values())
    started = (obj.get("status") or {}).get("triggerTimestamp")
    manifest = {
        "backup": {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "metadata": {
                k: meta.get(k)
                for k in ("name", "namespace", "uid", "labels", "annotations", "creationTimestamp")
            },
            "spec": spec,
        },
        "summary": {
            "resourceCount": len(resources),
            "totalSize": total,
            "storedSize": stored,
            "startedAt": started,
            "finishedAt": timeutil.format_time(timeutil.utcnow()),
            "encrypted": repository.sealer.encrypts,
        },
        "parts": sorted(
            ({k: v for k, v in info.items() if k != "resources"} for info in parts.values()),
            key=lambda p: p["part"],
        ),
        "resources": resources,
        "volumes": [],
    }
    state.log("backup.completed", resources=len(resources), totalSize=total, storedSize=stored)
    repository.write_log(ref, state.log_lines())
    manifest_size = repository.write_manifest(ref, manifest)
    progress.set_stage(
        rt, KIND, obj, Stage.FINAL, Status.SUCCESSFUL, "",
        extra={
            "resourceCount": len(resources), "totalSize": total, "storedSize": stored + manifest_size,
            "backupPath": f"{repository.store.url.rstrip('/')}/{ref.root}",
        },
    )  # fmt: skip
    state.clear()
