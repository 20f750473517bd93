"""A backup's Volumes stage: plan each claim in scope (davit.volumes.claims), hand filesystem volumes to
the node
agent of their node, and move on to Applications once every volume is done.

The plans live in the operation's scratch state, so a node agent, a retried task or the snapshot service
after a restart all see the same plan. Exactly one party advances the backup: the node agent that
finishes the last volume, unless the snapshot task is holding background exec actions (a read lock), in
which case that task waits for the volumes, releases the actions and advances itself.
"""

from __future__ import annotations

from typing import Any

import structlog

from davit.api.objects import RawObject
from davit.api.types import Stage, Status
from davit.backup import scope, selection
from davit.backup.selection import label_selector
from davit.constants import Kind, node_queue
from davit.kube.client import ApiException
from davit.operations import progress, stages, state_loss
from davit.operations.dispatch import Dispatch
from davit.operations.messages import Message
from davit.operations.ports import Cluster, Moving, Ports
from davit.operations.scratch import BackupScratch
from davit.volumes.claims import VolumePlan, plan_volume

log = structlog.get_logger(__name__)
KIND = Kind.APPLICATION_BACKUP
VOLUME_PART_PREFIX = "volume:"


def plan_all(cluster: Cluster, obj: RawObject, admin_namespace: str) -> list[VolumePlan]:
    """A plan for each claim in the backup's scope (davit.volumes.claims): in the namespaces it covers
    (``davit.backup.scope``), matched by its selectors, and stored by it (``selection.claim_in_scope``)."""
    spec = obj.get("spec") or {}
    drivers = cluster.snapshot_drivers()
    selector = label_selector(spec.get("selectors"))
    plans = []
    for namespace in scope.covered_namespaces(cluster, obj, admin_namespace):
        claims = cluster.list_claims(namespace, selector or "")
        pods = cluster.list_pods(namespace)
        for pvc in sorted(claims, key=lambda c: c["metadata"]["name"]):
            if not selection.claim_in_scope(pvc, spec):
                continue
            volume_name = (pvc.get("spec") or {}).get("volumeName")
            pv = cluster.read_volume(volume_name) if volume_name else None
            plans.append(plan_volume(pvc, pv, pods, spec.get("volumeMode"), drivers,
                                     move_data=bool(spec.get("snapshotMoveData"))))  # fmt: skip
    return plans


def save_plans(state: BackupScratch, plans: list[VolumePlan]) -> None:
    state.save_volume_plans({p.part: p.__dict__ for p in plans})


def load_plan(state: BackupScratch, part: str) -> VolumePlan | None:
    raw = state.volume_plan(part)
    return VolumePlan(**raw) if raw else None


def start(ports: Ports, obj: RawObject, state: BackupScratch, hold: bool) -> tuple[RawObject, bool]:
    """Plan and hand out the volumes; returns the object and whether volume work is outstanding."""
    plans = plan_all(ports.cluster, obj, ports.settings.admin_namespace)
    # Before the state it vouches for: a Redis that loses the plans loses the marker too.
    state.lay_out(Stage.VOLUMES.value)
    save_plans(state, plans)
    work = [p for p in plans if p.mode != "skip"]
    moved = progress.advance(
        ports, KIND, obj, Stage.PRE_EXEC_RULE, stages.Outcome.DONE,
        f"{len(work)} of {len(plans)} volume(s) to back up",
        extra={"volumes": [p.status_entry() for p in plans], "volumesProgress": f"0/{len(plans)}"},
    )  # fmt: skip
    if moved is None:
        return obj, False
    obj = moved
    state.log(
        "volumes.planned", volumes=[{"claim": p.part, "mode": p.mode, "reason": p.reason} for p in plans]
    )
    if hold:
        state.hold_volumes()
    state.add_pending([VOLUME_PART_PREFIX + p.part for p in work], group=state.VOLUMES_PENDING)
    for plan in work:
        send(ports.dispatch, obj, plan)
    return obj, bool(work)


def send(dispatch: Dispatch, obj: RawObject, plan: VolumePlan) -> None:
    meta = obj["metadata"]
    message = Message(KIND, meta["namespace"], meta["name"], meta["uid"], Stage.VOLUMES.value,
                      VOLUME_PART_PREFIX + plan.part)  # fmt: skip
    # Parts of the same stage (not a transition): filesystem volumes to their node's agent, snapshots
    # to the stage's owner (data-mover volumes too: it cuts the snapshot and mounts it, then passes the
    # volume on to the agent of the node it is mounted on, and again after a stall).
    queue = node_queue(plan.node) if plan.mode == "filesystem" else stages.owner(KIND, Stage.VOLUMES)
    assert queue is not None
    dispatch.send(message, queue)


def record_result(state: BackupScratch, claim_part: str, result: dict[str, Any]) -> None:
    """What a node agent stored for a volume (tree id, sizes, status), for the manifest."""
    state.record_volume_result(claim_part, result)


def results(state: BackupScratch) -> dict[str, dict[str, Any]]:
    return state.volume_results()


def resend_outstanding(dispatch: Dispatch, obj: RawObject, state: BackupScratch) -> bool:
    """After a stall: hand out again the volumes not finished (their tasks are idempotent). A worker that
    died between moving the backup into Volumes and handing its volumes out left none outstanding: then
    the planned volumes of the status that have no result are. Returns whether any volume is."""
    pending = state.pending(group=state.VOLUMES_PENDING)
    if not pending:
        done = results(state)
        pending = [
            VOLUME_PART_PREFIX + part
            for part in _status_parts(obj)
            if part not in done and (plan := load_plan(state, part)) is not None and plan.mode != "skip"
        ]
        if pending:
            state.add_pending(pending, group=state.VOLUMES_PENDING)
    for part in pending:
        plan = load_plan(state, part.removeprefix(VOLUME_PART_PREFIX))
        if plan is not None:
            send(dispatch, obj, plan)
    return bool(pending)


def _status_parts(obj: RawObject) -> list[str]:
    volumes = (obj.get("status") or {}).get("volumes") or []
    return [f"{v.get('namespace')}/{v.get('persistentVolumeClaim')}" for v in volumes]


def update_volume(
    ports: Moving, namespace: str, name: str, claim_part: str, fields: dict[str, Any], kind: Kind = KIND
) -> None:
    """Update one entry of ``status.volumes`` (read, modify, write conditionally; retry on conflict:
    several node agents write their volumes' progress into the same list). The write is also a
    heartbeat (``progress.heartbeat_fields``): a volume making progress is work alive, not a stall."""
    for _attempt in range(10):
        obj = ports.cluster.get(kind, namespace, name)
        if obj is None:
            return
        volumes = list((obj.get("status") or {}).get("volumes") or [])
        for entry in volumes:
            if f"{entry.get('namespace')}/{entry.get('persistentVolumeClaim')}" == claim_part:
                entry.update(fields)
        done = sum(1 for v in volumes if v.get("status") in (Status.SUCCESSFUL, Status.FAILED))
        try:
            ports.cluster.patch_status(
                kind,
                obj,
                {
                    **progress.heartbeat_fields(obj),
                    "volumes": volumes,
                    "volumesProgress": f"{done}/{len(volumes)}",
                },
                check_version=True,
            )
            return
        except ApiException as exc:
            if exc.status != 409:
                raise
    log.warning("volume.status_conflict", claim=claim_part)


#: The fields of a volume's result that go into its ``status.volumes[]`` entry (the rest, such as the
#: tree id, only into the manifest).
STATUS_FIELDS = ("status", "reason", "totalSize", "bytesDone")


def complete(
    ports: Moving, message: Message, state: BackupScratch, claim: str, result: dict[str, Any]
) -> None:
    """Record a volume's result (manifest and status) and finish its part."""
    record_result(state, claim, result)
    update_volume(
        ports, message.namespace, message.name, claim, {k: result[k] for k in STATUS_FIELDS if k in result}
    )
    finish_part(ports, message, state)


def finish_part(ports: Moving, message: Message, state: BackupScratch) -> None:
    """A volume part is done (successfully or not): the last one moves the backup on, unless a
    snapshot task holds background exec actions and will do it after releasing them."""
    if state.finish(message.part, group=state.VOLUMES_PENDING) and not state.volumes_held():
        advance(ports, message, state)


def advance(ports: Moving, message: Message, state: BackupScratch) -> None:
    """Every volume is done: the backup moves on to Applications (unless it moved on already). No
    outstanding volume because the state was lost is not "done": the backup fails ``StateLost``."""
    obj = ports.cluster.get(KIND, message.namespace, message.name)
    if obj is None:
        return
    if state_loss.is_lost(state):
        if (obj.get("status") or {}).get("stage") == Stage.VOLUMES:
            state_loss.fail(ports, KIND, obj, Stage.VOLUMES, state)
        return
    progress.advance(ports, KIND, obj, Stage.VOLUMES, stages.Outcome.DONE)
