"""The multi-tenancy rules applied at the moment Davit acts (pure).

Validation (``davit.validation``) decides whether an operation may start. The rules here are applied
again where the work happens, because what a tenant can write changes after acceptance: the spec of an
accepted operation, the objects stored in their bucket, the scratch state in Redis. Every check takes
only what the API server says (the accepted generation, discovery's scope of a type, the operation's own
namespace) as the truth, never the bytes being checked.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

from davit import errors
from davit.api.objects import RawObject
from davit.backup import selection

#: The reason (status and Event) of an operation failed because its spec changed after acceptance.
SPEC_CHANGED: Final = "SpecChanged"
#: The Event reason of a restore refused because the backup holds objects it may not write.
RESTORE_REFUSED: Final = "RestoreRefused"

#: Kubernetes' longest object name (a DNS-1123 subdomain).
MAX_NAME_LENGTH: Final = 253
#: A DNS-1123 label: namespaces.
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
#: An API group (DNS subdomain) and version, as they appear in a path.
_API_VERSION = re.compile(r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
#: A resource's plural as served by discovery (lowercase DNS label characters).
_PLURAL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class UnsafeName(errors.Refused, ValueError):
    """A name that must not go into a request path (it would address another object)."""


def check_name(name: Any) -> str:
    """``name`` if it may name an object: Kubernetes' own rule for names in paths (not ``.`` or ``..``, no
    ``/`` or ``%``), no control characters, at most 253 characters. Kinds such as ClusterRoles allow
    ``:`` and upper case, so this is deliberately not the DNS-1123 rule; per-kind rules are the API
    server's, which refuses a create with a bad name."""
    if not isinstance(name, str) or not name:
        raise UnsafeName(f"name {name!r} is empty or not a string")
    if name in (".", "..") or "/" in name or "%" in name:
        raise UnsafeName(f"name {name!r} is not a valid path segment")
    if len(name) > MAX_NAME_LENGTH or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise UnsafeName(f"name {name[:60]!r} is too long or holds control characters")
    return name


def check_namespace(namespace: Any) -> str:
    if not isinstance(namespace, str) or not _NAMESPACE.match(namespace):
        raise UnsafeName(f"namespace {namespace!r} is not a valid namespace name")
    return namespace


def resource_path(api_version: str, plural: str, namespace: str | None, name: str | None = None) -> str:
    """The API path of a collection (or, with ``name``, of one object), every segment checked and
    escaped: a stored name like ``../../namespaces/kube-system/secrets/x`` cannot reach another object."""
    if not _API_VERSION.match(api_version):
        raise UnsafeName(f"apiVersion {api_version!r} is not a valid group/version")
    if not _PLURAL.match(plural):
        raise UnsafeName(f"resource {plural!r} is not a valid resource name")
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = f"{base}/namespaces/{check_namespace(namespace)}/{plural}" if namespace else f"{base}/{plural}"
    return f"{path}/{quote(check_name(name), safe='')}" if name is not None else path


# --- the accepted spec -------------------------------------------------------------------------------


def spec_changed(obj: RawObject) -> str | None:
    """Why ``obj`` (an operation) must not be acted on: its spec changed after the watcher accepted it.

    The watcher records ``status.acceptedGeneration`` when it accepts; the API server bumps
    ``metadata.generation`` on every spec change (never on status or metadata-only changes), so a
    difference means the spec being read is not the one that was validated. A finished operation is
    history (its ``reclaimPolicy`` and ``ttl`` may be edited), and one being deleted has its generation
    bumped by the deletion itself; neither is acted on as an operation any more.
    """
    status = obj.get("status") or {}
    accepted = status.get("acceptedGeneration")
    meta = obj.get("metadata") or {}
    if accepted is None or status.get("stage") in (None, "Final") or meta.get("deletionTimestamp"):
        return None
    generation = meta.get("generation")
    if generation == accepted:
        return None
    return (
        f"{SPEC_CHANGED}: the spec changed after it was accepted (generation {accepted} was validated, "
        f"{generation} is current); create a new operation instead of editing a running one"
    )


# --- what a backup may read --------------------------------------------------------------------------


def backup_may_read(
    backup_namespace: str,
    admin_namespace: str,
    spec: RawObject,
    namespace: str,
    selected: Collection[str] = (),
) -> bool:
    """Whether a backup in ``backup_namespace`` with the accepted ``spec`` may read ``namespace``.

    Outside the admin namespace only its own namespace (Stork's rule), whatever the spec or the scratch
    state says: a pattern such as ``*`` in a tenant's spec (which validation refuses) matches nothing
    else here either. In the admin namespace: the namespaces its spec names or its patterns match, or,
    with a namespaceSelector, those ``selected`` (listed from the API by that selector); never one
    ``excludeNamespaces`` names or matches.
    """
    if backup_namespace != admin_namespace:
        return namespace == backup_namespace and selection.namespace_in_scope(spec, namespace)
    return selection.namespace_in_scope(spec, namespace, selected)


# --- what a restore may write ------------------------------------------------------------------------


@dataclass(frozen=True)
class RestoreGuard:
    """The one check every object a restore writes passes, right before the request is made.

    ``namespaced`` comes from discovery (the target cluster's view of the type), never from whether the
    stored object carries a namespace: the API server ignores the namespace of a cluster-scoped object,
    so trusting the stored bytes would let a tenant's backup create ClusterRoleBindings.
    """

    restore_namespace: str
    admin_namespace: str
    #: Set for a restore in the admin namespace of another namespace's backup (``backupNamespace``): the
    #: namespaces it may write (where that namespace's objects go). The backup's bytes are that tenant's,
    #: so they are held as that tenant's own restore would be: into those namespaces, nothing
    #: cluster-scoped.
    tenant_targets: frozenset[str] | None = None

    @property
    def admin(self) -> bool:
        """Whether the restore may write anywhere, cluster-scoped objects included."""
        return self.restore_namespace == self.admin_namespace and self.tenant_targets is None

    @property
    def writable(self) -> frozenset[str]:
        """The namespaces a restore that is not ``admin`` may write."""
        return self.tenant_targets if self.tenant_targets is not None else frozenset({self.restore_namespace})

    def _whose(self) -> str:
        if self.tenant_targets is None:
            return f"a restore in {self.restore_namespace}"
        return f"a restore of another namespace's backup (spec.backupNamespace) in {self.restore_namespace}"

    def refusal(self, obj: RawObject, namespaced: bool) -> str | None:
        """Why ``obj`` must not be written by this restore; None when it may."""
        meta = obj.get("metadata") or {}
        kind = obj.get("kind") or "object"
        try:
            name = check_name(meta.get("name"))
        except UnsafeName as exc:
            return f"{kind}: {exc}"
        namespace = meta.get("namespace") or ""
        if not namespaced:
            if not self.admin:
                return (
                    f"{kind} {name} is cluster-scoped: {self._whose()} creates no cluster-scoped object "
                    f"(only a restore of the admin namespace {self.admin_namespace}'s own backups may)"
                )
            return None
        try:
            check_namespace(namespace)
        except UnsafeName as exc:
            return f"{kind} {name}: {exc}"
        if not self.admin and namespace not in self.writable:
            return (
                f"{kind} {namespace}/{name}: namespace {namespace} is outside "
                f"{', '.join(sorted(self.writable))}, the only namespace {self._whose()} may write"
            )
        return None


def restore_guard(restore_namespace: str, admin_namespace: str, spec: RawObject) -> RestoreGuard:
    """The guard of a restore living in ``restore_namespace`` with the accepted ``spec``.

    The restore's namespace decides what it may write; the spec can only narrow that: outside the admin
    namespace ``backupNamespace`` and ``namespaceMapping`` change nothing here, and in the admin
    namespace a backup of another namespace holds the restore to where that namespace's objects go.
    """
    source = spec.get("backupNamespace") or restore_namespace
    if restore_namespace != admin_namespace or source == admin_namespace:
        return RestoreGuard(restore_namespace, admin_namespace)
    mapping = spec.get("namespaceMapping") or {}
    target = mapping.get(source, source) if isinstance(mapping, dict) else None
    return RestoreGuard(restore_namespace, admin_namespace, frozenset({str(target or source)}))


def backup_namespace(restore: RawObject) -> str:
    """Where a restore's ApplicationBackup is: ``spec.backupNamespace``, else the restore's own namespace
    (validation lets only a restore in the admin namespace name another)."""
    spec = restore.get("spec") or {}
    return str(spec.get("backupNamespace") or restore["metadata"]["namespace"])
