"""A restore's Volumes stage in the restore service: find where each restored claim's data goes and hand
it to the node agent of that node.

A claim made from a CSI snapshot (``davit_services.restore.snapshots``) has no data to write: it is done
once the provisioner has bound it to the volume it made from the snapshot.

A claim is ready once it is bound (the provisioner made its new volume) and a pod that mounts it is
scheduled: the pod's node mounts the volume, and its directory there is where the data goes. The pods
wait in the restore's init container meanwhile. A claim that no restored pod mounts gets a helper pod of
the restore's own (``davit.volumes.mover``), deleted when the restore ends. The node agent writes the
data, leaves the marker that releases the pod and reports the volume; the last one asks this service to
finish the restore.
"""

from __future__ import annotations

import time

import structlog

from davit.api.objects import RawObject
from davit.api.types import Stage, Status
from davit.constants import Kind, node_queue
from davit.kube.client import ApiException
from davit.kube.mover import MoverError
from davit.kube.operations import NotFound
from davit.operations import progress
from davit.operations.messages import Message
from davit.operations.ports import Cluster, Ports, RestoreScratch
from davit.volumes import backup_stage, mover
from davit.volumes.claims import VolumePlan, restore_target
from davit.volumes.restore_stage import FINISH_PART, GROUP, PART_PREFIX, TARGETS, fail_volume
from davit_services.restore import snapshots

__all__ = ["FINISH_PART", "GROUP", "PART_PREFIX", "TARGETS", "hand_out"]

log = structlog.get_logger(__name__)
KIND = Kind.APPLICATION_RESTORE

POLL_SECONDS = 1.0
HEARTBEAT_SECONDS = 5.0


def _mounting_pod(pods: list[RawObject], claim: str) -> RawObject | None:
    """A scheduled pod that mounts ``claim``: one held by the restore first (that is the one waiting)."""
    candidates = []
    for pod in pods:
        if not (pod.get("spec") or {}).get("nodeName") or pod["metadata"].get("deletionTimestamp"):
            continue
        volumes = (pod.get("spec") or {}).get("volumes") or []
        if any((v.get("persistentVolumeClaim") or {}).get("claimName") == claim for v in volumes):
            held = any(c.get("name") == "davit-restore-wait" for c in pod["spec"].get("initContainers") or [])
            candidates.append((not held, pod["metadata"]["name"], pod))
    return min(candidates, key=lambda c: (c[0], c[1]))[2] if candidates else None


def hand_out(ports: Ports, obj: RawObject, state: RestoreScratch) -> None:
    """Send each outstanding volume to its node agent once its target is known; fail the volumes whose
    claim is never bound or mounted within the deadline."""
    meta = obj["metadata"]
    deadline = time.monotonic() + ports.settings.stall_seconds * 12
    last_beat = 0.0
    sent: set[str] = set()
    helpers: set[str] = set()
    while True:
        waiting = []
        for part in state.pending(group=GROUP):
            claim_part = part.removeprefix(PART_PREFIX)
            target = state.volume_target(claim_part)
            if "plan" in target:
                # Handed out by an earlier task, which may have died before its message went out: sent
                # again, once per hand-out. A node agent drops it while the volume's writer lives or
                # after it finished, and takes the volume over from one that died.
                if part not in sent and isinstance(target["plan"], dict) and target["plan"].get("node"):
                    sent.add(part)
                    message = Message(KIND, meta["namespace"], meta["name"], meta["uid"], Stage.VOLUMES.value,
                                      part)  # fmt: skip
                    ports.dispatch.send(message, node_queue(str(target["plan"]["node"])))
                continue
            if "snapshot" in target:  # provisioned from a snapshot: done once bound
                if not snapshots.settle(ports, obj, state, part, target):
                    waiting.append(part)
                continue
            namespace, claim = claim_part.split("/", 1)
            if target.get("helper") and part not in helpers:
                try:
                    make_helper(ports, obj, namespace, claim)
                except MoverError as exc:
                    fail_volume(ports, obj, state, part, f"the helper pod could not be made: {exc}")
                    continue
                helpers.add(part)
            plan = _find_target(ports.cluster, namespace, claim)
            if plan is None:
                waiting.append(part)
                continue
            target["plan"] = plan.__dict__
            state.set_volume_target(claim_part, target)
            backup_stage.update_volume(ports, meta["namespace"], meta["name"], claim_part,
                                       {"volume": plan.volume, "driver": plan.driver,
                                        "status": Status.IN_PROGRESS.value}, kind=KIND)  # fmt: skip
            state.log("volume.handed_out", claim=claim_part, node=plan.node, pod=plan.pod_uid)
            message = Message(KIND, meta["namespace"], meta["name"], meta["uid"], Stage.VOLUMES.value, part)
            ports.dispatch.send(message, node_queue(plan.node))  # a part of the stage, not a transition
            sent.add(part)
        if not waiting:
            return
        if time.monotonic() > deadline:
            for part in waiting:
                target = state.volume_target(part.removeprefix(PART_PREFIX))
                if "snapshot" in target:
                    where = f"{target.get('snapshotNamespace')}/{target['snapshot']}"
                    reason = f"the claim was not provisioned from VolumeSnapshot {where} in time"
                    snapshots.fail(ports, obj, state, part, reason)
                else:
                    fail_volume(ports, obj, state, part, "no pod that mounts the claim was scheduled in time")
            return
        if time.monotonic() - last_beat > HEARTBEAT_SECONDS:
            progress.heartbeat(ports, KIND, obj, {})
            last_beat = time.monotonic()
        time.sleep(POLL_SECONDS)  # the scheduler and the provisioner work asynchronously


def make_helper(ports: Ports, obj: RawObject, namespace: str, claim: str) -> None:
    """The helper pod through which the data of a claim that no restored pod mounts is written
    (``davit.volumes.mover``): made once, taken over when a retried task finds it."""
    meta = obj["metadata"]
    name = mover.derived_name(meta["name"], claim, meta["uid"])
    labels = mover.restore_labels(meta["name"], meta["uid"])
    pod = mover.helper_pod(
        name, namespace, claim, ports.settings.restore_helper_image, labels, read_only=False
    )
    ports.cluster.create_helper_pod(pod)
    log.info("volume.helper_made", claim=f"{namespace}/{claim}", pod=name)


def remove_helpers(ports: Ports, obj: RawObject, volume_entries: list[RawObject]) -> None:
    """The restore's helper pods, once it ends (best effort: the watcher sweeps what is left)."""
    uid = obj["metadata"]["uid"]
    for namespace in sorted({str(v.get("namespace")) for v in volume_entries if v.get("namespace")}):
        try:
            removed = ports.cluster.delete_temporary(namespace, mover.selector(mover.RESTORE, uid))
        except ApiException as exc:
            log.warning("volume.helpers_not_removed", namespace=namespace, status=exc.status)
            continue
        if removed:
            log.info("volume.helpers_removed", removed=removed)


def _find_target(cluster: Cluster, namespace: str, claim: str) -> VolumePlan | None:
    pvc = cluster.read_claim(namespace, claim)
    if pvc is None:
        return None
    volume_name = (pvc.get("spec") or {}).get("volumeName")
    if not volume_name:
        return None
    pv = cluster.read_volume(volume_name)
    if pv is None:
        raise NotFound(f"PersistentVolume {volume_name} not found")
    pods = cluster.list_pods(namespace)
    pod = _mounting_pod(pods, claim)
    return restore_target(pvc, pv, pod) if pod is not None else None
