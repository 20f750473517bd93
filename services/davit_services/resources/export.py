"""Planning, pages and the cluster-scoped part of a backup's Applications stage."""

from __future__ import annotations

import json
from typing import Any

import structlog

from davit import tenancy
from davit.api.objects import RawObject
from davit.api.types import Stage
from davit.backup.selection import (
    ApiResource,
    ClusterRef,
    ListTarget,
    keep,
    label_selector,
    needed_cluster_objects,
    resource_ref,
    select_targets,
)
from davit.constants import Kind
from davit.format.layout import BackupRef
from davit.operations import progress, stages, state_loss
from davit.operations.dispatch import Dispatch
from davit.operations.messages import Message
from davit.operations.ports import Cluster, Moving, Ports
from davit.operations.scratch import BackupScratch

log = structlog.get_logger(__name__)
KIND = Kind.APPLICATION_BACKUP

CLUSTER_PART = "_cluster"
#: Fields the API server owns and a restore throws away; not worth storing (managedFields can be larger
#: than the object itself).
_DROPPED_METADATA = ("managedFields",)


def handle(ports: Ports, message: Message) -> None:
    obj = ports.cluster.current(KIND, message.namespace, message.name, message.uid, Stage.APPLICATIONS)
    if obj is None:
        return
    state = ports.scratch.backup(message.uid)
    if not message.part:
        plan(ports, obj, state)
    elif message.part == CLUSTER_PART:
        cluster_part(ports, obj, state)
    else:
        page(ports, obj, state, message.part)


def _send(dispatch: Dispatch, obj: RawObject, part: str) -> None:
    meta = obj["metadata"]
    message = Message(KIND, meta["namespace"], meta["name"], meta["uid"], Stage.APPLICATIONS.value, part)
    queue = stages.owner(KIND, Stage.APPLICATIONS)  # a part of this stage, not a transition
    assert queue is not None
    dispatch.send(message, queue)


def _target_key(target: ListTarget) -> dict[str, Any]:
    r = target.resource
    return {
        "group": r.group, "version": r.version, "plural": r.plural, "kind": r.kind,
        "namespace": target.namespace, "selector": target.label_selector,
    }  # fmt: skip


def plan(ports: Ports, obj: RawObject, state: BackupScratch) -> None:
    """Make the list targets once; a repeated plan message (a retry, a stall re-send) re-sends what is
    still outstanding instead. A lost scratch state is rebuilt (planned again) or fails the backup."""
    if state_loss.is_lost(state) and not _recover(ports, obj, state):
        return
    spec = obj.get("spec") or {}
    if state.mark_planned():
        namespaces = list(spec.get("namespaces") or [])
        if spec.get("namespaceSelector"):
            namespaces += ports.cluster.namespaces_matching(spec["namespaceSelector"])
        namespaces = sorted(set(namespaces))
        targets = select_targets(ports.cluster.discover(), spec, namespaces)
        first_pages = {f"{t.part}#1": t for t in targets}
        state.save_list_targets({t.part: _target_key(t) for t in targets})
        state.save_namespaces(namespaces)
        state.add_pending(list(first_pages) or [CLUSTER_PART])
        state.log("export.planned", targets=len(targets), namespaces=namespaces)
        reason = f"exporting {len(targets)} resource lists"
        progress.advance(ports, KIND, obj, Stage.APPLICATIONS, stages.Outcome.STARTED, reason)
    for part in state.pending():
        _send(ports.dispatch, obj, part)


def _recover(ports: Ports, obj: RawObject, state: BackupScratch) -> bool:
    """The scratch state is gone (``davit.operations.state_loss``): True when it may be planned afresh
    (the backup stores no volume data whose results went with it; pages are written again under the same
    keys), after laying it out again; False when the backup was failed ``StateLost``, or another task is
    rebuilding it."""
    if state_loss.backup_on_loss(obj, Stage.APPLICATIONS) == state_loss.OnLoss.FAIL:
        state_loss.fail(ports, KIND, obj, Stage.APPLICATIONS, state)
        return False
    if not state_loss.claim_rebuild(state):
        return False
    state.lay_out(Stage.APPLICATIONS.value)
    state_loss.note_rebuilt(ports, KIND, obj, Stage.APPLICATIONS, state)
    return True


def _target(state: BackupScratch, base: str) -> ListTarget:
    t = state.list_target(base)
    if t is None:
        raise RuntimeError(f"no list target {base!r} recorded for this backup")
    resource = ApiResource(t["group"], t["version"], t["plural"], t["kind"], True, frozenset({"list"}))
    return ListTarget(resource, t["namespace"], t["selector"])


def _clean(obj: RawObject) -> RawObject:
    meta = obj.get("metadata") or {}
    for field in _DROPPED_METADATA:
        meta.pop(field, None)
    return obj


def page(ports: Ports, obj: RawObject, state: BackupScratch, part: str) -> None:
    if not state.is_pending(part):
        if state_loss.is_lost(state):
            plan(ports, obj, state)
        else:
            log.info("part.done_already", part=part)
        return
    meta, spec = obj["metadata"], obj.get("spec") or {}
    base, _, number = part.rpartition("#")
    target = _target(state, base)
    admin = ports.settings.admin_namespace
    if target.namespace is None or not _may_read(ports.cluster, admin, obj, target.namespace):
        _refuse(ports, obj, state, f"list target {base!r} names namespace {target.namespace}")
        return
    if target.label_selector != label_selector(spec.get("selectors")):
        _refuse(ports, obj, state, f"list target {base!r} has selector {target.label_selector!r}")
        return
    result = ports.cluster.list_page(
        target.resource,
        target.namespace,
        target.label_selector,
        ports.settings.export_page_size,
        state.token(part),
    )
    if result.continue_token:
        following = f"{base}#{int(number) + 1}"
        state.add_pending([following], {following: result.continue_token})
        _send(ports.dispatch, obj, following)
    kept = [_clean(o) for o in result.items if keep(o, target.resource, spec)]
    repository = ports.stores.repository(meta["namespace"], spec["backupLocation"])
    info = repository.write_part(BackupRef(meta["namespace"], meta["name"], meta["uid"]), part, kept)
    needed = sorted(
        {json.dumps(ref.__dict__) for o in kept for ref in needed_cluster_objects(o, target.resource)}
    )
    _record(state, info, [resource_ref(o) for o in kept], needed)
    count = state.add_resources(len(kept))
    progress.heartbeat(ports, KIND, obj, {"resourceCount": count})
    if state.finish(part):
        state.add_pending([CLUSTER_PART])
        _send(ports.dispatch, obj, CLUSTER_PART)


def _may_read(cluster: Cluster, admin: str, obj: RawObject, namespace: str) -> bool:
    """Whether the backup's accepted spec covers ``namespace`` (``admin``: the admin namespace): what is
    about to be listed comes from the scratch state in Redis, which is not trusted to decide what a
    backup reads."""
    meta, spec = obj["metadata"], obj.get("spec") or {}
    if tenancy.backup_may_read(meta["namespace"], admin, spec, namespace):
        return True
    selector = spec.get("namespaceSelector") if meta["namespace"] == admin else None
    return isinstance(selector, str) and bool(selector) and namespace in cluster.namespaces_matching(selector)


def _needed_by(admin: str, obj: RawObject, found: RawObject) -> bool:
    """Outside the admin namespace a backup stores only the cluster-scoped objects its namespace's own
    objects need, checked against the cluster: a volume bound to one of its claims, a CRD; the refs
    themselves come from the scratch state."""
    if obj["metadata"]["namespace"] == admin:
        return True
    kind = found.get("kind")
    if kind == "PersistentVolume":
        claim = (found.get("spec") or {}).get("claimRef") or {}
        return bool(claim.get("namespace") == obj["metadata"]["namespace"])
    return kind in ("CustomResourceDefinition", "Namespace") and (
        kind != "Namespace" or found["metadata"]["name"] == obj["metadata"]["namespace"]
    )


def _refuse(ports: Moving, obj: RawObject, state: BackupScratch, what: str) -> None:
    reason = (f"the backup's scratch state is outside its accepted spec ({what}); nothing of it was "
              f"read: the backup is failed rather than trusted")  # fmt: skip
    state.log("export.refused", reason=reason)
    progress.fail(ports, KIND, obj, reason, event_reason="ScopeRefused")


def _record(state: BackupScratch, info: Any, refs: list[dict[str, str]], needed: list[str]) -> None:
    state.record_part(
        info.part,
        {"part": info.part, "key": info.key, "count": info.count, "rawSize": info.raw_size,
         "storedSize": info.stored_size, "resources": refs},
        needed,
    )  # fmt: skip


def cluster_part(ports: Ports, obj: RawObject, state: BackupScratch) -> None:
    """The cluster-scoped objects the backup needs: its Namespaces, PVs of its PVCs, CRDs of its custom
    resources; then on to PostExecRule."""
    if not state.is_pending(CLUSTER_PART):
        if state_loss.is_lost(state):
            plan(ports, obj, state)
        return
    meta, spec = obj["metadata"], obj.get("spec") or {}
    namespaces = state.namespaces()
    admin = ports.settings.admin_namespace
    outside = [
        ns for ns in namespaces if not isinstance(ns, str) or not _may_read(ports.cluster, admin, obj, ns)
    ]
    if outside:
        _refuse(ports, obj, state, f"the recorded namespaces include {outside}")
        return
    refs = [ClusterRef("v1", "namespaces", ns) for ns in namespaces]
    # includeClusterResources unset means "auto": what the namespaced objects need. false: Namespaces only.
    if spec.get("includeClusterResources") is not False:
        refs += [ClusterRef(**json.loads(raw)) for raw in state.needed()]
    objects = []
    for ref in refs:
        found = ports.cluster.get_cluster_object(ref)
        if found is not None and _needed_by(admin, obj, found):
            objects.append(_clean(found))
    repository = ports.stores.repository(meta["namespace"], spec["backupLocation"])
    info = repository.write_part(
        BackupRef(meta["namespace"], meta["name"], meta["uid"]), CLUSTER_PART, objects
    )
    _record(state, info, [resource_ref(o) for o in objects], [])
    state.log("export.completed", clusterObjects=len(objects))
    if state.finish(CLUSTER_PART):
        progress.advance(ports, KIND, obj, Stage.APPLICATIONS, stages.Outcome.DONE)
