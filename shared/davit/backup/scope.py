"""The namespaces a backup covers, resolved against the API when a stage needs them.

``davit.backup.selection`` decides (names, glob patterns, ``excludeNamespaces``) and
``davit.tenancy.backup_may_read`` says who may cover what; this module only brings in what the API lists:
the namespaces a namespaceSelector matches, and every namespace when the spec holds a pattern. Each stage
resolves them again (volumes, rules, resources), so a namespace created while a backup runs is covered
by the stages that start after it appears.
"""

from __future__ import annotations

from davit import tenancy
from davit.api.objects import RawObject
from davit.backup import selection
from davit.operations.ports import Cluster


def covered_namespaces(cluster: Cluster, backup: RawObject, admin_namespace: str) -> list[str]:
    """The namespaces ``backup`` (an ApplicationBackup with its accepted spec) covers now, sorted."""
    namespace = backup["metadata"]["namespace"]
    spec = backup.get("spec") or {}
    if namespace != admin_namespace:
        # A tenant's backup covers its own namespace or nothing, whatever patterns its spec holds:
        # nothing is listed, so nothing another namespace holds can come into it.
        return [namespace] if tenancy.backup_may_read(namespace, admin_namespace, spec, namespace) else []
    selector = spec.get("namespaceSelector")
    selected = cluster.namespaces_matching(selector) if isinstance(selector, str) and selector else []
    # An empty label selector matches every namespace: the candidates of the spec's patterns.
    existing = cluster.namespaces_matching("") if selection.has_namespace_patterns(spec) else []
    return [
        ns for ns in selection.resolve_namespaces(spec, existing, selected)
        if tenancy.backup_may_read(namespace, admin_namespace, spec, ns, selected)
    ]  # fmt: skip
