"""Which resources a backup covers (pure): from the API server's discovery and the backup's spec to
the list calls to make, and which listed objects to keep.

What is never backed up, and why:

* Events (core and events.k8s.io): a record of the past, recreated by the cluster, and numerous.
* Davit's own kinds (davit.dev): a restore must not resurrect backups, locations with credentials, or
  schedules that would fire again.
* Leases: a heartbeat, meaningless after a restore.
* Resources that cannot be listed (subresources, review APIs).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from davit import constants
from davit.api.objects import RawObject
from davit.volumes import mover

#: (group, plural) never backed up; see the module docstring.
NEVER_BACKED_UP = frozenset({("", "events"), ("events.k8s.io", "events"), ("coordination.k8s.io", "leases")})
NEVER_BACKED_UP_GROUPS = frozenset({constants.API_GROUP, "metrics.k8s.io"})

#: Groups served by kube-apiserver itself: their kinds have no CustomResourceDefinition to back up.
BUILTIN_GROUPS = frozenset(
    {
        "", "apps", "batch", "autoscaling", "policy", "extensions", "networking.k8s.io",
        "rbac.authorization.k8s.io", "storage.k8s.io", "discovery.k8s.io", "coordination.k8s.io",
        "node.k8s.io",
        "scheduling.k8s.io", "admissionregistration.k8s.io", "apiregistration.k8s.io", "certificates.k8s.io",
        "events.k8s.io", "flowcontrol.apiserver.k8s.io", "authentication.k8s.io", "authorization.k8s.io",
        "apiextensions.k8s.io",
    }
)  # fmt: skip


@dataclass(frozen=True)
class ApiResource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    verbs: frozenset[str]
    #: Whether discovery serves it in its group's preferred version (not only in an older one).
    preferred: bool = field(default=True, compare=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def id(self) -> str:
        """``plural.group`` (``deployments.apps``, ``configmaps``): how kubectl names a resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def matches(self, name: str) -> bool:
        """Whether ``name`` (a kind, plural or ``plural.group``, any case) designates this resource."""
        wanted = name.lower()
        return wanted in (
            self.kind.lower(),
            self.plural,
            self.id.lower(),
            f"{self.kind}.{self.group}".lower(),
        )


@dataclass(frozen=True)
class ListTarget:
    """One paginated list call: a resource in a namespace (None for cluster-scoped)."""

    resource: ApiResource
    namespace: str | None
    label_selector: str | None

    @property
    def part(self) -> str:
        """The part id of the target's first page; later pages append ``#<n>``."""
        where = self.namespace or "_cluster"
        return f"{where}/{self.resource.api_version}/{self.resource.plural}"


@dataclass(frozen=True)
class ClusterRef:
    """A cluster-scoped object a namespaced one needs (its PV, its CRD, its Namespace)."""

    api_version: str
    plural: str
    name: str


def backupable(resource: ApiResource) -> bool:
    return (
        "list" in resource.verbs
        and "/" not in resource.plural
        and resource.group not in NEVER_BACKED_UP_GROUPS
        and (resource.group, resource.plural) not in NEVER_BACKED_UP
    )


# --- which namespaces ---------------------------------------------------------------------------------

#: What makes an entry of ``namespaces`` or ``excludeNamespaces`` a glob pattern rather than a name.
_GLOB_CHARACTERS = frozenset("*?[")


def is_namespace_pattern(entry: str) -> bool:
    return any(c in _GLOB_CHARACTERS for c in entry)


def namespace_pattern_problem(entry: str) -> str | None:
    """Why ``entry`` is not a pattern Davit accepts (None when it is one, or a plain name): Velero's
    rules, so that a pattern means the same in both (``**``, empty and unclosed brackets are refused;
    the CRD already refuses ``!``, braces, commas and anything else that is not a name character)."""
    if "**" in entry:
        return f"{entry!r}: '**' is not a pattern; '*' alone matches any run of characters"
    inside = False
    for index, c in enumerate(entry):
        if c == "[":
            if inside:
                return f"{entry!r}: brackets do not nest"
            if entry[index + 1 : index + 2] == "]":
                return f"{entry!r}: empty brackets match nothing"
            inside = True
        elif c == "]":
            if not inside:
                return f"{entry!r}: ']' without '['"
            inside = False
        elif inside and c in "*?":
            return f"{entry!r}: {c!r} inside brackets"
    return f"{entry!r}: '[' is not closed" if inside else None


def _matches_any(namespace: str, entries: Iterable[str]) -> bool:
    return any(
        fnmatch.fnmatchcase(namespace, e) if is_namespace_pattern(e) else namespace == e for e in entries
    )


def namespace_in_scope(spec: Mapping[str, Any], namespace: str, selected: Collection[str] = ()) -> bool:
    """Whether a backup ``spec`` covers ``namespace``: named in ``namespaces`` or matched by one of its
    patterns, or ``selected`` (matched by its namespaceSelector, listed from the API), and not named or
    matched by ``excludeNamespaces``, which wins, as in Velero. Who may cover what is
    ``davit.tenancy.backup_may_read``'s to decide."""
    if _matches_any(namespace, spec.get("excludeNamespaces") or []):
        return False
    return namespace in selected or _matches_any(namespace, spec.get("namespaces") or [])


def resolve_namespaces(
    spec: Mapping[str, Any], existing: Iterable[str] = (), selected: Collection[str] = ()
) -> list[str]:
    """The namespaces a backup ``spec`` covers, sorted: its named ones (listed whether they exist or
    not: an absent one holds nothing), the ``existing`` ones its patterns match and the ``selected``
    ones, less ``excludeNamespaces``."""
    named = [e for e in spec.get("namespaces") or [] if not is_namespace_pattern(e)]
    candidates = {*named, *existing, *selected}
    return sorted(ns for ns in candidates if namespace_in_scope(spec, ns, selected))


def has_namespace_patterns(spec: Mapping[str, Any]) -> bool:
    """Whether resolving ``spec``'s namespaces needs the list of every namespace."""
    return any(is_namespace_pattern(e) for e in spec.get("namespaces") or [])


def label_selector(selectors: dict[str, str] | None) -> str | None:
    if not selectors:
        return None
    return ",".join(f"{k}={v}" for k, v in sorted(selectors.items()))


def select_targets(
    resources: Iterable[ApiResource], spec: dict[str, Any], namespaces: list[str]
) -> list[ListTarget]:
    """The list calls for a backup of ``namespaces`` with ``spec`` (an ApplicationBackup spec)."""
    include_types = spec.get("resourceTypes") or []
    exclude_types = spec.get("excludeResourceTypes") or []
    include_refs = spec.get("includeResources") or []
    selector = label_selector(spec.get("selectors"))
    chosen = []
    for resource in preferred_resources(resources):
        if not resource.namespaced or not backupable(resource):
            continue
        if include_types and not any(resource.matches(t) for t in include_types):
            continue
        if any(resource.matches(t) for t in exclude_types):
            continue
        if include_refs and not any(_ref_matches_resource(ref, resource) for ref in include_refs):
            continue
        chosen.append(resource)
    chosen.sort(key=lambda r: (r.group, r.plural))
    return [ListTarget(r, ns, selector) for ns in sorted(namespaces) for r in chosen]


def include_version_problems(spec: Mapping[str, Any], resources: Iterable[ApiResource]) -> list[str]:
    """Why entries of ``includeResources`` that name a ``version`` cannot be honoured: a backup lists
    each kind in one version (``preferred_resources``: its group's preferred one where served), so a
    ``version`` must be that one. Refused rather than ignored, so that no one believes an object was
    stored in a version it was not."""
    listed = [r for r in preferred_resources(resources) if r.namespaced and backupable(r)]
    problems = []
    for index, ref in enumerate(spec.get("includeResources") or []):
        version = ref.get("version")
        if not version:
            continue
        candidates = [r for r in listed if _ref_matches_resource(ref, r)]
        if any(r.version == version for r in candidates):
            continue
        kind = "/".join(p for p in (ref.get("group"), ref.get("kind")) if p)
        served = ", ".join(sorted({r.api_version for r in candidates})) or "no version (not served)"
        problems.append(
            f"spec.includeResources[{index}].version: {kind} is backed up as {served}, not in version "
            f"{version}; leave version out or name that one"
        )
    return problems


#: Claims as a backup lists them: whether a claim's volume is backed up follows whether the claim is.
CLAIMS = ApiResource("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, frozenset({"list"}))


def claim_in_scope(claim: RawObject, spec: dict[str, Any]) -> bool:
    """Whether a backup with ``spec`` stores ``claim`` (and so its volume's data): ``resourceTypes``,
    ``excludeResourceTypes``, ``includeResources`` and the skip annotations apply to a volume through
    its claim, as in Velero (``selectors`` already chose which claims were listed)."""
    namespace = str((claim.get("metadata") or {}).get("namespace") or "")
    return bool(select_targets([CLAIMS], spec, [namespace])) and keep(claim, CLAIMS, spec)


def _ref_matches_resource(ref: dict[str, Any], resource: ApiResource) -> bool:
    if ref.get("kind", "").lower() != resource.kind.lower():
        return False
    return ref.get("group") in (None, resource.group)


def keep(obj: RawObject, resource: ApiResource, spec: dict[str, Any]) -> bool:
    """Whether a listed object goes into the backup."""
    meta = obj.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return False
    annotations = meta.get("annotations") or {}
    if any(annotations.get(a, "").lower() == "true" for a in constants.SKIP_RESOURCE_ANNOTATIONS):
        return False
    if mover.MOVER_LABEL in (meta.get("labels") or {}):
        # The data mover's helper pods and temporary claims (this backup's, still there while its
        # resources are listed, or another operation's): scaffolding, never part of an application.
        return False
    refs = spec.get("includeResources") or []
    if refs:
        return any(
            _ref_matches_resource(ref, resource)
            and ref.get("name") == meta.get("name")
            and ref.get("namespace") in (None, meta.get("namespace"))
            for ref in refs
        )
    return True


#: Where the cluster-scoped dependencies live (all GA in every Kubernetes Davit supports).
PERSISTENT_VOLUMES = ("v1", "persistentvolumes")
STORAGE_CLASSES = ("storage.k8s.io/v1", "storageclasses")
PRIORITY_CLASSES = ("scheduling.k8s.io/v1", "priorityclasses")
CLUSTER_ROLES = ("rbac.authorization.k8s.io/v1", "clusterroles")
CRDS = ("apiextensions.k8s.io/v1", "customresourcedefinitions")
#: The annotation claims named their class by before ``spec.storageClassName`` existed.
_BETA_STORAGE_CLASS = "volume.beta.kubernetes.io/storage-class"

#: Kinds holding a pod template, and where it is: (group, kind) → path to the template's pod spec.
_WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet")
_WORKLOAD_GROUPS = ("apps", "extensions")
_POD_SPECS: Mapping[tuple[str, str], tuple[str, ...]] = {
    **{(group, kind): ("spec", "template", "spec") for group in _WORKLOAD_GROUPS for kind in _WORKLOADS},
    ("batch", "Job"): ("spec", "template", "spec"),
    ("batch", "CronJob"): ("spec", "jobTemplate", "spec", "template", "spec"),
    ("", "ReplicationController"): ("spec", "template", "spec"),
    ("", "PodTemplate"): ("template", "spec"),
    ("", "Pod"): ("spec",),
}  # fmt: skip


def _dig(obj: Any, *path: str) -> Any:
    for step in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(step)
    return obj


def _named(api_plural: tuple[str, str], name: Any) -> list[ClusterRef]:
    """A ref to ``name`` if it is a non-empty string (anything else in a stored object names nothing)."""
    return [ClusterRef(api_plural[0], api_plural[1], name)] if isinstance(name, str) and name else []


def _claim_class(claim_spec: Any, annotations: Any) -> list[ClusterRef]:
    name = _dig(claim_spec, "storageClassName")
    if name is None and isinstance(annotations, dict):
        name = annotations.get(_BETA_STORAGE_CLASS)
    return _named(STORAGE_CLASSES, name)


def needed_cluster_objects(obj: RawObject, resource: ApiResource) -> list[ClusterRef]:
    """The cluster-scoped objects a restore of ``obj`` (listed as ``resource``) needs: a claim's volume
    and StorageClass (also of a StatefulSet's claim templates and of a volume), the PriorityClass of a
    pod or of a workload's pod template, the ClusterRole a (Cluster)RoleBinding grants, a custom
    resource's CustomResourceDefinition. ClusterRoleBindings are found the other way round (by their
    subjects, ``binds_account``): nothing namespaced names them."""
    needed: list[ClusterRef] = []
    group, kind = resource.group, obj.get("kind") or resource.kind
    spec = obj.get("spec")
    annotations = _dig(obj, "metadata", "annotations")
    if (group, resource.plural) == ("", "persistentvolumeclaims"):
        needed += _named(PERSISTENT_VOLUMES, _dig(spec, "volumeName"))
        needed += _claim_class(spec, annotations)
    elif (group, resource.plural) == ("", "persistentvolumes"):
        needed += _claim_class(spec, annotations)
    pod_spec = _POD_SPECS.get((group, kind))
    if pod_spec is not None:
        needed += _named(PRIORITY_CLASSES, _dig(obj, *pod_spec, "priorityClassName"))
    if (group, kind) in (("apps", "StatefulSet"), ("extensions", "StatefulSet")):
        for template in _dig(spec, "volumeClaimTemplates") or []:
            needed += _claim_class(_dig(template, "spec"), _dig(template, "metadata", "annotations"))
    if group == "rbac.authorization.k8s.io" and kind in ("RoleBinding", "ClusterRoleBinding"):
        role = _dig(obj, "roleRef")
        if isinstance(role, dict) and role.get("kind") == "ClusterRole":
            needed += _named(CLUSTER_ROLES, role.get("name"))
    if group not in BUILTIN_GROUPS:
        needed.append(ClusterRef(*CRDS, f"{resource.plural}.{group}"))
    return list(dict.fromkeys(needed))


def bound_accounts(binding: RawObject) -> set[tuple[str, str]]:
    """The service accounts a (Cluster)RoleBinding names among its subjects, as (namespace, name); a
    ``system:serviceaccounts:<namespace>`` group subject (every account of a namespace) as
    (namespace, "*")."""
    accounts = set()
    for subject in _dig(binding, "subjects") or []:
        if not isinstance(subject, dict):
            continue
        namespace, name = subject.get("namespace"), subject.get("name")
        if not isinstance(name, str):
            continue
        if subject.get("kind") == "ServiceAccount" and isinstance(namespace, str) and namespace:
            accounts.add((namespace, name))
        elif subject.get("kind") == "Group" and name.startswith(_ACCOUNTS_GROUP) and name != _ACCOUNTS_GROUP:
            accounts.add((name[len(_ACCOUNTS_GROUP) :], "*"))
    return accounts


_ACCOUNTS_GROUP = "system:serviceaccounts:"


def binds_account(binding: RawObject, accounts: Iterable[tuple[str, str]]) -> bool:
    """Whether ``binding`` names one of ``accounts`` ((namespace, name) of service accounts) among its
    subjects, itself or through its namespace's ``system:serviceaccounts:<namespace>`` group."""
    wanted = set(accounts)
    namespaces = {namespace for namespace, _ in wanted}
    return any(
        (namespace, name) in wanted or (name == "*" and namespace in namespaces)
        for namespace, name in bound_accounts(binding)
    )


# --- one group per object ---------------------------------------------------------------------------

#: Resources kube-apiserver serves under an old group besides their current one, from the same storage:
#: (old group, plural) → the group a backup lists them in. Listing both would store every object twice
#: (and a restore would count it twice). Velero keeps the same list ("cohabitating resources").
KNOWN_ALIASES: Mapping[tuple[str, str], str] = {
    ("extensions", "ingresses"): "networking.k8s.io",
    ("extensions", "networkpolicies"): "networking.k8s.io",
    ("extensions", "deployments"): "apps",
    ("extensions", "daemonsets"): "apps",
    ("extensions", "replicasets"): "apps",
    ("extensions", "podsecuritypolicies"): "policy",
    ("", "events"): "events.k8s.io",
}

#: The same, by kind: how a restore recognises the second copy of an object in a backup made before
#: backups stored each object once.
KNOWN_KIND_ALIASES: Mapping[tuple[str, str], str] = {
    ("extensions", "Ingress"): "networking.k8s.io",
    ("extensions", "NetworkPolicy"): "networking.k8s.io",
    ("extensions", "Deployment"): "apps",
    ("extensions", "DaemonSet"): "apps",
    ("extensions", "ReplicaSet"): "apps",
    ("extensions", "PodSecurityPolicy"): "policy",
    ("", "Event"): "events.k8s.io",
}

_VERSION = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")
_LEVELS = {"alpha": 0, "beta": 1, None: 2}


def version_priority(version: str) -> tuple[int, int, int]:
    """Kubernetes' order of versions, highest first when sorted descending: GA over beta over alpha,
    then the higher number (``v1`` > ``v1beta2`` > ``v1beta1`` > ``v1alpha1``); other names lowest."""
    match = _VERSION.match(version)
    if match is None:
        return (-1, 0, 0)
    major, level, minor = match.groups()
    return (_LEVELS[level], int(major), int(minor or 0))


def _preference(entry: tuple[int, ApiResource]) -> tuple[bool, tuple[int, int, int], bool, int]:
    """How much discovery prefers a resource (``entry``: its position in discovery's list, itself)."""
    index, r = entry
    return (r.preferred, version_priority(r.version), r.group != "extensions", -index)


def preferred_resources(resources: Iterable[ApiResource]) -> list[ApiResource]:
    """``resources`` (discovery's list, each group's resource once) with each object kept under one
    group: a resource in ``KNOWN_ALIASES`` is dropped when its current group serves the same kind; and
    when several built-in groups serve the same kind and resource name anyway (an alias this table does
    not know yet), only the one discovery prefers is kept: served in its group's preferred version, then
    the most stable version, then not ``extensions``, then the first listed. Groups outside Kubernetes'
    own are never merged: two CustomResourceDefinitions with the same kind are two stores."""
    items = list(resources)
    served = {(r.group, r.plural): r for r in items}
    dropped: set[tuple[str, str]] = set()
    for r in items:
        current = KNOWN_ALIASES.get((r.group, r.plural))
        other = served.get((current, r.plural)) if current is not None else None
        if other is not None and other.kind == r.kind and other.namespaced == r.namespaced:
            dropped.add((r.group, r.plural))
    same: dict[tuple[str, str, bool], list[tuple[int, ApiResource]]] = {}
    for index, r in enumerate(items):
        if (r.group, r.plural) not in dropped and r.group in BUILTIN_GROUPS and "/" not in r.plural:
            same.setdefault((r.kind, r.plural, r.namespaced), []).append((index, r))
    for served_by in same.values():
        if len(served_by) > 1:
            _, best = max(served_by, key=_preference)
            dropped |= {(r.group, r.plural) for _, r in served_by if r is not best}
    return [r for r in items if (r.group, r.plural) not in dropped]


def resource_ref(obj: RawObject) -> dict[str, str]:
    """The compact entry of the manifest's resource list."""
    meta = obj.get("metadata") or {}
    entry = {
        "apiVersion": obj.get("apiVersion", ""),
        "kind": obj.get("kind", ""),
        "name": meta.get("name", ""),
    }
    if meta.get("namespace"):
        entry["namespace"] = meta["namespace"]
    return entry
