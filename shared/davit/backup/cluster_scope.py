"""Which cluster-scoped objects a backup stores (pure), per ``spec.includeClusterResources``, as Velero
decides it:

* unset (``NEEDED``): what the backed-up namespaces' objects need to come back: their Namespaces, the
  PersistentVolumes bound to their claims, the StorageClasses of those claims and volumes, the
  PriorityClasses of their pods and workloads' pod templates, the ClusterRoleBindings whose subjects are
  their service accounts, the ClusterRoles those bindings and the namespaces' RoleBindings grant, and the
  CustomResourceDefinitions of their custom resources (``selection.needed_cluster_objects``).
* ``true`` (``ALL``), only for a backup in the admin namespace: every cluster-scoped object the API
  serves, except ``NEVER_STORED`` and what ``selection`` never backs up; Namespaces still only the
  backed-up ones.
* ``false`` (``NONE``): the backed-up Namespaces only (a restore needs them to put anything back).

A tenant's ``true`` is refused when the backup is validated (``davit.validation``); a backup outside the
admin namespace that carries it anyway (accepted by an older version) is treated as unset, and whatever
the mode, ``tenant_refusal`` checks every object a tenant's backup is about to store.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from davit.api.objects import RawObject
from davit.backup import selection
from davit.backup.selection import ApiResource

FIELD = "includeClusterResources"


class Mode(enum.Enum):
    NEEDED = "needed"
    ALL = "all"
    NONE = "none"


def mode(spec: Mapping[str, Any], backup_namespace: str, admin_namespace: str) -> Mode:
    value = spec.get(FIELD)
    if value is False:
        return Mode.NONE
    if value is True and backup_namespace == admin_namespace:
        return Mode.ALL
    return Mode.NEEDED


#: Cluster-scoped resources not stored even with ``true`` (besides Events, Leases, metrics and Davit's own
#: kinds, never backed up at all, see ``selection``), as Velero leaves them out of a restore:
#: Nodes, CSINodes and VolumeAttachments describe the machines and what is attached to them now (kubelets
#: and the attach controller make them); APIServices are registered by the servers that serve them, and
#: one restored without its server breaks discovery for every client; CertificateSigningRequests are one
#: exchange with a private key that is not in the backup; ComponentStatuses are computed on each read.
NEVER_STORED: frozenset[tuple[str, str]] = frozenset(
    {
        ("", "nodes"),
        ("", "componentstatuses"),
        ("storage.k8s.io", "csinodes"),
        ("storage.k8s.io", "volumeattachments"),
        ("apiregistration.k8s.io", "apiservices"),
        ("certificates.k8s.io", "certificatesigningrequests"),
    }
)

#: Kinds a backup outside the admin namespace may store, besides its own Namespace (checked by
#: ``tenant_refusal`` against each object as the API server returned it).
TENANT_KINDS: frozenset[tuple[str, str]] = frozenset(
    {
        ("", "Namespace"),
        ("", "PersistentVolume"),
        ("storage.k8s.io", "StorageClass"),
        ("scheduling.k8s.io", "PriorityClass"),
        ("rbac.authorization.k8s.io", "ClusterRole"),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
        ("apiextensions.k8s.io", "CustomResourceDefinition"),
    }
)

CLUSTER_ROLE_BINDINGS = ApiResource(
    "rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False, frozenset({"list"})
)
SERVICE_ACCOUNTS = ApiResource("", "v1", "serviceaccounts", "ServiceAccount", True, frozenset({"list"}))


def all_targets(resources: Iterable[ApiResource]) -> list[ApiResource]:
    """What ``true`` lists: every cluster-scoped resource that may be backed up (each object under one
    group), Namespaces aside (only the backed-up ones are stored, whatever the mode)."""
    chosen = [
        r
        for r in selection.preferred_resources(resources)
        if not r.namespaced
        and selection.backupable(r)
        and (r.group, r.plural) not in NEVER_STORED
        and (r.group, r.plural) != ("", "namespaces")
    ]
    return sorted(chosen, key=lambda r: (r.group, r.plural))


def group_of(obj: RawObject) -> str:
    return str(obj.get("apiVersion") or "").rpartition("/")[0]


def tenant_refusal(obj: RawObject, namespaces: Collection[str]) -> str | None:
    """Why a backup covering only ``namespaces`` (outside the admin namespace) must not store the
    cluster-scoped ``obj`` (as the API server returned it); None when it may. Its Namespace only; a
    volume only if bound to one of its claims; a ClusterRoleBinding only if it binds one of its service
    accounts; otherwise only the kinds its objects can need (``TENANT_KINDS``)."""
    kind = str(obj.get("kind") or "")
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    if (group_of(obj), kind) not in TENANT_KINDS:
        return f"{kind} {name}: not a kind a namespace's objects need"
    if kind == "Namespace" and name not in namespaces:
        return f"Namespace {name} is not backed up"
    if kind == "PersistentVolume":
        claim = (obj.get("spec") or {}).get("claimRef") or {}
        if claim.get("namespace") not in namespaces:
            return f"PersistentVolume {name} is bound to a claim in {claim.get('namespace')!r}"
    if kind == "ClusterRoleBinding":
        bound = {namespace for namespace, _ in selection.bound_accounts(obj)}
        if not bound & set(namespaces):
            return f"ClusterRoleBinding {name} binds no service account of {sorted(namespaces)}"
    return None
