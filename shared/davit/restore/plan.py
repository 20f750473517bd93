"""The plan of a restore (pure): which backed-up objects to create, in which tiers, transformed how, and
which are left out and why.

A restore is planned in two passes over the backup's objects. The first (``select``) decides which
objects the restore's filters choose and which of those exist afterwards (restored, or recreated by a
restored controller), keeping only object keys and a few facts per object; the second transforms each
chosen object with that ``Scope``. The restore service can run both passes page by page over the
location's parts, so a backup of 100,000 objects is never held in memory twice; ``plan_restore`` does
both over an in-memory list, for small backups and for tests.

Filters follow the backup's (``davit.backup.selection``), so a name means the same thing on both sides:
``resourceTypes`` entries name a resource by kind, plural or ``plural.group`` (any case: ``Deployment``,
``deployments``, ``deployments.apps``); ``includeResources`` entries match by kind, optional group,
optional namespace (the object's namespace in the backup, before ``namespaceMapping``) and name. Both
given: an object must match both. With a filter, the objects the chosen ones need come along even if the
filter does not name them: their Namespaces, the PersistentVolumes and StorageClasses of chosen claims,
the PriorityClasses of chosen pods and workloads, the ClusterRoleBindings of chosen ServiceAccounts and the
ClusterRoles chosen bindings grant, and the CustomResourceDefinitions of chosen custom resources (the
same rule as the backup's default, ``davit.backup.cluster_scope``). Objects the filters do not choose are
not part of the restore at all: they are neither counted nor reported as skipped. Nor is the second copy
of an object an older backup stored under two API groups (``selection.KNOWN_KIND_ALIASES``): only the
current group's is.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from davit.api.objects import RawObject
from davit.backup import selection
from davit.restore import fields
from davit.restore.modifiers import Modifiers, PatchFailed
from davit.restore.tiers import TierGroup, group_kind, group_objects_by_tier
from davit.restore.transform import (
    Context,
    ObjectKey,
    OwnerLink,
    Provenance,
    Scope,
    Skip,
    SkipCode,
    intrinsic_skip,
    owner_links,
    transform,
)

_VOWELS = frozenset("aeiou")
#: Built-in kinds whose plural the English rule below gets wrong.
_IRREGULAR_PLURALS = {("", "Endpoints"): "endpoints"}


def plural_of(group: str, kind: str, plurals: Mapping[tuple[str, str], str] | None = None) -> str:
    """The resource name (plural) of a kind: from ``plurals`` (discovery, the backup's part ids, the
    backed-up CRDs) when it is there, otherwise by the English rule the built-in kinds follow."""
    known = (plurals or {}).get((group, kind)) or _IRREGULAR_PLURALS.get((group, kind))
    if known:
        return known
    lower = kind.lower()
    if lower.endswith(("s", "x", "ch", "sh")):
        return f"{lower}es"
    if lower.endswith("y") and lower[-2:-1] not in _VOWELS:
        return f"{lower[:-1]}ies"
    return f"{lower}s"


def crd_plurals(objects: Iterable[RawObject]) -> dict[tuple[str, str], str]:
    """(group, kind) → plural of the custom resources defined by the CustomResourceDefinitions given."""
    plurals = {}
    for obj in objects:
        if group_kind(obj) == ("apiextensions.k8s.io", "CustomResourceDefinition"):
            spec = obj.get("spec") or {}
            names = spec.get("names") or {}
            if spec.get("group") and names.get("kind") and names.get("plural"):
                plurals[str(spec["group"]), str(names["kind"])] = str(names["plural"])
    return plurals


def kind_label(group: str, kind: str) -> str:
    """How counts name a kind: ``ConfigMap`` (core), ``Deployment.apps`` (kubectl's ``kind.group``)."""
    return f"{kind}.{group}" if group else kind


@dataclass(frozen=True)
class RestoreFilter:
    """The restore spec's ``includeResources`` and ``resourceTypes``."""

    include_resources: tuple[Mapping[str, Any], ...] = ()
    resource_types: tuple[str, ...] = ()
    plurals: Mapping[tuple[str, str], str] = field(default_factory=dict)

    @classmethod
    def from_spec(
        cls, spec: Mapping[str, Any], plurals: Mapping[tuple[str, str], str] | None = None
    ) -> RestoreFilter:
        return cls(
            tuple(spec.get("includeResources") or ()), tuple(spec.get("resourceTypes") or ()), plurals or {}
        )

    @property
    def active(self) -> bool:
        return bool(self.include_resources or self.resource_types)

    def matches(self, obj: RawObject) -> bool:
        """Whether the filters name ``obj`` itself (dependencies aside)."""
        group, kind = group_kind(obj)
        meta = obj.get("metadata") or {}
        resource = selection.ApiResource(
            group=group,
            version=str(obj.get("apiVersion", "")).rpartition("/")[2],
            plural=plural_of(group, kind, self.plurals),
            kind=kind,
            namespaced=bool(meta.get("namespace")),
            verbs=frozenset(),
        )
        if self.resource_types and not any(resource.matches(t) for t in self.resource_types):
            return False
        return selection.keep(obj, resource, {"includeResources": list(self.include_resources)})


#: The cluster-scoped kinds ``selection.needed_cluster_objects`` names, by (apiVersion, plural).
_REF_KINDS = {
    selection.PERSISTENT_VOLUMES: ("", "PersistentVolume"),
    selection.STORAGE_CLASSES: ("storage.k8s.io", "StorageClass"),
    selection.PRIORITY_CLASSES: ("scheduling.k8s.io", "PriorityClass"),
    selection.CLUSTER_ROLES: ("rbac.authorization.k8s.io", "ClusterRole"),
}


def _binds_any(binds: frozenset[tuple[str, str]], accounts: set[tuple[str, str]]) -> bool:
    namespaces = {namespace for namespace, _ in accounts}
    return any(bound in accounts or (bound[1] == "*" and bound[0] in namespaces) for bound in binds)


class _Facts(NamedTuple):
    """What the first pass keeps of one object."""

    key: ObjectKey
    matched: bool
    skipped: bool
    #: The cluster-scoped objects it needs: its Namespace, a claim's volume.
    needs: tuple[ObjectKey, ...]
    #: A custom resource's (group, kind), whose CRD it needs.
    custom: tuple[str, str] | None
    #: A CRD's (group, kind): the custom resources it defines.
    defines: tuple[str, str] | None
    #: A Service with a selector (its Endpoints are the endpoints controller's).
    selector: bool
    #: A ClusterRoleBinding's service-account subjects (``selection.bound_accounts``).
    binds: frozenset[tuple[str, str]] = frozenset()


def _facts(obj: RawObject, restore_filter: RestoreFilter, ctx: Context) -> _Facts:
    key = ObjectKey.of(obj)
    needs = []
    if key.namespace:
        needs.append(ObjectKey("", "Namespace", "", key.namespace))
    resource = selection.ApiResource(
        key.group, "", plural_of(key.group, key.kind, restore_filter.plurals), key.kind, bool(key.namespace),
        frozenset(),
    )  # fmt: skip
    for ref in selection.needed_cluster_objects(obj, resource):
        kind = _REF_KINDS.get((ref.api_version, ref.plural))
        if kind is not None:  # (CRDs: by ``custom`` below, as restored CRDs may define other plurals)
            needs.append(ObjectKey(*kind, "", ref.name))
    binds: frozenset[tuple[str, str]] = frozenset()
    if (key.group, key.kind) == ("rbac.authorization.k8s.io", "ClusterRoleBinding"):
        binds = frozenset(selection.bound_accounts(obj))
    defines = None
    if (key.group, key.kind) == ("apiextensions.k8s.io", "CustomResourceDefinition"):
        defines = (
            str(fields.dig(obj, "spec", "group") or ""),
            str(fields.dig(obj, "spec", "names", "kind") or ""),
        )
    return _Facts(
        key=key,
        matched=restore_filter.matches(obj),
        skipped=intrinsic_skip(obj, ctx) is not None,
        needs=tuple(needs),
        custom=None if key.group in selection.BUILTIN_GROUPS else (key.group, key.kind),
        defines=defines,
        selector=(key.group, key.kind) == ("", "Service") and bool(fields.dig(obj, "spec", "selector")),
        binds=binds,
    )


def _current_key(key: ObjectKey) -> ObjectKey | None:
    """``key`` under its kind's current group, if it names an old group (``selection.KNOWN_KIND_ALIASES``)."""
    current = selection.KNOWN_KIND_ALIASES.get((key.group, key.kind))
    return key._replace(group=current) if current is not None else None


@dataclass(frozen=True)
class Selection:
    """The first pass's result: which objects the restore covers, and its scope."""

    selected: frozenset[ObjectKey]
    scope: Scope


def select(objects: Iterable[RawObject], restore_filter: RestoreFilter, ctx: Context) -> Selection:
    """Which of ``objects`` the restore covers and what exists once it is done (first pass)."""
    facts = [_facts(obj, restore_filter, ctx) for obj in objects]
    everything = {f.key for f in facts}
    # A backup made before each object was stored once may hold an object twice, under an old group
    # besides its current one (an Ingress in extensions and networking.k8s.io): the old copy is dropped.
    everything -= {f.key for f in facts if _current_key(f.key) in everything}
    facts = [f for f in facts if f.key in everything]
    if restore_filter.active:
        crds = {f.defines: f.key for f in facts if f.defines}
        matched = [f for f in facts if f.matched]
        accounts = {
            (f.key.namespace, f.key.name)
            for f in matched
            if (f.key.group, f.key.kind) == ("", "ServiceAccount")
        }
        matched += [f for f in facts if f.binds and not f.matched and _binds_any(f.binds, accounts)]
        needed = {need for f in matched for need in f.needs}
        needed |= {crds[f.custom] for f in matched if f.custom in crds}
        selected = {f.key for f in matched} | (needed & everything)
    else:
        selected = everything
    # Objects skipped only because their controller is restored still exist afterwards (the controller
    # recreates them), so intrinsic skips alone decide what is present.
    present = frozenset(f.key for f in facts if f.key in selected and not f.skipped)
    return Selection(
        selected=frozenset(selected),
        scope=Scope(
            present=present,
            services_with_selector=frozenset(
                (f.key.namespace, f.key.name) for f in facts if f.selector and f.key in present
            ),
            static_volumes=frozenset(
                k.name for k in present if (k.group, k.kind) == ("", "PersistentVolume")
            ),
        ),
    )


def context_for(
    spec: Mapping[str, Any],
    provenance: Provenance,
    *,
    cluster_scoped_allowed: bool,
    target_nodes: frozenset[str] | None = None,
) -> Context:
    """The transformation context of an ApplicationRestore ``spec`` (before its scope is known)."""
    return Context(
        provenance=provenance,
        namespace_mapping=dict(spec.get("namespaceMapping") or {}),
        storage_class_mapping=dict(spec.get("storageClassMapping") or {}),
        node_mapping=dict(spec.get("nodeMapping") or {}),
        cluster_scoped_allowed=cluster_scoped_allowed,
        target_nodes=target_nodes,
        preserve_node_ports=bool(spec.get("preserveNodePorts")),
    )


@dataclass(frozen=True)
class SkippedObject:
    """An object of the backup the restore leaves out, and why."""

    source: ObjectKey
    code: SkipCode
    reason: str


@dataclass(frozen=True)
class FailedObject:
    """An object of the backup the restore cannot create as asked (a resource modifier failed on it)."""

    source: ObjectKey
    reason: str


@dataclass(frozen=True)
class OwnedObject:
    """A restored object (as named in the target) whose owner references are added once every tier is
    created and its owners' new uids are known (see ``OwnerLink``)."""

    api_version: str
    kind: str
    namespace: str
    name: str
    owners: tuple[OwnerLink, ...]


@dataclass(frozen=True)
class RestorePlan:
    """What a restore does: the objects to create tier by tier, the owner references to add afterwards,
    and what it leaves out and why."""

    #: The bodies to create, tier by tier (raw JSON, ready for the API server).
    tiers: tuple[TierGroup[RawObject], ...]
    skipped: tuple[SkippedObject, ...]
    owned: tuple[OwnedObject, ...]
    #: Objects to create, by ``kind_label``.
    planned_by_kind: Mapping[str, int]
    #: Objects left out, by ``kind_label``.
    skipped_by_kind: Mapping[str, int]
    namespace_mapping: Mapping[str, str] = field(default_factory=dict)
    #: Objects not restored because a resource modifier's patch could not be applied to them.
    failed: tuple[FailedObject, ...] = ()

    @property
    def objects(self) -> list[RawObject]:
        """Every object to create, in restore order."""
        return [item for group in self.tiers for item in group.items]

    def map_namespace(self, namespace: str) -> str:
        """Where the restore puts what was in ``namespace``."""
        return self.namespace_mapping.get(namespace, namespace)


def plan_restore(
    objects: Sequence[RawObject],
    spec: Mapping[str, Any],
    *,
    backup_name: str,
    backup_uid: str,
    restore_name: str,
    restore_uid: str,
    cluster_scoped_allowed: bool,
    target_nodes: frozenset[str] | None = None,
    plurals: Mapping[tuple[str, str], str] | None = None,
    modifiers: Modifiers | None = None,
) -> RestorePlan:
    """The plan of restoring ``objects`` (a backup's, as stored) with an ApplicationRestore ``spec``.

    ``cluster_scoped_allowed``: the restore runs in the admin namespace (no default: forgetting it must
    not let a tenant create cluster-scoped objects). ``target_nodes``: the target cluster's node names,
    if known. ``plurals``: (group, kind) → plural for ``resourceTypes`` where the backed-up CRDs and the
    English rule do not tell. ``modifiers``: the resource modifiers' patches, applied to each object after
    the transformations (an object a patch fails on is left out as ``failed``).
    """
    provenance = Provenance(backup_name, backup_uid, restore_name, restore_uid)
    restore_filter = RestoreFilter.from_spec(spec, {**crd_plurals(objects), **(plurals or {})})
    ctx = context_for(
        spec, provenance, cluster_scoped_allowed=cluster_scoped_allowed, target_nodes=target_nodes
    )
    chosen = select(objects, restore_filter, ctx)
    ctx = replace(ctx, scope=chosen.scope)
    planned: list[RawObject] = []
    skipped: list[SkippedObject] = []
    owned: list[OwnedObject] = []
    failed: list[FailedObject] = []
    for obj in objects:
        key = ObjectKey.of(obj)
        if key not in chosen.selected:
            continue
        result = transform(obj, ctx)
        if isinstance(result, Skip):
            skipped.append(SkippedObject(key, result.code, result.reason))
            continue
        if modifiers is not None:
            try:
                result = modifiers.apply(key, result, plural_of(key.group, key.kind, restore_filter.plurals))
            except PatchFailed as exc:
                failed.append(FailedObject(key, str(exc)))
                continue
        planned.append(result)
        links = owner_links(obj, ctx)
        if links:
            meta = result["metadata"]
            owned.append(
                OwnedObject(
                    result["apiVersion"], result["kind"], meta.get("namespace") or "", meta["name"], links
                )
            )
    return RestorePlan(
        tiers=tuple(group_objects_by_tier(planned)),
        skipped=tuple(skipped),
        owned=tuple(owned),
        planned_by_kind=dict(Counter(kind_label(*group_kind(o)) for o in planned)),
        skipped_by_kind=dict(Counter(kind_label(s.source.group, s.source.kind) for s in skipped)),
        namespace_mapping=ctx.namespace_mapping,
        failed=tuple(failed),
    )
