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

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from davit import constants
from davit.api.objects import RawObject

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
    for resource in resources:
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
    refs = spec.get("includeResources") or []
    if refs:
        return any(
            _ref_matches_resource(ref, resource)
            and ref.get("name") == meta.get("name")
            and ref.get("namespace") in (None, meta.get("namespace"))
            for ref in refs
        )
    return True


def needed_cluster_objects(obj: RawObject, resource: ApiResource) -> list[ClusterRef]:
    """The cluster-scoped objects a restore of ``obj`` needs: a PVC's PV, a custom resource's CRD."""
    needed = []
    if resource.group == "" and resource.plural == "persistentvolumeclaims":
        volume = (obj.get("spec") or {}).get("volumeName")
        if volume:
            needed.append(ClusterRef("v1", "persistentvolumes", volume))
    if resource.group not in BUILTIN_GROUPS:
        needed.append(
            ClusterRef(
                "apiextensions.k8s.io/v1", "customresourcedefinitions", f"{resource.plural}.{resource.group}"
            )
        )
    return needed


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
