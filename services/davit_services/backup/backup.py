"""A backup's stages owned by the snapshot service: Initial → PreExecRule → Volumes → (export) and
PostExecRule → Final, where the manifest is written last."""

from __future__ import annotations

import time
from dataclasses import replace

import structlog

from davit import constants, timeutil
from davit.api.objects import RawObject
from davit.api.types import Stage, Status
from davit.backup import exec_rules, selection
from davit.constants import Kind, node_queue
from davit.format.layout import BackupRef
from davit.kube import csi
from davit.kube.client import ApiException
from davit.operations import progress, state_loss
from davit.operations.messages import Message
from davit.operations.ports import Ports
from davit.operations.runtime import LocationUnavailable
from davit.operations.scratch import BackupScratch
from davit.operations.stages import Outcome
from davit.storage.base import ObjectStore, StorageError
from davit.volumes import backup_stage, mover
from davit.volumes.claims import VolumePlan
from davit_services.backup import rule_runner

log = structlog.get_logger(__name__)
KIND = Kind.APPLICATION_BACKUP
#: Events of the data mover: a snapshot mounted to be read, or a volume that could not be.
MOVE_STARTED = "VolumeDataMoving"
MOVE_FAILED = "VolumeDataMoveFailed"


def handle(ports: Ports, message: Message) -> None:
    obj = ports.cluster.current(KIND, message.namespace, message.name, message.uid, message.stage)
    if obj is None:
        return
    stage = (obj.get("status") or {}).get("stage")
    if message.stage == Stage.INITIAL and stage == Stage.INITIAL:
        start(ports, obj)
    elif message.stage == Stage.PRE_EXEC_RULE and stage == Stage.PRE_EXEC_RULE:
        # The watcher saw PreExecRule stall: the worker that started it died (it writes no heartbeat
        # there). Everything from the location check on is done again; planning the volumes is once.
        log.info("backup.resumed", stage=stage)
        prepare_volumes(ports, obj)
    elif message.stage == Stage.VOLUMES and stage == Stage.VOLUMES:
        state = ports.scratch.backup(message.uid)
        if not message.part:  # the watcher saw the stage stall
            if state_loss.is_lost(state):
                state_loss.fail(ports, KIND, obj, Stage.VOLUMES, state)
            elif not backup_stage.resend_outstanding(ports.dispatch, obj, state):
                # Every volume has its result, yet the backup is still here: the last node agent died
                # before it moved the backup on.
                backup_stage.advance(ports, message, state)
        else:
            snapshot_volume(ports, message, state)
    elif message.stage == Stage.POST_EXEC_RULE and stage == Stage.POST_EXEC_RULE:
        finish(ports, obj)
    else:
        log.info("message.stale", current_stage=stage)


def start(ports: Ports, obj: RawObject) -> None:
    meta, spec = obj["metadata"], obj.get("spec") or {}
    state = ports.scratch.backup(meta["uid"])
    started = progress.advance(
        ports, KIND, obj, Stage.INITIAL, Outcome.STARTED, "checking the backup location", check_version=True
    )
    if started is None:  # another worker took the same message
        return
    obj = started
    # Before anything is written: from now on, deleting the backup goes through its reclaimPolicy.
    obj = {**ports.cluster.add_finalizer(KIND, obj, constants.BACKUP_FINALIZER), "status": obj.get("status")}
    state.log("backup.started", backupLocation=spec.get("backupLocation"))
    prepare_volumes(ports, obj)


def prepare_volumes(ports: Ports, obj: RawObject) -> None:
    """PreExecRule: the location checked, the preExecRule run, the volumes planned and handed out."""
    meta, spec = obj["metadata"], obj.get("spec") or {}
    state = ports.scratch.backup(meta["uid"])
    try:
        ports.stores.repository(meta["namespace"], spec["backupLocation"], verify=True)
    except LocationUnavailable as exc:
        state.log("backup.failed", reason=exc.reason)
        progress.fail(ports, KIND, obj, exc.reason)
        return
    if any((ref or {}).get("version") for ref in spec.get("includeResources") or []):
        # Checked against discovery before any volume is read: the backup would store those objects in
        # another version than the one named.
        problems = selection.include_version_problems(spec, ports.cluster.discover())
        if problems:
            reason = "; ".join(problems)
            state.log("backup.failed", reason=reason)
            progress.fail(ports, KIND, obj, reason)
            return
    try:
        pre = _run_rule(ports, obj, "preExecRule")
    except rule_runner.RuleStepFailed as exc:
        state.log("backup.failed", reason=str(exc))
        progress.fail(ports, KIND, obj, str(exc))
        return
    try:
        hold = pre is not None and bool(pre.background)
        obj, outstanding = backup_stage.start(ports, obj, state, hold=hold)
        # Background actions hold (a read lock) until every volume is read: wait for them here.
        if hold and outstanding and not _wait_for_volumes(ports, obj, state):
            return
        if pre is not None:
            pre.check()  # a background action that ended early means the lock it held is gone
    except exec_rules.RuleFailed as exc:
        progress.fail(ports, KIND, obj, f"preExecRule: {exc}")
        return
    finally:
        if pre is not None:
            for problem in pre.release():
                state.log("rule.release_problem", problem=problem)
    if hold or not outstanding:
        backup_stage.advance(
            ports, Message(KIND, meta["namespace"], meta["name"], meta["uid"], Stage.VOLUMES.value), state
        )


def _run_rule(ports: Ports, obj: RawObject, field: str) -> exec_rules.RuleRun | None:
    """The backup's rule named by ``spec.<field>``, run in its pods (``pods/exec``)."""
    cluster = ports.cluster
    return rule_runner.run(cluster, ports.settings.admin_namespace, obj, field, cluster.executor())


def _wait_for_volumes(ports: Ports, obj: RawObject, state: BackupScratch) -> bool:
    """Wait until the node agents have finished every volume; False (and the backup failed) on timeout."""
    deadline = time.monotonic() + ports.settings.stall_seconds * 12
    while state.pending(group=state.VOLUMES_PENDING):
        if time.monotonic() > deadline:
            progress.fail(
                ports, KIND, obj, "volumes did not finish while the preExecRule held its background actions"
            )
            return False
        time.sleep(0.5)  # the node agents report through Redis; polling it is cheap
    return True


def snapshot_volume(ports: Ports, message: Message, state: BackupScratch) -> None:
    """A volume in snapshot mode: a CSI VolumeSnapshot, waited for readyToUse."""
    if not state.is_pending(message.part, group=state.VOLUMES_PENDING):
        return
    claim = message.part.removeprefix(backup_stage.VOLUME_PART_PREFIX)
    obj = ports.cluster.get(KIND, message.namespace, message.name)
    plan = backup_stage.load_plan(state, claim)
    if obj is None:
        return
    if plan is None:
        if state_loss.is_lost(state):
            state_loss.fail(ports, KIND, obj, Stage.VOLUMES, state)
        return
    if plan.mode == "datamover":
        move_volume(ports, message, state, obj, plan)
        return
    try:
        result = ports.cluster.snapshot_volume(
            plan, message.name, message.uid, ports.settings.snapshot_timeout_seconds,
            heartbeat=lambda: progress.heartbeat(ports, KIND, obj, {}),
        )  # fmt: skip
    except csi.SnapshotError as exc:  # a failed volume, not a failed task: no retry
        reason = str(exc)
        result = {"status": Status.FAILED.value, "reason": reason}
        state.log("volume.failed", claim=claim, reason=reason)
    else:
        state.log("volume.snapshotted", claim=claim, volumeSnapshot=result["volumeSnapshot"])
    backup_stage.complete(ports, message, state, claim, result)


def move_volume(
    ports: Ports, message: Message, state: BackupScratch, obj: RawObject, plan: VolumePlan
) -> None:
    """A volume in datamover mode: its snapshot cut (or found: this is also how a stalled volume is
    handed out again), mounted through a temporary claim and a helper pod, then passed on to the node
    agent of the helper's node, which stores the files and completes the volume. The temporary objects
    and the snapshot go when the backup finishes (``clean_up_moved``) or, failing that, with the
    watcher's sweep."""
    claim = plan.part
    settings = ports.settings

    def heartbeat() -> None:
        progress.heartbeat(ports, KIND, obj, {})

    try:
        snapshot = ports.cluster.snapshot_volume(
            replace(plan, mode="snapshot"), message.name, message.uid, settings.snapshot_timeout_seconds,
            heartbeat=heartbeat,
        )  # fmt: skip
        readable = ports.cluster.expose_snapshot(
            plan, snapshot["volumeSnapshot"], csi.parse_quantity(snapshot.get("restoreSize")), message.name,
            message.uid, settings.restore_helper_image, settings.snapshot_timeout_seconds, heartbeat,
        )  # fmt: skip
    except csi.SnapshotError as exc:  # a failed volume, not a failed task: no retry
        reason = str(exc)
        state.log("volume.failed", claim=claim, reason=reason)
        ports.cluster.record_event(obj, "Warning", MOVE_FAILED, f"claim {claim}: {reason}",
                                   constants.COMPONENT_WORKER)  # fmt: skip
        backup_stage.complete(ports, message, state, claim, {"status": Status.FAILED.value, "reason": reason})
        return
    ports.cluster.record_event(obj, "Normal", MOVE_STARTED,
                               f"claim {claim}: reading VolumeSnapshot {snapshot['volumeSnapshot']} through "
                               f"claim {readable.read_claim} on node {readable.node}",
                               constants.COMPONENT_WORKER)  # fmt: skip
    state.log("volume.mounted", claim=claim, volumeSnapshot=snapshot["volumeSnapshot"],
              temporaryClaim=readable.read_claim, node=readable.node)  # fmt: skip
    backup_stage.save_plans(state, [readable])
    ports.dispatch.send(replace(message, issued_at=time.time()), node_queue(readable.node))


def clean_up_moved(ports: Ports, obj: RawObject, volume_entries: list[RawObject]) -> None:
    """After the data mover read its volumes: the helper pods and temporary claims go, and the snapshots
    they were made from (the data is in the repository now). Best effort: what is left is the watcher's
    to sweep (the pods and claims) or goes with the backup (its snapshots are labelled with its uid)."""
    meta = obj["metadata"]
    namespaces = sorted({str(v["namespace"]) for v in volume_entries if v.get("mode") == "datamover"})
    if not namespaces:
        return
    removed: list[str] = []
    try:
        for namespace in namespaces:
            removed += ports.cluster.delete_temporary(namespace, mover.selector(mover.BACKUP, meta["uid"]))
        removed += [
            f"VolumeSnapshot {n}" for n in ports.cluster.delete_backup_snapshots(namespaces, meta["uid"])
        ]
    except (ApiException, csi.SnapshotError) as exc:
        log.warning("mover.cleanup_incomplete", error=str(exc), removed=removed)
        return
    log.info("mover.cleaned_up", removed=removed)


def finish(ports: Ports, obj: RawObject) -> None:
    meta, spec = obj["metadata"], obj.get("spec") or {}
    state = ports.scratch.backup(meta["uid"])
    try:
        post = _run_rule(ports, obj, "postExecRule")
    except rule_runner.RuleStepFailed as exc:
        state.log("backup.failed", reason=str(exc))
        progress.fail(ports, KIND, obj, str(exc))
        return
    if post is not None:
        post.release()
    repository = ports.stores.repository(meta["namespace"], spec["backupLocation"])
    ref = BackupRef(meta["namespace"], meta["name"], meta["uid"])
    parts = state.parts()
    resources = [entry for info in parts.values() for entry in info.get("resources", [])]
    total = sum(int(info["rawSize"]) for info in parts.values())
    stored = sum(int(info["storedSize"]) for info in parts.values())
    started = (obj.get("status") or {}).get("triggerTimestamp")
    results = backup_stage.results(state)
    volume_entries = [
        {**entry, **results.get(f"{entry.get('namespace')}/{entry.get('persistentVolumeClaim')}", {})}
        for entry in (obj.get("status") or {}).get("volumes") or []
    ]
    # Read, then confirm: the marker still there means what was read above was not lost before it.
    if state_loss.is_lost(state):
        state_loss.fail(ports, KIND, obj, Stage.POST_EXEC_RULE, state)
        return
    failed = [v for v in volume_entries if v.get("status") == Status.FAILED]
    total += sum(int(v.get("totalSize") or 0) for v in volume_entries)
    stored += sum(int(v.get("storedSize") or 0) for v in volume_entries)
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
        "volumes": volume_entries,
    }
    state.log("backup.completed", resources=len(resources), totalSize=total, storedSize=stored)
    repository.write_log(ref, state.log_lines())
    try:
        manifest_size = repository.write_manifest(ref, manifest)
    except StorageError:
        _withdraw_manifest(repository.store, ref)
        raise
    outcome = Outcome.PARTIALLY_SUCCEEDED if failed else Outcome.SUCCEEDED
    reason = f"{len(failed)} of {len(volume_entries)} volume(s) failed" if failed else ""
    progress.advance(
        ports, KIND, obj, Stage.POST_EXEC_RULE, outcome, reason,
        extra={
            "resourceCount": len(resources), "totalSize": total, "storedSize": stored + manifest_size,
            "backupPath": f"{repository.store.url.rstrip('/')}/{ref.root}",
        },
    )  # fmt: skip
    state.clear()
    clean_up_moved(ports, obj, volume_entries)


def _withdraw_manifest(store: ObjectStore, ref: BackupRef) -> None:
    """After a failed manifest write: a write whose answer was lost (a reset, a cut body, a timeout) may
    still have been stored, and a manifest says the backup is complete (``docs/format.md``), while this
    backup is about to fail. So it is deleted again, best effort: a store that refuses the delete too
    most likely never took the write."""
    try:
        store.delete(ref.manifest)
    except StorageError as exc:
        log.warning("backup.manifest_not_withdrawn", key=ref.manifest, error=str(exc))
