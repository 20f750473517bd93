"""An ApplicationRestore's stages, owned by the restore service: Initial → Applications → Volumes → Final.

* **Initial** (one task): read the resource modifiers (``spec.resourceModifier``), find the backup (in
  ``spec.backupNamespace`` for an admin's restore of another namespace's backup) and read its manifest
  and resources, transform, patch and order them (``davit.restore``), and either report what a dry run
  would do or lay the restore out as steps (the dependency tiers) of chunks, kept in the operation's
  scratch state. With ``replacePolicy: Delete`` the objects already there are deleted first, workloads
  first, and waited for.
* **Applications**: one task per chunk creates its objects in parallel (with ``replacePolicy: Update``,
  patches those that exist); the task finishing a step's last chunk waits for what the next step needs
  (CRDs Established) and hands out the next step's chunks.
* **Volumes**: the claims whose data is in the backup were created empty with the resources, and the pods
  that mount them hold in an init container; once such a pod is scheduled, the node agent of its node
  writes the data into the new volume and releases the pod (``davit.restore.init_container``).

A claim the backup took as a CSI VolumeSnapshot is created with that snapshot as its ``dataSource`` (in
another namespace, a copy of it: ``davit_services.restore.snapshots``); the Volumes stage waits until it is
bound. The copies go when the restore ends.

Applications come before Volumes (Stork has it the other way round): the data is written into the volume
a pod's node mounted, so the pods must exist first.
"""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog

from davit import constants, errors, timeutil
from davit.api.objects import RawObject
from davit.api.types import Stage, Status
from davit.backup.selection import ClusterRef
from davit.constants import Kind
from davit.format.layout import BackupRef, ref_from_path, restore_log
from davit.format.repository import BackupRepository
from davit.format.sealing import CorruptObject
from davit.kube.client import ApiException
from davit.operations import progress, stages, state_loss
from davit.operations.messages import Message
from davit.operations.ports import Cluster, Ports, RestoreScratch
from davit.operations.runtime import LocationUnavailable
from davit.restore import hooks as restore_hooks
from davit.restore import inject
from davit.restore.modifiers import Modifiers, ModifiersInvalid, parse_config_map
from davit.restore.plan import (
    CreatedKey,
    FailedObject,
    OwnedObject,
    PartChanged,
    ReferencedChunk,
    RestorePlan,
    StreamedPlan,
    context_for,
    kept_whole,
    plan_parts,
    transform_referenced,
)
from davit.restore.tiers import TIERS, group_kind
from davit.restore.transform import OwnerLink, Provenance
from davit.tenancy import RESTORE_REFUSED, UnsafeName, backup_namespace, restore_guard
from davit.volumes import backup_stage, mover, restore_stage
from davit_services.restore import hooks as hooks_stage
from davit_services.restore import in_place as in_place_stage
from davit_services.restore import snapshots, volumes
from davit_services.restore.apply import (
    FAILED,
    OUTCOMES,
    REPLACED,
    RESTORED,
    RETAINED,
    UPDATED,
    Applier,
    Outcome,
    Refused,
    api_message,
    describe,
    key_of,
)

log = structlog.get_logger(__name__)
KIND = Kind.APPLICATION_RESTORE

#: Objects per Applications task: a few seconds of creates at 16 in flight, so a large restore spreads
#: over the workers' task slots and a retried task repeats little.
CHUNK_OBJECTS = 500
#: Creates in flight per task (the API server's own limits, not the worker's CPU, bound a restore).
#: ``make bench-restore`` on fresh stacks, 4 task threads: 8 per task 1.12x / 1.21x the 8-thread create,
#: 16 per task 1.03x / 1.06x, 32 per task 1.10x; a restore waits on the API server's responses.
PARALLEL_CREATES = 16
#: How long a restored CustomResourceDefinition may take to become Established.
CRD_TIMEOUT_SECONDS = 60.0
#: How long objects replaced under ``replacePolicy: Delete`` may take to go away (finalizers, dependents).
DELETE_TIMEOUT_SECONDS = 180.0
#: How long laying a restore out may take (reading and planning the backup, deleting what it replaces):
#: a re-drive finding no steps before that leaves them to the task laying them out.
LAYOUT_SECONDS = DELETE_TIMEOUT_SECONDS + 120.0
#: Failure reasons kept for the status (the full list goes to the operation's log).
REASONS_SHOWN = 5
#: The Event reasons of a restore whose resource modifiers cannot be used, or failed on some objects.
MODIFIERS_INVALID = "ResourceModifiersInvalid"
MODIFIER_FAILED = "ResourceModifierFailed"


class RestoreRefused(errors.Refused):
    """The restore cannot start: the reason goes into its status as it is."""


def applier_for(cluster: Cluster, admin_namespace: str, obj: RawObject) -> Applier:
    """The Applier of a restore, guarded by what the restore may write: decided by the namespace the
    restore lives in (the API server's word, not its backup or its scratch state); its accepted spec
    can only narrow that (``davit.tenancy.restore_guard``)."""
    guard = restore_guard(obj["metadata"]["namespace"], admin_namespace, obj.get("spec") or {})
    return Applier(cluster, guard, timeutil.epoch_seconds(obj["metadata"].get("creationTimestamp")))


def refusals(applier: Applier, objects: list[RawObject]) -> list[str]:
    """What the guard refuses among everything a restore would write."""
    return [reason for reason in map(applier.refusal, objects) if reason is not None]


def handle(ports: Ports, message: Message) -> None:
    obj = ports.cluster.current(KIND, message.namespace, message.name, message.uid, message.stage)
    if obj is None:
        return
    stage = (obj.get("status") or {}).get("stage")
    state = ports.scratch.restore(message.uid)
    if message.stage == Stage.INITIAL and stage == Stage.INITIAL:
        start(ports, obj, state)
    elif message.stage == Stage.APPLICATIONS and stage == Stage.APPLICATIONS:
        if message.part:
            apply_chunk(ports, obj, state, message.part)
        else:
            resend_current_step(ports, obj, state)  # the watcher saw the stage stall
    elif message.stage == Stage.POST_EXEC_RULE and stage == Stage.POST_EXEC_RULE:
        run_hooks(ports, obj, state)
    elif message.stage == Stage.VOLUMES and stage == Stage.VOLUMES:
        if message.part == volumes.FINISH_PART:
            finish(ports, obj, state)
        elif state_loss.is_lost(state):
            rebuild_volumes(ports, obj, state)
        elif not state.pending(group=volumes.GROUP):
            # Every volume is done, yet the restore is still here: the node agent that wrote the last one
            # died before it asked for the finish.
            finish(ports, obj, state)
        else:
            volumes.hand_out(ports, obj, state)
    else:
        log.info("message.stale", current_stage=stage)


# --- Initial ---------------------------------------------------------------------------------------


def start(ports: Ports, obj: RawObject, state: RestoreScratch) -> None:
    spec = obj.get("spec") or {}
    started = progress.advance(ports, KIND, obj, Stage.INITIAL, stages.Outcome.STARTED, "reading the backup",
                               check_version=True)  # fmt: skip
    if started is None:  # another worker took the same message
        return
    obj = started
    state.log("restore.started", backupName=spec.get("backupName"), backupLocation=spec.get("backupLocation"))
    # While this task lays the restore out, a re-drive finding no steps yet must not rebuild them.
    state_loss.claim_rebuild(state, LAYOUT_SECONDS)
    lay_out(ports, obj, state)


def lay_out(ports: Ports, obj: RawObject, state: RestoreScratch, rebuilding: bool = False) -> None:
    """Read the backup, plan the restore and lay it out as steps, then hand out the first step. Also how
    a lost scratch state is rebuilt (``rebuilding``): nothing is deleted again (what is there now is this
    restore's own work or was kept), and the objects already created count as restored once their chunk
    is applied again.

    The backup is planned part by part (``davit.restore.plan.plan_parts``): only the objects later steps
    look into are kept whole; the rest are created by reference to their part, so that neither this task
    nor the scratch state holds a large backup's bodies."""
    meta, spec = obj["metadata"], obj.get("spec") or {}
    applier = applier_for(ports.cluster, ports.settings.admin_namespace, obj)
    try:
        # The resource modifiers first: a ConfigMap that cannot be used fails the restore at once.
        modifiers_map = read_modifiers_map(ports.cluster, applier, obj)
        modifiers = parse_config_map(modifiers_map) if modifiers_map is not None else None
        _check_targets_exist(ports, applier)
        repository, _ref, manifest = locate_backup(ports, meta["namespace"], spec)
    except ModifiersInvalid as exc:
        state.log("restore.failed", reason=str(exc))
        progress.fail(ports, KIND, obj, f"spec.resourceModifier: {exc}", event_reason=MODIFIERS_INVALID)
        return
    except (RestoreRefused, LocationUnavailable) as exc:
        reason = exc.reason if isinstance(exc, LocationUnavailable) else str(exc)
        state.log("restore.failed", reason=reason)
        progress.fail(ports, KIND, obj, reason)
        return
    if spec.get("inPlaceVolumes"):
        _lay_out_in_place(ports, obj, state, applier, manifest)
        return
    sources = _claims_with_data(manifest)
    refused_count = 0
    refused: list[str] = []

    def check(planned: RawObject, kept: bool = False) -> None:
        """The guard's word on an object to be created: those kept whole are judged once their steps are
        laid out (a held pod has its init containers then)."""
        nonlocal refused_count
        if kept_whole(*group_kind(planned)) and not kept:
            return
        reason = applier.refusal(planned)
        if reason is not None:
            refused_count += 1
            if len(refused) < REASONS_SHOWN:
                refused.append(reason)

    context: dict[str, Any] = {
        "spec": {k: spec.get(k) for k in _CONTEXT_SPEC_FIELDS},
        "provenance": [spec["backupName"], manifest["backup"]["metadata"]["uid"], meta["name"], meta["uid"]],
        "clusterScopedAllowed": applier.guard.admin,
        "targetNodes": sorted(ports.cluster.node_names()),
        "modifiers": modifiers_map,
    }  # fmt: skip
    try:
        streamed = plan_parts(
            [str(part["key"]) for part in manifest.get("parts") or []],
            lambda key: _read_part(repository, key, sources), spec,
            backup_name=context["provenance"][0], backup_uid=context["provenance"][1],
            restore_name=meta["name"], restore_uid=meta["uid"], cluster_scoped_allowed=applier.guard.admin,
            target_nodes=frozenset(context["targetNodes"]), modifiers=modifiers,
            by_reference=lambda group, kind: not kept_whole(group, kind), chunk_objects=CHUNK_OBJECTS,
            visit=check,
        )  # fmt: skip
    except (PartChanged, CorruptObject) as exc:
        state.log("restore.failed", reason=str(exc))
        progress.fail(ports, KIND, obj, f"the backup cannot be read: {exc}")
        return
    except LocationUnavailable as exc:
        state.log("restore.failed", reason=exc.reason)
        progress.fail(ports, KIND, obj, exc.reason)
        return
    context["plurals"] = [[group, kind, plural] for (group, kind), plural in sorted(streamed.plurals.items())]
    plan = streamed.plan
    for skipped in plan.skipped:
        state.log("resource.skipped", resource=str(skipped.source), reason=skipped.reason)
    plan, from_snapshots = snapshots.plan(ports, obj, manifest, plan)
    streamed = dataclasses.replace(streamed, plan=plan)
    data_claims = _data_claims(manifest, plan)
    steps = _steps(streamed, data_claims, meta["uid"], ports.settings.restore_helper_image,
                   restore_hooks.init_hooks(spec))  # fmt: skip
    everything = [item for step in steps for item in step if not isinstance(item, ReferencedChunk)]
    referenced = list(streamed.referenced)
    # A backup holding anything this restore may not write was not made by this namespace's backups
    # (its bytes were rewritten, or it came from elsewhere): nothing of it is written, not even the rest.
    # Objects created by reference were checked as planned (``check``); those kept whole are checked as
    # they are now (a held pod has its init containers).
    for item in everything:
        check(item, kept=True)
    if refused_count:
        shown = "; ".join(refused[:REASONS_SHOWN])
        more = f" (and {refused_count - REASONS_SHOWN} more)" if refused_count > REASONS_SHOWN else ""
        reason = (f"{RESTORE_REFUSED}: the backup holds {refused_count} object(s) this restore may not "
                  f"write, nothing was restored: {shown}{more}")  # fmt: skip
        state.log("restore.refused", reasons=refused)
        progress.fail(ports, KIND, obj, reason, event_reason=RESTORE_REFUSED)
        return
    replace = spec.get("replacePolicy") == "Delete" and not rebuilding
    update = spec.get("replacePolicy") == "Update"
    # What exists matters only to replace, update or report it: a Retain restore just creates (an object
    # already there is kept, ``Applier.create``), without listing every kind of the backup first.
    needs_existing = replace or update or bool(spec.get("dryRun"))
    existing = applier.existing(everything + _stubs(referenced)) if needs_existing else set()
    if spec.get("dryRun"):
        finish_dry_run(ports, obj, state, everything + _stubs(referenced), existing,
                       str(spec.get("replacePolicy") or "Retain"), plan.failed)  # fmt: skip
        return
    _record_modifier_failures(ports, obj, state, plan.failed)
    if replace:
        left = _delete_existing(applier, steps, existing)
        if left:
            reason = "replacePolicy Delete: still present after deletion: " + ", ".join(
                map(describe, left[:5])
            )
            progress.fail(ports, KIND, obj, reason)
            return
    # Before the state it vouches for: a Redis that loses the steps loses the marker too.
    state.lay_out(Stage.APPLICATIONS.value)
    snapshot_volumes = snapshots.prepare(ports, obj, state, from_snapshots)
    state.save_plan_context(context)
    # After a lost state, what exists may be this restore's own work: not "existing" for Update (below).
    _save_steps(state, steps, existing if replace else set(), update, set() if rebuilding else existing)
    _save_owners(state, plan.owned)
    if restore_hooks.requested(spec):
        namespaces = {str(o["metadata"]["namespace"]) for o in everything if o["metadata"].get("namespace")}
        namespaces |= {key[2] for chunk in referenced for key in chunk.keys if key[2]}
        state.save_hook_namespaces(sorted(namespaces))
    _save_volumes(state, data_claims)
    progress.heartbeat(ports, KIND, obj, {
        "resourceCount": streamed.count,
        "volumes": [v["status"] for v in data_claims.values()] + snapshot_volumes,
        "volumesProgress": f"{sum(v['status'] == Status.FAILED for v in snapshot_volumes)}/"
                           f"{len(data_claims) + len(snapshot_volumes)}",
    })  # fmt: skip
    state.log("restore.planned", steps=[_step_size(s) for s in steps], volumes=sorted(data_claims),
              byReference=sum(len(c.indexes) for c in referenced))  # fmt: skip
    _send_step(ports, obj, state, 0)


#: The fields of a restore's spec that transforming its objects reads (``davit.restore.plan.context_for``),
#: kept with the plan so that objects created by reference come out as planned.
_CONTEXT_SPEC_FIELDS = ("namespaceMapping", "storageClassMapping", "nodeMapping", "preserveNodePorts")


def _read_part(
    repository: BackupRepository, key: str, sources: set[tuple[str, str]]
) -> tuple[list[RawObject], str]:
    """A part of the backup as the restore takes it: pods mounting restored data lose their owners
    (``_orphaned``)."""
    objects, digest = repository.read_part_with_digest(key)
    return [_orphaned(o) if _mounts_any(o, sources) else o for o in objects], digest


def _stubs(chunks: list[ReferencedChunk]) -> list[RawObject]:
    """The objects created by reference as far as their identity goes (to list which exist)."""
    return [
        {"apiVersion": a, "kind": k, "metadata": {"namespace": n, "name": name} if n else {"name": name}}
        for chunk in chunks
        for a, k, n, name in chunk.keys
    ]


def _step_size(step: list[RawObject | ReferencedChunk]) -> int:
    return sum(len(i.indexes) if isinstance(i, ReferencedChunk) else 1 for i in step)


def _lay_out_in_place(
    ports: Ports, obj: RawObject, state: RestoreScratch, applier: Applier, manifest: RawObject
) -> None:
    """``inPlaceVolumes``: no object is written; the workloads mounting the claims are stopped and the
    volumes laid out to be written through helper pods (``davit_services.restore.in_place``)."""
    try:
        targets, _refused = in_place_stage.lay_out(ports, obj, state, applier, manifest)
    except in_place_stage.NotStopped as exc:
        problems = in_place_stage.scale_back(ports, obj, applier)
        state.log("restore.failed", reason=str(exc))
        progress.fail(ports, KIND, obj, "; ".join([str(exc), *problems]))
        return
    state.lay_out(Stage.APPLICATIONS.value)
    _save_steps(state, [], set())
    _save_volumes(state, targets)
    if restore_hooks.requested(obj.get("spec") or {}):
        state.save_hook_namespaces(sorted({c.split("/", 1)[0] for c in targets}))
    state.log("restore.planned", steps=[], volumes=sorted(targets), inPlace=True)
    _send_step(ports, obj, state, 0)


def read_modifiers(cluster: Cluster, applier: Applier, obj: RawObject) -> Modifiers | None:
    """The restore's resource modifiers (``spec.resourceModifier``), read from the restore's own namespace
    (always, whatever it may write: an admin's restore of a tenant's backup reads the admin's ConfigMap);
    None without. ModifiersInvalid when the ConfigMap is missing or cannot be used."""
    config_map = read_modifiers_map(cluster, applier, obj)
    return parse_config_map(config_map) if config_map is not None else None


def read_modifiers_map(cluster: Cluster, applier: Applier, obj: RawObject) -> RawObject | None:
    """The resource modifiers' ConfigMap (name, namespace and data: what ``parse_config_map`` reads),
    or None without ``spec.resourceModifier``. ModifiersInvalid when it is missing."""
    ref = (obj.get("spec") or {}).get("resourceModifier")
    if not ref:
        return None
    namespace, name = obj["metadata"]["namespace"], str(ref.get("name") or "")
    try:
        config_map = cluster.get_object(applier.resource("v1", "ConfigMap"), namespace, name)
    except UnsafeName as exc:
        raise ModifiersInvalid(str(exc)) from exc
    if config_map is None:
        raise ModifiersInvalid(f"ConfigMap {namespace}/{name} not found")
    return {"metadata": {"namespace": namespace, "name": name}, "data": config_map.get("data") or {}}


def _check_targets_exist(ports: Ports, applier: Applier) -> None:
    """A restore of another namespace's backup writes into namespaces that exist: it creates none, since
    the backup's Namespace object (labels such as pod security levels included) is that tenant's word."""
    targets = applier.guard.tenant_targets or frozenset()
    missing = [n for n in sorted(targets)
               if ports.cluster.get_cluster_object(ClusterRef("v1", "namespaces", n)) is None]  # fmt: skip
    if missing:
        raise RestoreRefused(
            f"namespace {', '.join(missing)} does not exist: a restore of another namespace's backup "
            "(spec.backupNamespace) creates no namespace; create it first"
        )


def _record_modifier_failures(
    ports: Ports, obj: RawObject, state: RestoreScratch, failed: tuple[FailedObject, ...]
) -> None:
    """Objects a resource modifier's patch failed on are not created: counted failed for their kind, with
    the reason in the status (``finish``), the log and one Warning Event."""
    if not failed:
        return
    tally: dict[str, int] = {}
    for item in failed:
        tally[f"{item.source.kind}|{FAILED}"] = tally.get(f"{item.source.kind}|{FAILED}", 0) + 1
        state.log("resource.failed", resource=str(item.source), reason=item.reason)
    reasons = [item.reason for item in failed]
    state.record_chunk("modifiers", tally, reasons)
    more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
    ports.cluster.record_event(obj, "Warning", MODIFIER_FAILED, reasons[0] + more, constants.COMPONENT_WORKER)


def find_backup(ports: Ports, namespace: str, spec: RawObject) -> tuple[BackupRepository, BackupRef]:
    """Where the backup a restore in ``namespace`` with ``spec`` reads is: the ApplicationBackup is in
    ``spec.backupNamespace`` (validated: another namespace only from the admin namespace), else in
    ``namespace``, and is read from its location as seen from its own namespace. Decided from the API
    each time (never from scratch state)."""
    namespace = spec.get("backupNamespace") or namespace
    backup = ports.cluster.get(Kind.APPLICATION_BACKUP, namespace, spec["backupName"])
    if backup is None:
        raise RestoreRefused(f"ApplicationBackup {namespace}/{spec['backupName']} not found")
    status = backup.get("status") or {}
    if status.get("stage") != Stage.FINAL or status.get("status") not in (
        Status.SUCCESSFUL,
        Status.PARTIAL_SUCCESS,
    ):
        raise RestoreRefused(
            f"ApplicationBackup {spec['backupName']} is not complete "
            f"(stage {status.get('stage')}, status {status.get('status')})"
        )
    written_to = (backup.get("spec") or {}).get("backupLocation")
    if written_to != spec["backupLocation"]:
        raise RestoreRefused(
            f"ApplicationBackup {spec['backupName']} was written to BackupLocation {written_to}, not "
            f"{spec['backupLocation']}; a restore reads a backup where it was written"
        )
    ref = ref_from_path(status.get("backupPath") or "") or BackupRef(
        namespace, spec["backupName"], backup["metadata"]["uid"]
    )
    if namespace not in (ports.settings.admin_namespace, ref.namespace):
        # A location shared from the admin namespace holds other tenants' backups beside this one's.
        raise RestoreRefused(
            f"ApplicationBackup {spec['backupName']} points at {ref.root}, a backup of namespace "
            f"{ref.namespace}: a restore in {namespace} reads only its own namespace's backups"
        )
    return ports.stores.repository(namespace, spec["backupLocation"]), ref


def locate_backup(
    ports: Ports, namespace: str, spec: RawObject
) -> tuple[BackupRepository, BackupRef, RawObject]:
    """``find_backup`` and the backup's manifest, without its list of every object stored."""
    repository, ref = find_backup(ports, namespace, spec)
    if not repository.has_manifest(ref):
        raise RestoreRefused(f"backup {ref.root} has no manifest in location {spec['backupLocation']}")
    manifest = repository.read_manifest(ref)
    # One entry per object (100,000 dicts, ~50 MB, for 100,000 objects): a restore reads the parts
    # themselves, so the list goes before planning needs the memory.
    manifest.pop("resources", None)
    return repository, ref, manifest


def read_backup(ports: Ports, namespace: str, spec: RawObject) -> tuple[RawObject, list[RawObject]]:
    """The backup's manifest and every object it holds (``locate_backup``), for what plans in memory."""
    repository, _ref, manifest = locate_backup(ports, namespace, spec)
    objects: list[RawObject] = []
    for part in manifest.get("parts") or []:
        objects.extend(repository.read_part(part["key"]))
    return manifest, objects


def _claims_with_data(manifest: RawObject) -> set[tuple[str, str]]:
    """(namespace, claim) in the backup of the volumes whose files it holds."""
    return {
        (v["namespace"], v["persistentVolumeClaim"])
        for v in manifest.get("volumes") or []
        if v.get("mode") in restore_stage.FILE_MODES
        and v.get("status") == Status.SUCCESSFUL
        and v.get("tree")
    }


def _mounts_any(obj: RawObject, claims: set[tuple[str, str]]) -> bool:
    if obj.get("kind") != "Pod" or obj.get("apiVersion") != "v1":
        return False
    namespace = obj["metadata"].get("namespace")
    volumes = (obj.get("spec") or {}).get("volumes") or []
    return any(
        (namespace, (v.get("persistentVolumeClaim") or {}).get("claimName")) in claims for v in volumes
    )


def _orphaned(pod: RawObject) -> RawObject:
    """A pod that mounts restored data is restored itself (held until its data is back, see
    ``davit.restore.inject``) rather than left to its controller: without owner references, so that
    planning keeps it and its restored controller adopts it."""
    return {**pod, "metadata": {k: v for k, v in pod["metadata"].items() if k != "ownerReferences"}}


def _data_claims(manifest: RawObject, plan: RestorePlan) -> dict[str, RawObject]:
    """The claims (``<target namespace>/<name>``) whose data the node agents write, with their tree."""
    restored_claims = {
        (o["metadata"]["namespace"], o["metadata"]["name"]): o
        for step in plan.tiers for o in step.items if o["kind"] == "PersistentVolumeClaim"
    }  # fmt: skip
    found: dict[str, RawObject] = {}
    for volume in manifest.get("volumes") or []:
        if (
            volume.get("mode") not in restore_stage.FILE_MODES
            or volume.get("status") != Status.SUCCESSFUL
            or not volume.get("tree")
        ):
            continue
        namespace = plan.map_namespace(volume["namespace"])
        claim = volume["persistentVolumeClaim"]
        if (namespace, claim) not in restored_claims:
            continue
        found[f"{namespace}/{claim}"] = {
            "tree": volume["tree"],
            "size": int(volume.get("totalSize") or 0),
            "status": {
                "namespace": namespace, "persistentVolumeClaim": claim, "volume": "", "driver": "",
                "mode": volume["mode"], "status": Status.PENDING.value, "reason": "",
                "totalSize": int(volume.get("totalSize") or 0), "bytesDone": 0,
            },
        }  # fmt: skip
    # A claim no restored pod mounts has its data written through a helper pod of the restore's own.
    restored = [o for step in plan.tiers for o in step.items]
    unmounted = mover.unmounted_claims({(e["status"]["namespace"], e["status"]["persistentVolumeClaim"])
                                        for e in found.values()}, restored)  # fmt: skip
    for key, entry in found.items():
        entry["helper"] = tuple(key.split("/", 1)) in unmounted
    return found


def _steps(
    streamed: StreamedPlan,
    data_claims: dict[str, RawObject],
    restore_uid: str,
    image: str,
    init_hooks: list[restore_hooks.InitHook] | None = None,
) -> list[list[RawObject | ReferencedChunk]]:
    """The tiers as steps, each of objects kept whole and chunks created by reference; the pods that
    mount restored data form a step of their own just before the workloads, so that their controllers
    adopt them instead of starting pods of their own. Restored pods get the init containers of the hooks
    that select them, after the restore's own."""
    kept = {group.tier.name: group.items for group in streamed.plan.tiers}
    referenced: dict[str, list[ReferencedChunk]] = {}
    for chunk in streamed.referenced:
        referenced.setdefault(TIERS[chunk.tier].name, []).append(chunk)
    steps: list[list[RawObject | ReferencedChunk]] = []
    for tier in TIERS:
        held: list[RawObject | ReferencedChunk] = []
        rest: list[RawObject | ReferencedChunk] = []
        for item in kept.get(tier.name, ()):
            if item["kind"] == "Pod":
                claims = {
                    c.split("/", 1)[1]
                    for c in data_claims
                    if c.startswith(item["metadata"]["namespace"] + "/")
                }
                mounts = inject.data_mounts(item, claims)
                pod = inject.hold_until_restored(item, mounts, restore_uid, image) if mounts else item
                pod = restore_hooks.add_init_containers(pod, init_hooks or [])
                (held if mounts else rest).append(pod)
                continue
            rest.append(item)
        rest.extend(referenced.get(tier.name, ()))
        if held:
            steps.append(held)
        if rest:
            steps.append(rest)
    return steps


#: What an object that exists becomes, per replacePolicy (unless ``never_replaced``).
_EXISTING_OUTCOME = {"Delete": REPLACED, "Update": UPDATED}


def finish_dry_run(ports: Ports, obj: RawObject, state: RestoreScratch, objects: list[RawObject],
                   existing: set[tuple[str, str, str, str]], policy: str,
                   failed: tuple[FailedObject, ...] = ()) -> None:  # fmt: skip
    counts: dict[str, dict[str, int]] = {}
    for item in objects:
        result = RESTORED
        if key_of(item) in existing:
            result = RETAINED if never_replaced(item) else _EXISTING_OUTCOME.get(policy, RETAINED)
        entry = counts.setdefault(item["kind"], dict.fromkeys(OUTCOMES, 0))
        entry[result] += 1
    for failure in failed:  # a resource modifier's patch failed on it: it would not be created
        counts.setdefault(failure.source.kind, dict.fromkeys(OUTCOMES, 0))[FAILED] += 1
    state.log("restore.dry_run", counts=counts)
    progress.advance(ports, KIND, obj, Stage.APPLICATIONS, stages.Outcome.SUCCEEDED,
                     "dry run: nothing was changed",
                     extra={"resourceCount": len(objects), "resourcesByKind": counts})  # fmt: skip
    _write_log(ports, obj, state)


def _delete_existing(applier: Applier, steps: list[list[RawObject | ReferencedChunk]],
                     existing: set[tuple[str, str, str, str]]) -> list[RawObject]:  # fmt: skip
    """replacePolicy Delete: delete what is there, dependents before what they depend on (workloads
    before claims, claims before volumes), each step waited for; what is left at the deadline."""
    for step in reversed(steps):
        objects = [o for o in step if not isinstance(o, ReferencedChunk)]
        objects += _stubs([o for o in step if isinstance(o, ReferencedChunk)])
        there = [o for o in objects if key_of(o) in existing and not never_replaced(o)]
        for item in there:
            applier.delete(item)
        left = applier.wait_gone(there, DELETE_TIMEOUT_SECONDS)
        if left:
            return left
    return []


def namespace_default(obj: RawObject) -> bool:
    """Whether ``obj`` is one a namespace has from its creation on, made again at once by a controller if
    deleted (the namespace itself, its ``default`` ServiceAccount): never deleted to be replaced, never a
    conflict for a clone's ``Fail``."""
    kind, name = obj.get("kind"), obj["metadata"].get("name")
    return obj.get("apiVersion") == "v1" and (
        kind == "Namespace" or (kind, name) == ("ServiceAccount", "default")
    )


def never_replaced(obj: RawObject) -> bool:
    """Whether ``replacePolicy: Delete`` leaves ``obj`` as it is when it exists (counted ``retained``):
    a namespace's own defaults, and every cluster-scoped object but a PersistentVolume. Those are shared
    with everything else in the cluster (a ClusterRole other bindings grant, a StorageClass other claims
    use; deleting a CRD deletes all its objects), so a restore adds what is missing and never overwrites;
    a static volume belongs to its claim and is replaced with it, so that the new claim can bind it."""
    meta = obj.get("metadata") or {}
    cluster_scoped = not meta.get("namespace") and (obj.get("apiVersion"), obj.get("kind")) != (
        "v1",
        "PersistentVolume",
    )
    return namespace_default(obj) or cluster_scoped


# --- Applications --------------------------------------------------------------------------------


def _save_steps(state: RestoreScratch, steps: list[list[RawObject | ReferencedChunk]],
                replacing: set[tuple[str, str, str, str]], update: bool = False,
                existed: frozenset[tuple[str, str, str, str]] | set[tuple[str, str, str, str]] = frozenset(),
                ) -> None:  # fmt: skip
    """The steps as chunks of items: the object, whether it replaces one deleted (Delete), and with
    Update whether it is to be updated in place and whether it existed when the restore was planned.
    A chunk created by reference keeps the same per object, by position (``_referenced_items``)."""

    def flags(key: CreatedKey, kind_key: RawObject) -> RawObject:
        entry: RawObject = {"replacing": key in replacing}
        if update and not never_replaced(kind_key):
            entry.update(update=True, existed=key in existed)
        return entry

    chunked: list[list[Any]] = []
    for step in steps:
        kept = [o for o in step if not isinstance(o, ReferencedChunk)]
        chunks: list[Any] = [
            [{"object": o, **flags(key_of(o), o)} for o in kept[i : i + CHUNK_OBJECTS]]
            for i in range(0, len(kept), CHUNK_OBJECTS)
        ]
        for chunk in (o for o in step if isinstance(o, ReferencedChunk)):
            stubs = _stubs([chunk])
            entries = [flags(key, stub) for key, stub in zip(chunk.keys, stubs, strict=True)]
            chunks.append({"reference": chunk.to_dict(), "flags": entries})
        chunked.append(chunks)
    state.save_steps(chunked)


def _layout(state: RestoreScratch) -> list[int]:
    return state.step_layout()


def _part(step: int, chunk: int) -> str:
    return f"step:{step}:{chunk}"


def _send_step(ports: Ports, obj: RawObject, state: RestoreScratch, step: int) -> None:
    layout = _layout(state)
    if state_loss.is_lost(state):  # no steps left because there are none any more: not done
        rebuild(ports, obj, state)
        return
    if step >= len(layout):
        _applications_done(ports, obj, state)
        return
    parts = [_part(step, c) for c in range(layout[step])]
    state.add_pending(parts, group=state.step_group(step))
    state.set_current_step(step)
    _send_parts(ports, obj, state.pending(group=state.step_group(step)))


def _send_parts(ports: Ports, obj: RawObject, parts: list[str]) -> None:
    """The chunks of a step: parts of the Applications stage (not a transition), to the stage's owner."""
    meta = obj["metadata"]
    queue = stages.owner(KIND, Stage.APPLICATIONS)
    assert queue is not None
    for part in parts:
        message = Message(KIND, meta["namespace"], meta["name"], meta["uid"], Stage.APPLICATIONS.value, part)
        ports.dispatch.send(message, queue)


def resend_current_step(ports: Ports, obj: RawObject, state: RestoreScratch) -> None:
    step = state.current_step()
    if step is None or state_loss.is_lost(state):
        # Gone, or never complete (a task died laying it out): laid out again from the backup.
        rebuild(ports, obj, state)
        return
    if state.pending(group=state.step_group(step)):
        _send_parts(ports, obj, state.pending(group=state.step_group(step)))
    else:
        _next_step(ports, obj, state, step)


def apply_chunk(ports: Ports, obj: RawObject, state: RestoreScratch, part: str) -> None:
    _prefix, step_text, chunk_text = part.split(":")
    step, chunk = int(step_text), int(chunk_text)
    group = state.step_group(step)
    if not state.is_pending(part, group=group):
        if state_loss.is_lost(state):
            rebuild(ports, obj, state)
        return
    items, unusable = _chunk_items(ports, obj, state, state.chunk(step, chunk))
    items = snapshots.before_claims(ports, obj, state, items)  # their copies of snapshots first
    applier = applier_for(ports.cluster, ports.settings.admin_namespace, obj)

    def create(item: RawObject) -> tuple[RawObject, Outcome]:
        if item.get("update") and item.get("existed"):
            return item["object"], applier.update(item["object"])
        outcome = applier.create(item["object"])
        if outcome.result == RETAINED and item.get("update"):
            outcome = applier.update(item["object"])  # made by someone else since the restore was planned
        elif outcome.result == RESTORED and item["replacing"]:
            outcome = Outcome(REPLACED)
        return item["object"], outcome

    with ThreadPoolExecutor(PARALLEL_CREATES, thread_name_prefix="davit-restore-create") as pool:
        results = list(pool.map(create, items))
    # Per chunk, so that a retried chunk replaces its counts instead of adding to them.
    tally: dict[str, int] = {}
    failures = []
    for kind, reason in unusable:
        tally[f"{kind}|{FAILED}"] = tally.get(f"{kind}|{FAILED}", 0) + 1
        failures.append(reason)
        state.log("resource.failed", reason=reason)
    for created, outcome in results:
        tally[f"{created['kind']}|{outcome.result}"] = tally.get(f"{created['kind']}|{outcome.result}", 0) + 1
        if outcome.result == FAILED:
            failures.append(outcome.reason)
            state.log("resource.failed", resource=describe(created), reason=outcome.reason)
    state.record_chunk(part, tally, failures)
    # A claim that was there keeps its data: kept (Retain), updated in place, or its update refused.
    kept = [(created, outcome) for (created, outcome), item in zip(results, items, strict=True)
            if outcome.result in (RETAINED, UPDATED)
            or (outcome.result == FAILED and item.get("existed"))]  # fmt: skip
    _skip_retained_volumes(ports, obj, state, kept)
    progress.heartbeat(ports, KIND, obj, {"resourcesByKind": counts(state)})
    if state.finish(part, group=group):
        _next_step(ports, obj, state, step)


def _chunk_items(
    ports: Ports, obj: RawObject, state: RestoreScratch, saved: Any
) -> tuple[list[RawObject], list[tuple[str, str]]]:
    """A chunk's items (each the object to create and its flags) and, for a chunk created by reference,
    (kind, reason) of each object that cannot be created as planned."""
    if isinstance(saved, list):
        return saved, []
    if not isinstance(saved, dict) or not isinstance(saved.get("reference"), dict):
        return [], []
    return _referenced_items(ports, obj, state, saved)


def _referenced_items(
    ports: Ports, obj: RawObject, state: RestoreScratch, saved: RawObject
) -> tuple[list[RawObject], list[tuple[str, str]]]:
    """The items of a chunk created by reference: its part read again from the backup the restore's spec
    names (found through the API, never through scratch state), the part required to be the backup's own
    and to have the digest it had when planned, each object transformed again with the chunk's scope."""
    chunk = ReferencedChunk.from_dict(saved["reference"])
    flags = list(saved.get("flags") or [])
    kinds = [key[1] for key in chunk.keys]

    def all_failed(reason: str) -> tuple[list[RawObject], list[tuple[str, str]]]:
        return [], [(kind, f"{'/'.join(key)}: {reason}") for kind, key in zip(kinds, chunk.keys, strict=True)]

    context = state.plan_context()
    if context is None or len(flags) != len(chunk.keys):
        return all_failed("the restore's plan is incomplete in its scratch state")
    meta, spec = obj["metadata"], obj.get("spec") or {}
    try:
        repository, ref = find_backup(ports, meta["namespace"], spec)
    except RestoreRefused as exc:
        return all_failed(str(exc))
    if not chunk.part.startswith(ref.root):
        return all_failed(f"{chunk.part} is not a part of backup {ref.root}")
    try:
        objects, digest = repository.read_part_with_digest(chunk.part)
    except CorruptObject as exc:
        return all_failed(f"the backup cannot be read: {exc}")
    if digest != chunk.digest:
        return all_failed(f"{chunk.part} changed since the restore was planned")
    provenance = Provenance(*(str(v) for v in context.get("provenance") or ["", "", "", ""]))
    ctx = context_for(
        {k: v for k, v in (context.get("spec") or {}).items() if v is not None}, provenance,
        cluster_scoped_allowed=bool(context.get("clusterScopedAllowed")),
        target_nodes=frozenset(context["targetNodes"]) if context.get("targetNodes") is not None else None,
    )  # fmt: skip
    modifiers = parse_config_map(context["modifiers"]) if context.get("modifiers") else None
    plurals = {(str(g), str(k)): str(p) for g, k, p in context.get("plurals") or []}
    bodies, problems = transform_referenced(objects, chunk, ctx, modifiers, plurals)
    planned: dict[CreatedKey, RawObject] = {key: entry for key, entry in zip(chunk.keys, flags, strict=True)}
    items = [{"object": body, **planned.get(key_of(body), {"replacing": False})} for body in bodies]
    return items, problems


def _next_step(ports: Ports, obj: RawObject, state: RestoreScratch, step: int) -> None:
    """After a step: wait for restored CRDs to be Established (their custom resources come later)."""
    first = state.chunk(step, 0)
    crds = [i["object"]["metadata"]["name"] for i in (first if isinstance(first, list) else [])
            if i["object"]["kind"] == "CustomResourceDefinition"]  # fmt: skip
    if crds:
        applier = applier_for(ports.cluster, ports.settings.admin_namespace, obj)
        deadline = time.monotonic() + CRD_TIMEOUT_SECONDS
        waiting = list(crds)
        while waiting and time.monotonic() < deadline:
            waiting = [name for name in waiting if not applier.crd_established(name)]
            if waiting:
                time.sleep(0.5)  # the apiextensions controller needs a moment: poll the server
        if waiting:
            state.log("crd.not_established", crds=waiting)
    _send_step(ports, obj, state, step + 1)


def rebuild(ports: Ports, obj: RawObject, state: RestoreScratch) -> None:
    """The Applications stage's state is lost (``davit.operations.state_loss``): planned again from the
    backup in the location and applied from the first step; what was already created is kept and counted
    restored. One task rebuilds; others noticing the same loss leave it to that one."""
    if not state_loss.claim_rebuild(state):
        return
    state_loss.note_rebuilt(ports, KIND, obj, Stage.APPLICATIONS, state)
    lay_out(ports, obj, state, rebuilding=True)


def counts(state: RestoreScratch) -> dict[str, dict[str, int]]:
    result: dict[str, dict[str, int]] = {}
    for tally in state.chunk_counts():
        for field, value in tally.items():
            kind, _sep, outcome = field.partition("|")
            entry = result.setdefault(kind, dict.fromkeys(OUTCOMES, 0))
            entry[outcome] = entry.get(outcome, 0) + int(value)
    return result


def _skip_retained_volumes(
    ports: Ports, obj: RawObject, state: RestoreScratch, results: list[tuple[RawObject, Outcome]]
) -> None:
    """The claims among ``results`` were already there and are left as they are, data included (Retain;
    Update changes a claim's object, never the data in its volume): their volumes are not written, so
    they are done at once."""
    meta = obj["metadata"]
    for created, outcome in results:
        if created["kind"] != "PersistentVolumeClaim":
            continue
        claim_part = f"{created['metadata']['namespace']}/{created['metadata']['name']}"
        part = volumes.PART_PREFIX + claim_part
        if not state.is_pending(part, group=volumes.GROUP):
            continue
        how = {RETAINED: "was retained", UPDATED: "was updated in place"}.get(outcome.result, "stays")
        reason = f"the claim already existed and {how}: its data was left as it was"
        state.log("volume.retained", claim=claim_part)
        fields = {"status": Status.SUCCESSFUL.value, "reason": reason}
        backup_stage.update_volume(ports, meta["namespace"], meta["name"], claim_part, fields, kind=KIND)
        state.drop_volume_target(claim_part)
        state.finish(part, group=volumes.GROUP)


def _save_owners(state: RestoreScratch, owned: tuple[OwnedObject, ...]) -> None:
    if owned:
        body = [dataclasses.asdict(o) for o in owned]
        state.save_owners(body)


def _link_owners(ports: Ports, obj: RawObject, state: RestoreScratch) -> None:
    """Restored objects get their owner references back, pointing at their restored owners' new uids
    (owners are created in any tier, so this waits until every tier is)."""
    owners = state.owners()
    if not owners:
        return
    applier = applier_for(ports.cluster, ports.settings.admin_namespace, obj)

    def link(entry: RawObject) -> None:
        references = []
        for owner in entry["owners"]:
            link = OwnerLink(**owner)
            found = applier.get(link.api_version, link.kind, link.namespace, link.name)
            if found is not None:
                references.append(link.reference(found["metadata"]["uid"]))
        target = {"apiVersion": entry["api_version"], "kind": entry["kind"],
                  "metadata": {"namespace": entry["namespace"], "name": entry["name"]}}  # fmt: skip
        if references:
            try:
                applier.set_owners(target, references)
            except ApiException as exc:
                state.log("resource.owner_failed", resource=describe(target), reason=api_message(exc))
            except Refused as exc:
                state.log("resource.owner_refused", resource=describe(target), reason=str(exc))

    with ThreadPoolExecutor(PARALLEL_CREATES, thread_name_prefix="davit-restore-owners") as pool:
        list(pool.map(link, owners))


def _applications_done(ports: Ports, obj: RawObject, state: RestoreScratch) -> None:
    _link_owners(ports, obj, state)
    if state.has_volume_targets():
        progress.advance(ports, KIND, obj, Stage.APPLICATIONS, stages.Outcome.DONE, "writing volume data",
                         extra={"resourcesByKind": counts(state)})  # fmt: skip
        return
    finish(ports, obj, state)


def finish(ports: Ports, obj: RawObject, state: RestoreScratch) -> None:
    obj = ports.cluster.get(KIND, obj["metadata"]["namespace"], obj["metadata"]["name"]) or obj
    by_kind = counts(state)
    volume_entries = (obj.get("status") or {}).get("volumes") or []
    reasons = state.failure_reasons()
    # Read, then confirm: counts read from a lost state would make a restore look done.
    if state_loss.is_lost(state):
        if (obj.get("status") or {}).get("stage") == Stage.VOLUMES:
            rebuild_volumes(ports, obj, state)
        else:
            rebuild(ports, obj, state)
        return
    snapshots.cleanup(ports, obj)  # the restore's copies of snapshots, no longer needed
    volumes.remove_helpers(ports, obj, volume_entries)
    # From Volumes, or from Applications when no volume data was to be written.
    stage = Stage.VOLUMES if (obj.get("status") or {}).get("stage") == Stage.VOLUMES else Stage.APPLICATIONS
    if (obj.get("spec") or {}).get("inPlaceVolumes"):
        # The workloads run again on the restored data (before any hook: its pods must run).
        applier = applier_for(ports.cluster, ports.settings.admin_namespace, obj)
        problems = in_place_stage.scale_back(ports, obj, applier)
        if problems:
            conclude(ports, obj, state, stage, by_kind, reasons, problems)
            return
    if restore_hooks.requested(obj.get("spec") or {}):
        progress.advance(ports, KIND, obj, stage, stages.Outcome.RESTORED, "running the restore's hooks",
                         extra={"resourcesByKind": by_kind})  # fmt: skip
        return
    conclude(ports, obj, state, stage, by_kind, reasons)


def conclude(
    ports: Ports, obj: RawObject, state: RestoreScratch, stage: Stage, by_kind: dict[str, dict[str, int]],
    reasons: list[str], hook_failures: list[str] | None = None,
) -> None:  # fmt: skip
    """End the restore from ``stage``: Successful when nothing failed, PartialSuccess when something
    was restored (or only hooks, or giving workloads their replicas back, failed), else Failed; the
    reasons name what failed."""
    failed = sum(c["failed"] for c in by_kind.values())
    done = sum(c[RESTORED] + c[RETAINED] + c[REPLACED] + c[UPDATED] for c in by_kind.values())
    volume_entries = (obj.get("status") or {}).get("volumes") or []
    failed_volumes = [v for v in volume_entries if v.get("status") == Status.FAILED]
    reasons = reasons[:REASONS_SHOWN]
    reasons += [
        f"volume {v['namespace']}/{v['persistentVolumeClaim']}: {v.get('reason')}" for v in failed_volumes
    ]
    reasons += (hook_failures or [])[:REASONS_SHOWN]
    if not failed and not failed_volumes and not hook_failures:
        status, reason = Status.SUCCESSFUL, ""
    elif done or len(failed_volumes) < len(volume_entries) or (hook_failures and not failed):
        status, reason = Status.PARTIAL_SUCCESS, "; ".join(reasons)
    else:
        status, reason = Status.FAILED, "; ".join(reasons)
    state.log("restore.finished", status=status.value, counts=by_kind)
    progress.advance(
        ports, KIND, obj, stage, stages.outcome_of(status), reason, extra={"resourcesByKind": by_kind}
    )
    _write_log(ports, obj, state)
    state.clear()


def run_hooks(ports: Ports, obj: RawObject, state: RestoreScratch) -> None:
    """The PostExecRule stage: the hooks run, then the restore ends as ``finish`` would have ended it,
    with any hook's failure making it PartialSuccess. The counts are the status's (written on entering
    the stage), so a lost scratch state loses only the objects' failure reasons."""
    failures = hooks_stage.run(ports, obj, state)
    if failures is None:
        return  # another task runs them
    obj = ports.cluster.get(KIND, obj["metadata"]["namespace"], obj["metadata"]["name"]) or obj
    status = obj.get("status") or {}
    if state_loss.is_lost(state):
        tally, failed = _status_counts(status.get("resourcesByKind"))
        lost = (
            [f"{failed} object(s) failed; their reasons were lost with the scratch state"] if failed else []
        )
        by_kind: dict[str, dict[str, int]] = {}
        for key, value in tally.items():
            kind, outcome = key.split("|", 1)
            by_kind.setdefault(kind, dict.fromkeys(OUTCOMES, 0))[outcome] = value
        conclude(ports, obj, state, Stage.POST_EXEC_RULE, by_kind, lost, failures)
        return
    conclude(ports, obj, state, Stage.POST_EXEC_RULE, counts(state), state.failure_reasons(), failures)


def rebuild_volumes(ports: Ports, obj: RawObject, state: RestoreScratch) -> None:
    """The Volumes stage's state is lost: every object is created already, and the status says which
    volumes are done. The others are laid out again with their trees from the backup's manifest and
    handed out (a node agent writing one replaces what it finds); the counts come back from the status."""
    if not state_loss.claim_rebuild(state):
        return
    meta, spec = obj["metadata"], obj.get("spec") or {}
    state_loss.note_rebuilt(ports, KIND, obj, Stage.VOLUMES, state)
    try:
        _repository, _ref, manifest = locate_backup(ports, meta["namespace"], spec)
    except (RestoreRefused, LocationUnavailable) as exc:
        reason = exc.reason if isinstance(exc, LocationUnavailable) else str(exc)
        progress.fail(ports, KIND, obj, f"{state_loss.STATE_LOST}: rebuilding the volumes: {reason}",
                      event_reason=state_loss.STATE_LOST)  # fmt: skip
        return
    trees = restore_stage.backup_trees(manifest, dict(spec.get("namespaceMapping") or {}))
    status = obj.get("status") or {}
    state.lay_out(Stage.VOLUMES.value)
    tally, failed = _status_counts(status.get("resourcesByKind"))
    lost_reasons = (
        [f"{failed} object(s) failed; their reasons were lost with the scratch state"] if failed else []
    )
    state.record_chunk("rebuilt", tally, lost_reasons)
    targets: dict[str, dict[str, str]] = {}
    # Claims made from snapshots: their snapshot is derived again as when planning; settled once bound.
    from_snapshots = snapshots.lost_targets(obj, manifest)
    missing = []
    for entry in status.get("volumes") or []:
        if not isinstance(entry, dict) or entry.get("status") in (Status.SUCCESSFUL, Status.FAILED):
            continue
        claim_part = f"{entry.get('namespace')}/{entry.get('persistentVolumeClaim')}"
        if claim_part in trees and entry.get("mode", "filesystem") in restore_stage.FILE_MODES:
            targets[claim_part] = {"tree": trees[claim_part]}
        elif claim_part not in from_snapshots:
            missing.append(claim_part)
    _save_volumes(state, {claim: {"tree": t["tree"], "helper": _unmounted(ports, claim)}
                          for claim, t in targets.items()})  # fmt: skip
    if from_snapshots:
        state.save_volume_targets(from_snapshots)
        state.add_pending([volumes.PART_PREFIX + claim for claim in from_snapshots], group=volumes.GROUP)
    for claim_part in missing:  # no tree to write: its progress went with the state
        reason = f"{state_loss.STATE_LOST}: the volume's progress was lost with the scratch state"
        fields = {"status": Status.FAILED.value, "reason": reason}
        backup_stage.update_volume(ports, meta["namespace"], meta["name"], claim_part, fields, kind=KIND)
    if targets or from_snapshots:
        volumes.hand_out(ports, obj, state)
    else:
        finish(ports, obj, state)


def _status_counts(by_kind: object) -> tuple[dict[str, int], int]:
    """``status.resourcesByKind`` as one chunk's tally, and how many failed (non-numbers left out)."""
    tally: dict[str, int] = {}
    failed = 0
    for kind, entry in (by_kind if isinstance(by_kind, dict) else {}).items():
        for outcome in OUTCOMES:
            value = entry.get(outcome) if isinstance(entry, dict) else None
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                tally[f"{kind}|{outcome}"] = value
                failed += value if outcome == FAILED else 0
    return tally, failed


def _write_log(ports: Ports, obj: RawObject, state: RestoreScratch) -> None:
    """Keep the operation's log in the location it restored from, for ``davit restore logs``."""
    meta, spec = obj["metadata"], obj.get("spec") or {}
    try:
        repository = ports.stores.repository(backup_namespace(obj), spec["backupLocation"])
        lines = state.log_lines()
        repository.put(restore_log(meta["namespace"], meta["name"], meta["uid"]),
                       ("\n".join(lines) + "\n").encode() if lines else b"")  # fmt: skip
    except (LocationUnavailable, OSError) as exc:
        log.warning("restore.log_not_stored", reason=str(exc))


def _unmounted(ports: Ports, claim_part: str) -> bool:
    """Whether no pod of the cluster mounts the claim (after a lost state, which claims got a helper
    pod is known again from the cluster: the restored pods are there, and a helper made before)."""
    namespace, claim = claim_part.split("/", 1)
    return not any(inject.data_mounts(pod, {claim}) for pod in ports.cluster.list_pods(namespace))


def _save_volumes(state: RestoreScratch, data_claims: dict[str, RawObject]) -> None:
    if data_claims:
        state.save_volume_targets(
            {
                k: {"tree": v["tree"], **({"helper": True} if v.get("helper") else {})}
                for k, v in data_claims.items()
            }
        )
        state.add_pending([volumes.PART_PREFIX + k for k in data_claims], group=volumes.GROUP)
