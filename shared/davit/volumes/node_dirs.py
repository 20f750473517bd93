"""Where a node agent may read or write a volume, derived from the Kubernetes API alone.

The node agent runs as root on the node, so the directory it reads (a backup) or writes (a restore) must
never be chosen by anything a tenant or a party with access to Redis can write. The plan in the
operation's scratch state (``davit.volumes.claims.VolumePlan``) is a hint only: the directory is derived again
from the API and the plan must agree with it, else the volume is refused.

A directory is allowed when it is, for a claim of a namespace the operation may act on:

* the path of the claim's bound ``local`` or ``hostPath`` PersistentVolume (PVs are cluster-scoped:
  only an administrator or a provisioner writes their paths), or
* ``<kubeletRoot>/pods/<podUID>/volumes/<plugin>/<pvName>`` (``…/mount`` for CSI) of a pod of that
  namespace that is scheduled on this node and mounts the claim.

Which namespaces an operation may act on comes from the operation as the API server holds it: outside
the admin namespace only its own (Stork's rule, whatever its spec says); in the admin namespace the
namespaces its spec covers (a backup) or writes (a restore).
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from davit import errors, tenancy
from davit.api.objects import RawObject
from davit.backup import selection
from davit.volumes.claims import VolumePlan, plugin_dir

if TYPE_CHECKING:
    from davit.operations.ports import Cluster


class RefusedDirectory(errors.Refused):
    """The volume's directory could not be derived from the API, or the plan disagrees with it."""

    def __init__(self, reason: str, what: str = "directory") -> None:
        super().__init__(reason)
        self.reason = reason
        #: What was refused, for the volume's reason: its "directory", or the "data" to restore.
        self.what = what


@dataclass(frozen=True)
class ClaimView:
    """What the API says about a claim, as far as its directory on a node goes."""

    namespace: str
    claim: str
    pvc: RawObject | None
    pv: RawObject | None
    #: The namespace's pods (all of them; filtered here).
    pods: list[RawObject]


# --- which namespaces ----------------------------------------------------------------------------------


def backup_namespaces(
    backup: RawObject, admin_namespace: str, selected: Collection[str] = (), present: Collection[str] = ()
) -> set[str]:
    """The namespaces a backup may read volumes of: its own outside the admin namespace, if its spec
    names it; in the admin namespace those its spec names plus ``selected`` (matched by its
    namespaceSelector, listed from the API) and those of ``present`` its patterns match, less
    ``excludeNamespaces`` (``davit.backup.selection.resolve_namespaces``)."""
    namespace = backup["metadata"]["namespace"]
    spec = backup.get("spec") or {}
    if namespace != admin_namespace:
        return {namespace} if tenancy.backup_may_read(namespace, admin_namespace, spec, namespace) else set()
    return set(selection.resolve_namespaces(spec, present, selected))


def restore_namespaces(restore: RawObject, backup: RawObject | None, admin_namespace: str) -> set[str]:
    """The namespaces a restore may write volumes into: its own outside the admin namespace; where another
    namespace's backup goes for an admin's restore of it (``backupNamespace``, ``tenancy.restore_guard``);
    otherwise in the admin namespace the backup's namespaces (as its spec names them or its volumes were
    found in) after the restore's ``namespaceMapping``."""
    namespace = restore["metadata"]["namespace"]
    guard = tenancy.restore_guard(namespace, admin_namespace, restore.get("spec") or {})
    if not guard.admin:  # its own namespace, or where another namespace's backup goes (backupNamespace)
        return set(guard.writable)
    mapping: dict[str, str] = (restore.get("spec") or {}).get("namespaceMapping") or {}
    sources: set[str] = set()
    if backup is not None:
        sources |= set((backup.get("spec") or {}).get("namespaces") or [])
        for volume in (backup.get("status") or {}).get("volumes") or []:
            if volume.get("namespace"):
                sources.add(str(volume["namespace"]))
    return {mapping.get(s, s) for s in sources} | set(mapping.values())


# --- which directory -----------------------------------------------------------------------------------


def _node_local_path(pv: RawObject) -> str | None:
    spec = pv.get("spec") or {}
    source = spec.get("local") or spec.get("hostPath")
    if not source:
        return None
    return str(source.get("path") or "")


def _affinity_nodes(pv: RawObject) -> set[str]:
    terms = ((((pv.get("spec") or {}).get("nodeAffinity") or {}).get("required") or {})
             .get("nodeSelectorTerms")) or []  # fmt: skip
    nodes: set[str] = set()
    for term in terms:
        for expression in term.get("matchExpressions") or []:
            if expression.get("key") == "kubernetes.io/hostname" and expression.get("operator") == "In":
                nodes.update(str(v) for v in expression.get("values") or [])
    return nodes


def mounting_pods(view: ClaimView, node: str) -> dict[str, RawObject]:
    """Pod uid → pod, for the pods of the claim's namespace scheduled on ``node`` that mount the claim."""
    found = {}
    for pod in view.pods:
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        if meta.get("namespace") != view.namespace or spec.get("nodeName") != node:
            continue
        if meta.get("deletionTimestamp") or not meta.get("uid"):
            continue
        if any((v.get("persistentVolumeClaim") or {}).get("claimName") == view.claim
               for v in spec.get("volumes") or []):  # fmt: skip
            found[str(meta["uid"])] = pod
    return found


def _plain_segment(value: str, what: str) -> str:
    if not value or value in (".", "..") or "/" in value or "\0" in value:
        raise RefusedDirectory(f"{what} {value!r} cannot name a directory")
    return value


def derive_directory(
    plan: VolumePlan, claim_part: str, view: ClaimView, allowed_namespaces: Collection[str], node: str,
    kubelet_root: str,
) -> Path:  # fmt: skip
    """The directory of ``claim_part`` on ``node`` as the API has it, when ``plan`` agrees with it;
    RefusedDirectory naming the disagreement otherwise."""
    namespace, _sep, claim = claim_part.partition("/")
    if (view.namespace, view.claim) != (namespace, claim):
        raise RefusedDirectory(f"the claim looked up ({view.namespace}/{view.claim}) is not {claim_part}")
    if namespace not in allowed_namespaces:
        raise RefusedDirectory(
            f"namespace {namespace} is not one this operation may act on "
            f"({', '.join(sorted(allowed_namespaces)) or 'none'})"
        )
    if (plan.namespace, plan.claim) != (namespace, claim):
        raise RefusedDirectory(f"the volume plan names claim {plan.namespace}/{plan.claim}, not {claim_part}")
    pvc, pv = view.pvc, view.pv
    if pvc is None:
        raise RefusedDirectory(f"claim {claim_part} not found")
    volume_name = (pvc.get("spec") or {}).get("volumeName") or ""
    # The binding is the PV's claimRef naming this claim's uid (checked below); the claim's phase may lag.
    if not volume_name or pv is None:
        raise RefusedDirectory(f"claim {claim_part} is not bound to a volume")
    pv_name = str((pv.get("metadata") or {}).get("name") or "")
    ref = (pv.get("spec") or {}).get("claimRef") or {}
    pvc_uid = (pvc.get("metadata") or {}).get("uid")
    if (
        pv_name != volume_name
        or (ref.get("namespace"), ref.get("name")) != (namespace, claim)
        or (ref.get("uid") and ref.get("uid") != pvc_uid)
    ):
        raise RefusedDirectory(f"volume {pv_name or volume_name} is not bound to claim {claim_part}")
    if plan.volume != pv_name:
        raise RefusedDirectory(
            f"the volume plan names volume {plan.volume!r}, the claim is bound to {pv_name}"
        )
    local = _node_local_path(pv)
    if local is not None:
        if not os.path.isabs(local) or os.path.normpath(local) != local.rstrip("/") or "\0" in local:
            raise RefusedDirectory(f"volume {pv_name} has the path {local!r}, not a plain absolute path")
        affinity = _affinity_nodes(pv)
        if affinity and node not in affinity:
            raise RefusedDirectory(
                f"volume {pv_name} is bound to node(s) {', '.join(sorted(affinity))}, not {node}"
            )
        if plan.source != "local" or plan.path != local:
            raise RefusedDirectory(
                f"the volume plan names the directory {plan.path or plan.source!r}, "
                f"volume {pv_name} of claim {claim_part} has the path {local}"
            )
        return Path(local)
    pods = mounting_pods(view, node)
    if plan.source != "pod" or plan.pod_uid not in pods:
        raise RefusedDirectory(
            f"the volume plan names pod {plan.pod_uid!r}, which is not a pod of {namespace} on node {node} "
            f"that mounts claim {claim}"
        )
    plugin = plugin_dir(pv.get("spec") or {})
    if plan.plugin_dir != plugin:
        raise RefusedDirectory(
            f"the volume plan names the plugin {plan.plugin_dir!r}, volume {pv_name} is {plugin}"
        )
    base = (Path(kubelet_root) / "pods" / _plain_segment(plan.pod_uid, "pod uid") / "volumes"
            / plugin / _plain_segment(pv_name, "volume name"))  # fmt: skip
    return base / "mount" if plugin == "kubernetes.io~csi" else base


# --- reading the API -----------------------------------------------------------------------------------


def claim_view(cluster: Cluster, claim_part: str) -> ClaimView:
    """The claim, its volume and the pods of its namespace, read from the API server."""
    namespace, _sep, claim = claim_part.partition("/")
    if not namespace or not claim:
        raise RefusedDirectory(f"{claim_part!r} does not name a claim")
    pvc = cluster.read_claim(namespace, claim)
    if pvc is None:
        return ClaimView(namespace, claim, None, None, [])
    volume_name = (pvc.get("spec") or {}).get("volumeName")
    pv = cluster.read_volume(volume_name) if volume_name else None
    return ClaimView(namespace, claim, pvc, pv, cluster.list_pods(namespace))


def selected_namespaces(cluster: Cluster, backup: RawObject) -> set[str]:
    """The namespaces a backup's namespaceSelector matches now (none without one)."""
    selector = (backup.get("spec") or {}).get("namespaceSelector")
    if not selector:
        return set()
    return set(cluster.namespaces_matching(selector))
