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

import functools
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from typing import Any, Final, NamedTuple

from davit.api.objects import RawObject
from davit.backup import selection
from davit.restore import fields
from davit.restore.modifiers import Modifiers, PatchFailed
from davit.restore.tiers import TierGroup, group_kind, group_objects_by_tier, tier_index
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


#: The facts of 100,000 objects are kept at once: what most objects share is one object, not a copy each
#: (an empty frozenset is 216 bytes, the tuple naming an object's Namespace 130).
_NO_BINDS: Final[frozenset[tuple[str, str]]] = frozenset()


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
    binds: frozenset[tuple[str, str]] = _NO_BINDS


@functools.lru_cache(maxsize=4096)
def _namespace_needs(namespace: str) -> tuple[ObjectKey, ...]:
    return (ObjectKey("", "Namespace", "", namespace),) if namespace else ()


def _facts(obj: RawObject, restore_filter: RestoreFilter, ctx: Context) -> _Facts:
    key = ObjectKey.of(obj)
    needs = _namespace_needs(key.namespace)
    resource = selection.ApiResource(
        key.group, "", plural_of(key.group, key.kind, restore_filter.plurals), key.kind, bool(key.namespace),
        frozenset(),
    )  # fmt: skip
    for ref in selection.needed_cluster_objects(obj, resource):
        kind = _REF_KINDS.get((ref.api_version, ref.plural))
        if kind is not None:  # (CRDs: by ``custom`` below, as restored CRDs may define other plurals)
            needs += (ObjectKey(*kind, "", ref.name),)
    binds = _NO_BINDS
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
        needs=needs,
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
    return select_facts([_facts(obj, restore_filter, ctx) for obj in objects], restore_filter)


def select_facts(facts: list[_Facts], restore_filter: RestoreFilter) -> Selection:
    """``select`` over the facts of every object (``_facts``), gathered part by part."""
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


#: The kinds whose bodies a restore keeps from planning to creation: what the steps after planning look
#: into or rewrite (CRDs waited for, claims and their volumes matched with data and snapshots, pods held
#: until their data is back or given hooks' init containers). Every other object is created by
#: reference: its part of the backup is read again when its chunk is created (``ReferencedChunk``).
KEPT_KINDS: frozenset[tuple[str, str]] = frozenset({
    ("apiextensions.k8s.io", "CustomResourceDefinition"), ("", "Namespace"),
    ("storage.k8s.io", "StorageClass"), ("scheduling.k8s.io", "PriorityClass"),
    ("", "PersistentVolume"), ("", "PersistentVolumeClaim"), ("", "Pod"),
})  # fmt: skip
_SNAPSHOT_GROUP = "snapshot.storage.k8s.io"


def kept_whole(group: str, kind: str) -> bool:
    """Whether a restore keeps the planned body of objects of this kind (``KEPT_KINDS``)."""
    return (group, kind) in KEPT_KINDS or group == _SNAPSHOT_GROUP


#: (apiVersion, kind, namespace, name) of an object as it is created.
CreatedKey = tuple[str, str, str, str]


@dataclass(frozen=True)
class ReferencedChunk:
    """Objects of one part of the backup and one tier, created by reference: their bodies are read from
    the part again and transformed again when the chunk is created, with the slice of the restore's
    scope their transformation looked up when it was planned (``ScopeRecorder``), so that they come out
    as planned. The part's digest says it is still the part that was planned from."""

    tier: int
    part: str
    digest: str
    #: The objects' positions in the part.
    indexes: tuple[int, ...]
    #: The objects as they are created, in the order of ``indexes``.
    keys: tuple[CreatedKey, ...]
    scope: Scope

    def to_dict(self) -> dict[str, Any]:
        return {
            "tier": self.tier, "part": self.part, "digest": self.digest, "indexes": list(self.indexes),
            "keys": [list(k) for k in self.keys],
            "scope": {
                "present": sorted(list(k) for k in self.scope.present),
                "servicesWithSelector": sorted(list(k) for k in self.scope.services_with_selector),
                "staticVolumes": sorted(self.scope.static_volumes),
            },
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReferencedChunk:
        scope = data.get("scope") or {}
        return cls(
            tier=int(data["tier"]), part=str(data["part"]), digest=str(data["digest"]),
            indexes=tuple(int(i) for i in data["indexes"]),
            keys=tuple((str(a), str(b), str(c), str(d)) for a, b, c, d in data["keys"]),
            scope=Scope(
                present=frozenset(ObjectKey(*map(str, k)) for k in scope.get("present") or ()),
                services_with_selector=frozenset(
                    (str(a), str(b)) for a, b in scope.get("servicesWithSelector") or ()
                ),
                static_volumes=frozenset(str(v) for v in scope.get("staticVolumes") or ()),
            ),
        )  # fmt: skip


class ScopeRecorder(AbstractSet[Any]):
    """A set of the restore's scope that remembers which of its members were looked up: the slice of
    the scope one transformation depends on. Only members found are remembered; a lookup of anything
    else answers "absent" in the slice as it did in the whole."""

    def __init__(self, members: AbstractSet[Any]) -> None:
        self.members = members
        self.found: set[Any] = set()

    def __contains__(self, item: object) -> bool:
        if item in self.members:
            self.found.add(item)
            return True
        return False

    def __iter__(self) -> Iterator[Any]:
        raise TypeError("a recorded scope is only looked into")  # a transformation never lists it

    def __len__(self) -> int:
        return len(self.members)


class _Recording:
    """Records the scope lookups of the transformations of one chunk's objects."""

    def __init__(self, scope: Scope) -> None:
        self.present = ScopeRecorder(scope.present)
        self.services = ScopeRecorder(scope.services_with_selector)
        self.volumes = ScopeRecorder(scope.static_volumes)
        self.scope = Scope(self.present, self.services, self.volumes)

    def slice(self) -> Scope:
        return Scope(
            frozenset(self.present.found), frozenset(self.services.found), frozenset(self.volumes.found)
        )


def created_key(obj: RawObject) -> CreatedKey:
    meta = obj.get("metadata") or {}
    return (sys.intern(str(obj.get("apiVersion") or "")), sys.intern(str(obj.get("kind") or "")),
            sys.intern(str(meta.get("namespace") or "")), str(meta.get("name") or ""))  # fmt: skip


@dataclass(frozen=True)
class StreamedPlan:
    """A restore planned part by part: the plan of the objects kept whole, with the skipped, failed and
    owned objects and the counts of all; and the chunks created by reference."""

    plan: RestorePlan
    referenced: tuple[ReferencedChunk, ...] = ()
    #: (group, kind) → plural as the planning knew them (from the backed-up CRDs): creating by reference
    #: applies the modifiers with the same.
    plurals: Mapping[tuple[str, str], str] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.plan.objects) + sum(len(c.indexes) for c in self.referenced)


#: Reads a part of the backup: its objects (as the restore takes them) and the digest of its content.
PartReader = Callable[[str], tuple[list[RawObject], str]]


class PartChanged(Exception):
    """A part of the backup is not what it was when it was first read."""


def plan_parts(
    parts: Sequence[str],
    read: PartReader,
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
    by_reference: Callable[[str, str], bool] | None = None,
    chunk_objects: int = 500,
    visit: Callable[[RawObject], None] | None = None,
) -> StreamedPlan:
    """The plan of restoring the objects of ``parts`` (read one at a time with ``read``) with an
    ApplicationRestore ``spec``, never holding more than one part's bodies besides those kept whole.

    Both passes of ``plan_restore`` run part by part: the first keeps each object's facts, the second
    transforms. Objects of kinds ``by_reference`` names (none without it) are not kept: their chunk names
    the part, the positions and the scope slice (``ReferencedChunk``). ``visit`` sees every object to be
    created, as planned (where a guard checks it). PartChanged if a part reads differently the second time.
    """
    provenance = Provenance(backup_name, backup_uid, restore_name, restore_uid)
    ctx = context_for(
        spec, provenance, cluster_scoped_allowed=cluster_scoped_allowed, target_nodes=target_nodes
    )
    known_plurals = dict(plurals or {})
    first = RestoreFilter.from_spec(spec, known_plurals)
    digests: dict[str, str] = {}

    def read_checked(part: str) -> list[RawObject]:
        objects, digest = read(part)
        if digests.setdefault(part, digest) != digest:
            raise PartChanged(f"{part} changed while the restore was planned")
        return objects

    if first.active or modifiers is not None:
        # resourceTypes and modifiers name custom resources by plural: the backed-up CRDs tell it.
        for part in parts:
            known_plurals = {**crd_plurals(read_checked(part)), **known_plurals}
    restore_filter = RestoreFilter.from_spec(spec, known_plurals)
    facts = [_facts(obj, restore_filter, ctx) for part in parts for obj in read_checked(part)]
    chosen = select_facts(facts, restore_filter)
    del facts
    ctx = replace(ctx, scope=chosen.scope)
    kept: list[RawObject] = []
    referenced: list[ReferencedChunk] = []
    skipped: list[SkippedObject] = []
    owned: list[OwnedObject] = []
    failed: list[FailedObject] = []
    planned_by_kind: Counter[str] = Counter()
    # Per tier: (indexes, keys, recording) of the current part's objects created by reference.
    open_chunks: dict[int, tuple[list[int], list[CreatedKey], _Recording]] = {}

    def close(part: str, tier: int) -> None:
        indexes, keys, recording = open_chunks.pop(tier)
        if not indexes:  # every object of it was skipped or failed
            return
        referenced.append(
            ReferencedChunk(tier, part, digests[part], tuple(indexes), tuple(keys), recording.slice())
        )

    for part in parts:
        for index, obj in enumerate(read_checked(part)):
            key = ObjectKey.of(obj)
            if key not in chosen.selected:
                continue
            reference = by_reference is not None and by_reference(key.group, key.kind)
            tier = tier_index(key.group, key.kind)
            recording = None
            if reference:
                if tier not in open_chunks:
                    open_chunks[tier] = ([], [], _Recording(chosen.scope))
                recording = open_chunks[tier][2]
            result = transform(obj, replace(ctx, scope=recording.scope) if recording else ctx)
            if isinstance(result, Skip):
                skipped.append(SkippedObject(key, result.code, result.reason))
                continue
            if modifiers is not None:
                try:
                    result = modifiers.apply(key, result, plural_of(key.group, key.kind, known_plurals))
                except PatchFailed as exc:
                    failed.append(FailedObject(key, str(exc)))
                    continue
            if visit is not None:
                visit(result)
            planned_by_kind[kind_label(*group_kind(result))] += 1
            links = owner_links(obj, ctx)
            if links:
                meta = result["metadata"]
                owned.append(
                    OwnedObject(
                        result["apiVersion"], result["kind"], meta.get("namespace") or "", meta["name"], links
                    )
                )
            if not reference:
                kept.append(result)
                continue
            indexes, keys, _ = open_chunks[tier]
            indexes.append(index)
            keys.append(created_key(result))
            if len(indexes) >= chunk_objects:
                close(part, tier)
        for tier in sorted(open_chunks):
            close(part, tier)
    plan = RestorePlan(
        tiers=tuple(group_objects_by_tier(kept)),
        skipped=tuple(skipped),
        owned=tuple(owned),
        planned_by_kind=dict(planned_by_kind),
        skipped_by_kind=dict(Counter(kind_label(s.source.group, s.source.kind) for s in skipped)),
        namespace_mapping=ctx.namespace_mapping,
        failed=tuple(failed),
    )
    return StreamedPlan(plan, tuple(referenced), known_plurals)


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
    """The plan of restoring ``objects`` (a backup's, as stored) with an ApplicationRestore ``spec``,
    every body kept (``plan_parts`` over one part in memory).

    ``cluster_scoped_allowed``: the restore runs in the admin namespace (no default: forgetting it must
    not let a tenant create cluster-scoped objects). ``target_nodes``: the target cluster's node names,
    if known. ``plurals``: (group, kind) → plural for ``resourceTypes`` where the backed-up CRDs and the
    English rule do not tell. ``modifiers``: the resource modifiers' patches, applied to each object after
    the transformations (an object a patch fails on is left out as ``failed``).
    """
    everything = list(objects)
    return plan_parts(
        [""], lambda _part: (everything, ""), spec, backup_name=backup_name, backup_uid=backup_uid,
        restore_name=restore_name, restore_uid=restore_uid, cluster_scoped_allowed=cluster_scoped_allowed,
        target_nodes=target_nodes, plurals=plurals, modifiers=modifiers,
    ).plan  # fmt: skip


def transform_referenced(
    objects: Sequence[RawObject], chunk: ReferencedChunk, ctx: Context, modifiers: Modifiers | None,
    plurals: Mapping[tuple[str, str], str],
) -> tuple[list[RawObject], list[tuple[str, str]]]:  # fmt: skip
    """The bodies of a chunk created by reference, from its part's ``objects`` (read again) and the
    restore's context without scope: each transformed with the chunk's scope slice, as it was planned.
    Returns the bodies and (kind, reason) of those that no longer come out as planned (not created)."""
    ctx = replace(ctx, scope=chunk.scope)
    bodies: list[RawObject] = []
    problems: list[tuple[str, str]] = []
    for index, expected in zip(chunk.indexes, chunk.keys, strict=True):
        if not 0 <= index < len(objects):
            problems.append((expected[1], f"{'/'.join(expected)}: not in {chunk.part} any more"))
            continue
        obj = objects[index]
        key = ObjectKey.of(obj)
        result = transform(obj, ctx)
        if isinstance(result, Skip):
            problems.append((expected[1], f"{'/'.join(expected)}: {result.reason}"))
            continue
        if modifiers is not None:
            try:
                result = modifiers.apply(key, result, plural_of(key.group, key.kind, plurals))
            except PatchFailed as exc:
                problems.append((expected[1], str(exc)))
                continue
        if created_key(result) != expected:
            problems.append((expected[1], f"{'/'.join(expected)}: not what was planned from {chunk.part}"))
            continue
        bodies.append(result)
    return bodies, problems
