"""From a backed-up object to the object a restore creates, or the reason it is not restored (pure).

A backed-up object is what the API server returned in the source cluster. Creating it again as it is
would fail (server-assigned fields, allocated cluster IPs), or worse, succeed with the wrong meaning: an
owner reference to a uid that does not exist makes the garbage collector delete the new object at once,
a token Secret of the source cluster is deleted by the token controller, a claim bound to a volume
that is not restored stays Pending forever. ``transform`` applies every rule that makes the object right
for the target; ``docs/architecture.md`` ("Restore: order and transformations") lists them with their
reasons.

Some decisions depend on what else the restore holds (is this pod's ReplicaSet restored? is this
claim's volume?). That knowledge is a ``Scope`` of object keys, built in a first pass over the backup
(``davit.restore.plan``), so that objects can then be transformed one page at a time without holding
the whole backup in memory.

The input object is never modified; a restored object is a new dict.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

from davit import constants, jsonbytes
from davit.api.objects import RawObject
from davit.restore import fields
from davit.restore.tiers import group_kind, group_of


class SkipCode(StrEnum):
    """Why an object is not restored; the reason string says which rule, about which object."""

    #: A kind that is never restored (Nodes, Events, Leases, Davit's own kinds, ...).
    NEVER_RESTORED = "NeverRestored"
    #: The target cluster creates it itself (token Secrets, kube-root-ca.crt, Endpoints, mirror pods).
    MANAGED_BY_CLUSTER = "ManagedByCluster"
    #: Its controller is restored and creates it again (a Deployment's ReplicaSets and pods, ...).
    RECREATED_BY_OWNER = "RecreatedByOwner"
    #: A pod or Job that has finished: restoring it would not run anything.
    COMPLETED = "Completed"
    #: A dynamically provisioned volume: its claim is provisioned anew and the data restored into it.
    DYNAMIC_VOLUME = "DynamicVolume"
    #: Cluster-scoped, and the restore is not in the admin namespace (Stork's multi-tenancy rule).
    CLUSTER_SCOPED = "ClusterScoped"


@dataclass(frozen=True)
class Skip:
    """An object left out of a restore, and why."""

    code: SkipCode
    reason: str


class ObjectKey(NamedTuple):
    """An object's identity in the backup (source namespace; ``""`` for cluster-scoped objects)."""

    group: str
    kind: str
    namespace: str
    name: str

    @classmethod
    def of(cls, obj: RawObject) -> ObjectKey:
        meta = obj.get("metadata") or {}
        group, kind = group_kind(obj)
        # Interned: a large backup holds the same few groups, kinds and namespaces on 100,000 keys.
        return cls(sys.intern(group), sys.intern(kind), sys.intern(str(meta.get("namespace") or "")),
                   str(meta.get("name") or ""))  # fmt: skip

    def __str__(self) -> str:
        kind = f"{self.kind}.{self.group}" if self.group else self.kind
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{kind} {where}{self.name}"


@dataclass(frozen=True)
class Provenance:
    """Which backup a restore reads and which restore it is: recorded on every restored object."""

    backup_name: str
    backup_uid: str
    restore_name: str
    restore_uid: str

    def labels(self) -> dict[str, str]:
        return {
            fields.RESTORED_FROM_BACKUP_LABEL: fields.label_value(self.backup_name),
            fields.RESTORE_LABEL: fields.label_value(self.restore_name),
        }

    def annotations(self) -> dict[str, str]:
        return {
            fields.BACKUP_UID_ANNOTATION: self.backup_uid,
            fields.RESTORE_UID_ANNOTATION: self.restore_uid,
        }


@dataclass(frozen=True)
class Scope:
    """What the rest of the restore holds, as far as one object's transformation depends on it."""

    #: Objects that exist once the restore is done: restored, or recreated by a restored controller.
    #: (Sets, not only frozensets: the planner passes sets that record what a transformation looks up,
    #: ``davit.restore.plan.ScopeRecorder``.)
    present: AbstractSet[ObjectKey] = frozenset()
    #: (namespace, name) of present Services with a selector: the endpoints controller fills their
    #: Endpoints, so the backed-up Endpoints are not restored.
    services_with_selector: AbstractSet[tuple[str, str]] = frozenset()
    #: Names of present statically provisioned PersistentVolumes: their claims stay bound to them.
    static_volumes: AbstractSet[str] = frozenset()


@dataclass(frozen=True)
class Context:
    """Everything ``transform`` needs besides the object: the restore's spec and the scope."""

    provenance: Provenance
    namespace_mapping: Mapping[str, str] = field(default_factory=dict)
    storage_class_mapping: Mapping[str, str] = field(default_factory=dict)
    node_mapping: Mapping[str, str] = field(default_factory=dict)
    scope: Scope = Scope()
    #: Whether the restore may create cluster-scoped objects: only a restore in the admin namespace may.
    cluster_scoped_allowed: bool = True
    #: The target cluster's node names, when known: a claim's selected node that is not among them (after
    #: ``node_mapping``) is dropped, so the scheduler picks a node instead of provisioning stalling.
    target_nodes: frozenset[str] | None = None
    #: ``preserveNodePorts``: keep Services' node ports as backed up instead of having them allocated anew.
    preserve_node_ports: bool = False

    def target_namespace(self, namespace: str) -> str:
        return self.namespace_mapping.get(namespace, namespace)


@dataclass(frozen=True)
class OwnerLink:
    """An owner reference to put back once the owner exists in the target, with its new uid.

    A restored owner has a new uid, known only after it is created, and the owner may be in a later tier
    than its dependent (a ConfigMap owned by a custom resource). So restored objects are created without
    owner references, and the restore adds these afterwards, looking the owner up by name.
    """

    api_version: str
    kind: str
    namespace: str
    name: str
    controller: bool | None = None
    block_owner_deletion: bool | None = None

    def reference(self, uid: str) -> dict[str, Any]:
        """The ``metadata.ownerReferences`` entry for the owner's ``uid`` in the target."""
        ref: dict[str, Any] = {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": uid,
        }
        if self.controller is not None:
            ref["controller"] = self.controller
        if self.block_owner_deletion is not None:
            ref["blockOwnerDeletion"] = self.block_owner_deletion
        return ref


# --- what is never restored ------------------------------------------------------------------------

_NEVER_RESTORED: dict[tuple[str, str], str] = {
    ("", "Node"): "Nodes are the target cluster's machines, registered by their kubelets",
    ("", "Event"): "Events are a record of the past in the source cluster",
    ("events.k8s.io", "Event"): "Events are a record of the past in the source cluster",
    ("coordination.k8s.io", "Lease"): "Leases are heartbeats, meaningless after a restore",
    ("", "ComponentStatus"): "ComponentStatuses are reported by the API server, not stored",
}
_NEVER_RESTORED_GROUPS: dict[str, str] = {
    constants.API_GROUP: "Davit's own kinds are never restored: a restore must not resurrect backups, "
    "locations with credentials or schedules that would fire again",
    "metrics.k8s.io": "metrics are measured by the target cluster, not stored",
}
#: Kinds whose objects a controller creates for its owner: not restored when that owner is present.
_RECREATED_BY_CONTROLLER = frozenset(
    {("", "Pod"), ("apps", "ReplicaSet"), ("extensions", "ReplicaSet"), ("batch", "Job"),
     ("apps", "ControllerRevision")}
)  # fmt: skip
#: The type of the Secrets the token controller generates (a type name, not a credential).
TOKEN_SECRET_TYPE = "kubernetes.io/service-account-token"  # noqa: S105
ROOT_CA_CONFIG_MAP = "kube-root-ca.crt"
MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"
ENDPOINT_SLICE_MANAGER_LABEL = "endpointslice.kubernetes.io/managed-by"
#: The label of the VolumeSnapshots a Davit backup takes (``davit.kube.csi``).
DAVIT_SNAPSHOT_LABEL = "davit.dev/backup-uid"


def intrinsic_skip(obj: RawObject, ctx: Context) -> Skip | None:
    """Why ``obj`` is not restored, judging by the object alone (and the restore's settings)."""
    group, kind = group_kind(obj)
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    if group in _NEVER_RESTORED_GROUPS:
        return Skip(SkipCode.NEVER_RESTORED, _NEVER_RESTORED_GROUPS[group])
    if (group, kind) in _NEVER_RESTORED:
        return Skip(SkipCode.NEVER_RESTORED, _NEVER_RESTORED[group, kind])
    if (group, kind) == ("", "Secret") and obj.get("type") == TOKEN_SECRET_TYPE:
        return Skip(
            SkipCode.MANAGED_BY_CLUSTER,
            "a ServiceAccount token of the source cluster: the token controller deletes it (its "
            "ServiceAccount's uid changes) and issues a new one",
        )
    if (group, kind) == ("snapshot.storage.k8s.io", "VolumeSnapshot") and DAVIT_SNAPSHOT_LABEL in (
        meta.get("labels") or {}
    ):
        return Skip(
            SkipCode.NEVER_RESTORED,
            "a VolumeSnapshot a backup took: it belongs to that backup (and goes with it); created again it "
            "would snapshot the restored claim, which comes back from the snapshot instead",
        )
    if (group, kind) == ("", "ConfigMap") and meta.get("name") == ROOT_CA_CONFIG_MAP:
        return Skip(SkipCode.MANAGED_BY_CLUSTER, "published into every namespace by the target cluster")
    if (group, kind) == ("discovery.k8s.io", "EndpointSlice"):
        manager = str((meta.get("labels") or {}).get(ENDPOINT_SLICE_MANAGER_LABEL) or "")
        if manager.endswith(".k8s.io"):
            return Skip(SkipCode.MANAGED_BY_CLUSTER, f"managed by {manager}, which recreates it")
    if (group, kind) == ("", "Pod"):
        if MIRROR_POD_ANNOTATION in (meta.get("annotations") or {}):
            return Skip(
                SkipCode.MANAGED_BY_CLUSTER, "the mirror of a static pod, created by its node's kubelet"
            )
        if status.get("phase") in ("Succeeded", "Failed"):
            return Skip(SkipCode.COMPLETED, f"a completed pod (phase {status['phase']})")
    if (group, kind) == ("batch", "Job"):
        finished = _finished_job(status)
        if finished:
            return Skip(SkipCode.COMPLETED, f"a finished Job ({finished})")
    if (group, kind) == ("", "PersistentVolume"):
        provisioner = (meta.get("annotations") or {}).get(fields.PROVISIONED_BY_ANNOTATION)
        if provisioner:
            claim = spec.get("claimRef") or {}
            return Skip(
                SkipCode.DYNAMIC_VOLUME,
                f"dynamically provisioned by {provisioner}: its claim "
                f"{claim.get('namespace', '?')}/{claim.get('name', '?')} gets a new volume from its "
                "StorageClass, into which the node agent restores the backed-up data",
            )
    # Last: the reasons above hold whoever restores, and say more.
    if not meta.get("namespace") and not ctx.cluster_scoped_allowed:
        if (group, kind) == ("", "Namespace"):
            reason = "a restore outside the admin namespace writes only into its own namespace, which exists"
        else:
            reason = "cluster-scoped: only a restore in the admin namespace creates cluster-scoped objects"
        return Skip(SkipCode.CLUSTER_SCOPED, reason)
    return None


def _finished_job(status: Mapping[str, Any]) -> str | None:
    for condition in fields.maps(status.get("conditions")):
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return f"condition {condition['type']}"
    if status.get("completionTime"):
        return f"completed at {status['completionTime']}"
    return None


def scope_skip(obj: RawObject, ctx: Context) -> Skip | None:
    """Why ``obj`` is not restored, judging by what else the restore holds (``ctx.scope``)."""
    group, kind = group_kind(obj)
    meta = obj.get("metadata") or {}
    if (group, kind) in _RECREATED_BY_CONTROLLER:
        for ref in fields.maps(meta.get("ownerReferences")):
            if ref.get("controller") is True and _present_owner(ref, meta, ctx) is not None:
                return Skip(
                    SkipCode.RECREATED_BY_OWNER,
                    f"created by its controller {ref.get('kind')} {ref.get('name')}, which is restored",
                )
    if (group, kind) == ("", "Endpoints"):
        service = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        if service in ctx.scope.services_with_selector:
            return Skip(
                SkipCode.MANAGED_BY_CLUSTER,
                f"kept up to date by the endpoints controller for Service {service[1]}, which is restored",
            )
    return None


def skip_reason(obj: RawObject, ctx: Context) -> Skip | None:
    """Why ``obj`` is not restored, or None if it is."""
    return intrinsic_skip(obj, ctx) or scope_skip(obj, ctx)


# --- owners ----------------------------------------------------------------------------------------


def _present_owner(ref: Mapping[str, Any], meta: Mapping[str, Any], ctx: Context) -> ObjectKey | None:
    """The key of the owner ``ref`` names if the restore makes it present (namespaced owners live in
    their dependent's namespace; cluster-scoped owners have none)."""
    group = group_of(str(ref.get("apiVersion") or ""))
    kind, name = str(ref.get("kind") or ""), str(ref.get("name") or "")
    for namespace in (str(meta.get("namespace") or ""), ""):
        key = ObjectKey(group, kind, namespace, name)
        if key in ctx.scope.present:
            return key
    return None


def owner_links(obj: RawObject, ctx: Context) -> tuple[OwnerLink, ...]:
    """The owner references of ``obj`` to restore: those whose owner is present after the restore.

    References to owners that are not restored are dropped for good: their uid exists nowhere in the
    target, and the garbage collector deletes an object whose every owner is missing.
    """
    meta = obj.get("metadata") or {}
    links = []
    for ref in fields.maps(meta.get("ownerReferences")):
        owner = _present_owner(ref, meta, ctx)
        if owner is None:
            continue
        links.append(
            OwnerLink(
                api_version=str(ref.get("apiVersion")),
                kind=owner.kind,
                namespace=ctx.target_namespace(owner.namespace) if owner.namespace else "",
                name=owner.name,
                controller=ref.get("controller"),
                block_owner_deletion=ref.get("blockOwnerDeletion"),
            )
        )
    return tuple(links)


# --- the transformation ----------------------------------------------------------------------------


def transform(obj: RawObject, ctx: Context) -> RawObject | Skip:
    """The object to create in the target for the backed-up ``obj``, or why it is not restored.

    Owner references are removed; ``owner_links`` says which to add back once the owners exist.
    """
    skip = skip_reason(obj, ctx)
    if skip is not None:
        return skip
    restored = jsonbytes.copy_json(obj)
    fields.strip_server_assigned(restored)
    fields.metadata(restored).pop("ownerReferences", None)
    fields.remap_namespaces(restored, ctx.namespace_mapping)
    fields.map_storage_classes(restored, ctx.storage_class_mapping)
    fields.map_nodes(restored, ctx.node_mapping)
    edit = _KIND_EDITS.get(group_kind(obj))
    if edit is not None:
        edit(restored, ctx)
    fields.add_provenance(restored, ctx.provenance.labels(), ctx.provenance.annotations())
    return restored


def _service(obj: RawObject, ctx: Context) -> None:
    fields.strip_service_addresses(obj, keep_node_ports=ctx.preserve_node_ports)


def _pod(obj: RawObject, ctx: Context) -> None:
    # The scheduler places the pod again: its constraints and its volumes' node affinity (both mapped
    # through nodeMapping) say where; a node name of the source cluster may not exist in the target.
    fields.pop_path(obj, "spec", "nodeName")
    fields.strip_token_volumes(obj)


def _claim(obj: RawObject, ctx: Context) -> None:
    fields.strip_binding_annotations(obj)
    spec = obj.get("spec")
    if isinstance(spec, dict) and spec.get("volumeName") not in ctx.scope.static_volumes:
        # The volume is provisioned anew from the claim's StorageClass and the data restored into it.
        spec.pop("volumeName", None)
    annotations = fields.dig(obj, "metadata", "annotations")
    if isinstance(annotations, dict) and ctx.target_nodes is not None:
        node = annotations.get(fields.SELECTED_NODE_ANNOTATION)
        if node is not None and node not in ctx.target_nodes:
            del annotations[fields.SELECTED_NODE_ANNOTATION]


def _volume(obj: RawObject, ctx: Context) -> None:
    # A restored static volume looks like one an administrator created and pre-bound to its claim: the
    # PV controller binds the pair by name once the claim exists (the old claim's uid is gone).
    fields.strip_binding_annotations(obj)
    fields.pop_path(obj, "spec", "claimRef", "uid")
    fields.pop_path(obj, "spec", "claimRef", "resourceVersion")


def _service_account(obj: RawObject, ctx: Context) -> None:
    fields.strip_token_references(obj)


def _job(obj: RawObject, ctx: Context) -> None:
    fields.strip_job_uid_labels(obj)


_KIND_EDITS = {
    ("", "Service"): _service,
    ("", "Pod"): _pod,
    ("", "PersistentVolumeClaim"): _claim,
    ("", "PersistentVolume"): _volume,
    ("", "ServiceAccount"): _service_account,
    ("batch", "Job"): _job,
}
