"""An in-place restore (``inPlaceVolumes: true``) in the restore service: stop the workloads that mount
the claims, lay the volumes out to be written through helper pods, and give the workloads their replicas
back when the restore ends (``davit.volumes.in_place`` says what is decided and why).

Every workload is read and patched through the restore's ``Applier``, so through its guard: a tenant's
restore scales only its own namespace's workloads, and writes only its own namespace's claims.
"""

from __future__ import annotations

import time

import structlog

from davit import timeutil
from davit.api.objects import RawObject
from davit.api.types import Status
from davit.constants import Kind
from davit.kube.client import ApiException
from davit.operations import progress
from davit.operations.ports import Ports, RestoreScratch
from davit.volumes import in_place
from davit_services.restore.apply import Applier, Refused, api_message

log = structlog.get_logger(__name__)
KIND = Kind.APPLICATION_RESTORE

#: How long the workloads' pods may take to stop before the restore gives up (and scales them back).
STOP_TIMEOUT_SECONDS = 300.0
POLL_SECONDS = 1.0


class NotStopped(Exception):
    """The workloads' pods did not stop in time; the message names them."""


def lay_out(
    ports: Ports, obj: RawObject, state: RestoreScratch, applier: Applier, manifest: RawObject
) -> tuple[dict[str, RawObject], list[RawObject]]:
    """Decide the volumes, stop the workloads that mount them and wait until their pods are gone. The
    volumes to write (as ``_data_claims`` gives them) and the status entries of those that cannot be.
    NotStopped when the pods do not stop in time (the workloads are scaled back first)."""
    meta, spec = obj["metadata"], obj.get("spec") or {}
    mapping = spec.get("namespaceMapping") or {}
    targets, refused = in_place.volume_targets(manifest, mapping if isinstance(mapping, dict) else {})
    for claim_part in list(targets):
        namespace, claim = claim_part.split("/", 1)
        probe = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"namespace": namespace, "name": claim},
        }
        refusal = applier.refusal(probe)
        if refusal is not None:
            refused[claim_part] = refusal
        elif ports.cluster.read_claim(namespace, claim) is None:
            refused[claim_part] = (
                f"claim {claim_part} not found: an in-place restore writes into existing claims"
            )
        if claim_part in refused:
            del targets[claim_part]
    workloads: dict[str, in_place.Workload] = {}
    mounting: dict[str, list[RawObject]] = {}
    for namespace in sorted({c.split("/", 1)[0] for c in targets}):
        claims = {c.split("/", 1)[1] for c in targets if c.startswith(namespace + "/")}
        for pod in ports.cluster.list_pods(namespace):
            mounted = in_place.mounts(pod, claims)
            if not mounted or not in_place.active(pod):
                continue
            workload, reason = _workload_of(applier, pod, sorted(mounted)[0])
            for claim in mounted:
                claim_part = f"{namespace}/{claim}"
                if workload is None:
                    refused.setdefault(claim_part, reason)
                    targets.pop(claim_part, None)
                else:
                    workloads[str(workload)] = workload
                    mounting.setdefault(claim_part, []).append(pod)
    stopped = []
    for workload in workloads.values():
        try:
            if _scale_down(applier, workload, meta["uid"]):
                stopped.append(str(workload))
        except (ApiException, Refused) as exc:
            reason = f"{workload} could not be scaled down: {_why(exc)}"
            for claim_part, pods in mounting.items():
                if any(_owned_by(applier, p, workload) for p in pods):
                    refused.setdefault(claim_part, reason)
                    targets.pop(claim_part, None)
    state.log("in_place.scaled_down", workloads=stopped, volumes=sorted(targets), refused=refused)
    entries = []
    for claim_part, reason in sorted(refused.items()):
        namespace, claim = claim_part.split("/", 1)
        entries.append(in_place.status_entry(namespace, claim, "filesystem", Status.FAILED, reason))
    # The volumes shown before the wait: the SRE sees which claims are being restored, and the restore's
    # end (or the sweep) finds the namespaces of the workloads it holds there.
    progress.heartbeat(ports, KIND, obj, {
        "resourceCount": 0,
        "volumes": [t["status"] for t in targets.values()] + entries,
        "volumesProgress": f"{len(entries)}/{len(targets) + len(entries)}",
    })  # fmt: skip
    _wait_stopped(ports, obj, set(targets))
    return targets, entries


def _why(exc: Exception) -> str:
    return api_message(exc) if isinstance(exc, ApiException) else str(exc)


def _workload_of(applier: Applier, pod: RawObject, claim: str) -> tuple[in_place.Workload | None, str]:
    """The Deployment, StatefulSet or ReplicaSet that controls the pod; None and why when there is none
    an in-place restore can scale."""
    namespace = pod["metadata"]["namespace"]
    owner = in_place.controller_of(pod)
    if owner and (owner.get("apiVersion"), owner.get("kind")) == ("apps/v1", "ReplicaSet"):
        replica_set = applier.get("apps/v1", "ReplicaSet", namespace, str(owner.get("name")))
        parent = in_place.controller_of(replica_set) if replica_set else None
        if parent and (parent.get("apiVersion"), parent.get("kind")) == ("apps/v1", "Deployment"):
            owner = parent
    if owner and (owner.get("apiVersion"), owner.get("kind")) in in_place.SCALABLE:
        return in_place.Workload(
            str(owner["apiVersion"]), str(owner["kind"]), namespace, str(owner["name"])
        ), ""
    return None, in_place.unscalable_reason(claim, pod, owner)


def _owned_by(applier: Applier, pod: RawObject, workload: in_place.Workload) -> bool:
    found, _ = _workload_of(applier, pod, "")
    return found == workload


def _scale_down(applier: Applier, workload: in_place.Workload, restore_uid: str) -> bool:
    """Record the replicas on the workload and scale it to zero (once: a retried task finds its own
    record). False when another in-place restore holds it."""
    current = applier.get(workload.api_version, workload.kind, workload.namespace, workload.name)
    if current is None:
        return False
    replicas = in_place.replicas_before(current, restore_uid)
    if replicas is None:
        raise Refused(f"another in-place restore ({in_place.held_by(current)}) has it scaled down")
    applier.patch(workload.ref(), in_place.scale_down_patch(restore_uid, replicas, timeutil.utcnow()))
    log.info("in_place.scaled_down", workload=str(workload), replicas=replicas)
    return True


def _wait_stopped(ports: Ports, obj: RawObject, claim_parts: set[str]) -> None:
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    while True:
        running = []
        for namespace in sorted({c.split("/", 1)[0] for c in claim_parts}):
            claims = {c.split("/", 1)[1] for c in claim_parts if c.startswith(namespace + "/")}
            running += [p for p in ports.cluster.list_pods(namespace) if in_place.mounts(p, claims)]
        if not running:
            return
        if time.monotonic() > deadline:
            raise NotStopped(
                f"the pods mounting the claims did not stop within {STOP_TIMEOUT_SECONDS:g}s: "
                f"{in_place.describe_pods(running)}"
            )
        progress.heartbeat(ports, KIND, obj, {})
        time.sleep(POLL_SECONDS)  # the controllers and the kubelet stop the pods asynchronously


def scale_back(ports: Ports, obj: RawObject, applier: Applier) -> list[str]:
    """Give every workload this restore scaled down its replicas back; the workloads it could not
    (left with their record, for the watcher's sweep). Safe to repeat."""
    problems = []
    uid = obj["metadata"]["uid"]
    for workload in held_workloads(ports, applier, obj):
        current = applier.get(workload.api_version, workload.kind, workload.namespace, workload.name)
        if current is None or in_place.held_by(current) != uid:
            continue
        try:
            applier.patch(workload.ref(), in_place.scale_back_patch(current))
            log.info(
                "in_place.scaled_back", workload=str(workload), replicas=in_place.recorded_replicas(current)
            )
        except (ApiException, Refused) as exc:
            problems.append(f"{workload} could not be scaled back: {_why(exc)}")
    return problems


def held_workloads(ports: Ports, applier: Applier, obj: RawObject) -> list[in_place.Workload]:
    """The workloads that carry the restore's uid, in the namespaces of its volumes (read afresh)."""
    meta = obj["metadata"]
    uid = meta["uid"]
    current = ports.cluster.get(KIND, meta["namespace"], meta["name"]) or obj
    volumes = (current.get("status") or {}).get("volumes") or []
    namespaces = {str(v.get("namespace")) for v in volumes if isinstance(v, dict) and v.get("namespace")}
    found = []
    for namespace in sorted(namespaces):
        for api_version, kind in sorted(in_place.SCALABLE):
            for item in applier.list_in(api_version, kind, namespace):
                if in_place.held_by(item) == uid:
                    found.append(in_place.Workload(api_version, kind, namespace, item["metadata"]["name"]))
    return found
