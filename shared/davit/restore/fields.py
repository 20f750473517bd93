"""Edits of raw objects shared by the restore's transformation and by the comparison of restored objects.

``transform`` applies them to make an object creatable in the target; ``normalize`` applies the same
ones to compare an original with its restored copy. Keeping them in one place means the comparison
cannot drift from what the restore actually does. Every function edits the object it is given in place;
callers work on a copy.

Objects are raw JSON as the API server returned them, so every step tolerates missing or null fields.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from typing import Any, Final

from davit import constants
from davit.api.objects import RawObject
from davit.restore.tiers import group_kind

#: Set on every restored object: where it came from and which restore made it. Labels can be selected
#: on (``kubectl get all -l davit.dev/restore=r1``); the uids, which make the origin unambiguous when a
#: backup or restore is re-created under the same name, are annotations.
RESTORED_FROM_BACKUP_LABEL: Final = f"{constants.ANNOTATION_PREFIX}restored-from-backup"
RESTORE_LABEL: Final = f"{constants.ANNOTATION_PREFIX}restore"
BACKUP_UID_ANNOTATION: Final = f"{constants.ANNOTATION_PREFIX}restored-from-backup-uid"
RESTORE_UID_ANNOTATION: Final = f"{constants.ANNOTATION_PREFIX}restore-uid"
PROVENANCE_LABELS: Final = (RESTORED_FROM_BACKUP_LABEL, RESTORE_LABEL)
PROVENANCE_ANNOTATIONS: Final = (BACKUP_UID_ANNOTATION, RESTORE_UID_ANNOTATION)

#: Metadata the API server assigns; it is refused or meaningless on create.
SERVER_ASSIGNED_METADATA: Final = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "managedFields",
    "generation",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)

HOSTNAME_LABEL: Final = "kubernetes.io/hostname"
#: The namespace's own name as a label (set by the API server from 1.21 on); NetworkPolicies and pod
#: affinity select namespaces by it.
NAMESPACE_NAME_LABEL: Final = "kubernetes.io/metadata.name"
SELECTED_NODE_ANNOTATION: Final = "volume.kubernetes.io/selected-node"
#: The StorageClass of a claim before ``spec.storageClassName`` existed; still honoured by the API.
BETA_STORAGE_CLASS_ANNOTATION: Final = "volume.beta.kubernetes.io/storage-class"
PROVISIONED_BY_ANNOTATION: Final = "pv.kubernetes.io/provisioned-by"
#: Written by the PV controller while it binds and provisions; a restored claim or volume is bound anew.
BINDING_ANNOTATIONS: Final = (
    "pv.kubernetes.io/bind-completed",
    "pv.kubernetes.io/bound-by-controller",
    "volume.beta.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/storage-provisioner",
)
#: The labels the Job controller derives from a Job's uid (the second spelling from Kubernetes 1.27 on).
JOB_UID_LABELS: Final = ("controller-uid", "batch.kubernetes.io/controller-uid")
#: The projected token volume admission adds to pods from Kubernetes 1.21 on.
ACCESS_VOLUME_PREFIX: Final = "kube-api-access-"

MAX_LABEL_VALUE: Final = 63
_LABEL_VALUE_HASH_DIGITS: Final = 10

_POD_SPEC_PATHS: Final[dict[tuple[str, str], tuple[str, ...]]] = {
    ("", "Pod"): ("spec",),
    ("", "PodTemplate"): ("template", "spec"),
    ("", "ReplicationController"): ("spec", "template", "spec"),
    **{
        (group, kind): ("spec", "template", "spec")
        for group in ("apps", "extensions")
        for kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet")
    },
    ("batch", "Job"): ("spec", "template", "spec"),
    ("batch", "CronJob"): ("spec", "jobTemplate", "spec", "template", "spec"),
}

#: Old name → new name (namespaces, storage classes, nodes); names not in it stay as they are.
NameMapping = Mapping[str, str]


# --- navigation ------------------------------------------------------------------------------------


def dig(obj: Any, *path: str) -> Any:
    """The value at ``path``, or None where a step is missing, null or not a map."""
    for step in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(step)
    return obj


def maps(value: Any) -> Iterator[dict[str, Any]]:
    """The maps in a list that may be missing, null or hold nulls."""
    if isinstance(value, list):
        yield from (item for item in value if isinstance(item, dict))


def metadata(obj: RawObject) -> dict[str, Any]:
    """The object's metadata map, created if missing."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = obj["metadata"] = {}
    return meta


def pop_path(obj: RawObject, *path: str) -> None:
    """Remove the field at ``path`` if present."""
    parent = dig(obj, *path[:-1])
    if isinstance(parent, dict):
        parent.pop(path[-1], None)


def drop_empty(container: dict[str, Any], key: str) -> None:
    """Remove ``key`` when it holds an empty map or list, so "nothing" has one spelling."""
    if container.get(key) in ({}, [], None):
        container.pop(key, None)


def pod_specs(obj: RawObject) -> list[dict[str, Any]]:
    """The pod specs an object holds: a Pod's own, a workload's template's."""
    path = _POD_SPEC_PATHS.get(group_kind(obj))
    spec = dig(obj, *path) if path else None
    return [spec] if isinstance(spec, dict) else []


def _remap_list(values: Any, mapping: NameMapping) -> Any:
    return (
        [mapping.get(v, v) if isinstance(v, str) else v for v in values]
        if isinstance(values, list)
        else values
    )


def _remap_key(container: Any, key: str, mapping: NameMapping) -> None:
    if isinstance(container, dict) and isinstance(container.get(key), str):
        container[key] = mapping.get(container[key], container[key])


# --- server-assigned fields and provenance ---------------------------------------------------------


def strip_server_assigned(obj: RawObject) -> None:
    """Remove what the API server assigns (see ``SERVER_ASSIGNED_METADATA``) and ``status``.

    ``status`` is observed state: controllers recompute it, and kinds with a status subresource ignore
    it on create anyway. No kind restores it.
    """
    meta = metadata(obj)
    for name in SERVER_ASSIGNED_METADATA:
        meta.pop(name, None)
    obj.pop("status", None)


def label_value(text: str) -> str:
    """``text`` as a valid label value: unchanged up to 63 characters, else a prefix and a hash.

    Object names may be 253 characters long; two long names sharing a prefix still get distinct values.
    """
    if len(text) <= MAX_LABEL_VALUE:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:_LABEL_VALUE_HASH_DIGITS]
    prefix = text[: MAX_LABEL_VALUE - _LABEL_VALUE_HASH_DIGITS - 1].rstrip("-._")
    return f"{prefix}-{digest}"


def add_provenance(obj: RawObject, labels: NameMapping, annotations: NameMapping) -> None:
    meta = metadata(obj)
    meta["labels"] = {**(meta.get("labels") or {}), **labels}
    meta["annotations"] = {**(meta.get("annotations") or {}), **annotations}


def strip_provenance(obj: RawObject) -> None:
    meta = metadata(obj)
    for key, names in (("labels", PROVENANCE_LABELS), ("annotations", PROVENANCE_ANNOTATIONS)):
        values = meta.get(key)
        if isinstance(values, dict):
            for name in names:
                values.pop(name, None)
        drop_empty(meta, key)


# --- namespaces ------------------------------------------------------------------------------------


def remap_namespaces(obj: RawObject, mapping: NameMapping) -> None:
    """Rewrite every namespace reference the restore knows of through ``mapping`` (unmapped: unchanged).

    Covered: the object's namespace; a Namespace's name and its ``kubernetes.io/metadata.name`` label;
    a PV's claimRef; ServiceAccount subjects of (Cluster)RoleBindings; the Services of admission webhooks,
    APIServices and CRD conversion webhooks; namespace selectors by name in NetworkPolicies; pod
    (anti-)affinity namespaces in pod specs and templates.
    """
    if not mapping:
        return
    group, kind = group_kind(obj)
    meta = metadata(obj)
    _remap_key(meta, "namespace", mapping)
    if (group, kind) == ("", "Namespace"):
        _remap_key(meta, "name", mapping)
        _remap_key(meta.get("labels"), NAMESPACE_NAME_LABEL, mapping)
    elif (group, kind) == ("", "PersistentVolume"):
        _remap_key(dig(obj, "spec", "claimRef"), "namespace", mapping)
    elif group == "rbac.authorization.k8s.io" and kind in ("RoleBinding", "ClusterRoleBinding"):
        for subject in maps(obj.get("subjects")):
            if subject.get("kind") == "ServiceAccount":
                _remap_key(subject, "namespace", mapping)
    elif group == "admissionregistration.k8s.io":
        for webhook in maps(obj.get("webhooks")):
            _remap_key(dig(webhook, "clientConfig", "service"), "namespace", mapping)
    elif (group, kind) == ("apiregistration.k8s.io", "APIService"):
        _remap_key(dig(obj, "spec", "service"), "namespace", mapping)
    elif (group, kind) == ("apiextensions.k8s.io", "CustomResourceDefinition"):
        _remap_key(dig(obj, "spec", "conversion", "webhook", "clientConfig", "service"), "namespace", mapping)
    elif (group, kind) == ("networking.k8s.io", "NetworkPolicy"):
        for rule, peers in (("ingress", "from"), ("egress", "to")):
            for entry in maps(dig(obj, "spec", rule)):
                for peer in maps(entry.get(peers)):
                    _remap_namespace_selector(peer.get("namespaceSelector"), mapping)
    for spec in pod_specs(obj):
        for term in _pod_affinity_terms(spec):
            if "namespaces" in term:
                term["namespaces"] = _remap_list(term["namespaces"], mapping)
            _remap_namespace_selector(term.get("namespaceSelector"), mapping)


def _remap_namespace_selector(selector: Any, mapping: NameMapping) -> None:
    if not isinstance(selector, dict):
        return
    _remap_key(selector.get("matchLabels"), NAMESPACE_NAME_LABEL, mapping)
    for expression in maps(selector.get("matchExpressions")):
        if expression.get("key") == NAMESPACE_NAME_LABEL:
            expression["values"] = _remap_list(expression.get("values"), mapping)


def _pod_affinity_terms(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for kind in ("podAffinity", "podAntiAffinity"):
        affinity = dig(spec, "affinity", kind)
        yield from maps(dig(affinity, "requiredDuringSchedulingIgnoredDuringExecution"))
        for weighted in maps(dig(affinity, "preferredDuringSchedulingIgnoredDuringExecution")):
            term = weighted.get("podAffinityTerm")
            if isinstance(term, dict):
                yield term


# --- storage classes and nodes ---------------------------------------------------------------------


def map_storage_classes(obj: RawObject, mapping: NameMapping) -> None:
    """Rewrite the StorageClass of claims, volumes and StatefulSets' claim templates through ``mapping``."""
    if not mapping:
        return
    group, kind = group_kind(obj)
    if (group, kind) in (("", "PersistentVolumeClaim"), ("", "PersistentVolume")):
        _map_claim_class(obj, mapping)
    elif group in ("apps", "extensions") and kind == "StatefulSet":
        for template in maps(dig(obj, "spec", "volumeClaimTemplates")):
            _map_claim_class(template, mapping)


def _map_claim_class(obj: RawObject, mapping: NameMapping) -> None:
    _remap_key(obj.get("spec"), "storageClassName", mapping)
    _remap_key(dig(obj, "metadata", "annotations"), BETA_STORAGE_CLASS_ANNOTATION, mapping)


def map_nodes(obj: RawObject, mapping: NameMapping) -> None:
    """Rewrite node names through ``mapping`` wherever an object ties itself to a node by name.

    A PV's node affinity (how a ``local`` volume says where its data is); a claim's selected node; a pod
    spec's or template's ``nodeName``, ``kubernetes.io/hostname`` node selector and node affinity.
    """
    if not mapping:
        return
    group, kind = group_kind(obj)
    if (group, kind) == ("", "PersistentVolume"):
        required = dig(obj, "spec", "nodeAffinity", "required")
        for term in maps(dig(required, "nodeSelectorTerms")):
            _map_node_term(term, mapping)
    elif (group, kind) == ("", "PersistentVolumeClaim"):
        _remap_key(dig(obj, "metadata", "annotations"), SELECTED_NODE_ANNOTATION, mapping)
    for spec in pod_specs(obj):
        _remap_key(spec, "nodeName", mapping)
        _remap_key(spec.get("nodeSelector"), HOSTNAME_LABEL, mapping)
        affinity = dig(spec, "affinity", "nodeAffinity")
        required = dig(affinity, "requiredDuringSchedulingIgnoredDuringExecution")
        for term in maps(dig(required, "nodeSelectorTerms")):
            _map_node_term(term, mapping)
        for weighted in maps(dig(affinity, "preferredDuringSchedulingIgnoredDuringExecution")):
            _map_node_term(weighted.get("preference"), mapping)


def _map_node_term(term: Any, mapping: NameMapping) -> None:
    if not isinstance(term, dict):
        return
    for field, key in (("matchExpressions", HOSTNAME_LABEL), ("matchFields", "metadata.name")):
        for expression in maps(term.get(field)):
            if expression.get("key") == key:
                expression["values"] = _remap_list(expression.get("values"), mapping)


# --- what the cluster assigns anew -----------------------------------------------------------------


def strip_service_addresses(obj: RawObject, keep_node_ports: bool = False) -> None:
    """Remove a Service's allocated addresses and ports; keep ``None`` (a headless Service's choice).

    Cluster IPs and node ports are allocated per cluster and unique in it: in a clone within the same
    cluster the original still holds them, and in another cluster they may be out of range. Node ports
    are kept on request (``keep_node_ports``, ``preserveNodePorts``): clients outside the cluster reach
    the Service by them.
    """
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    if spec.get("clusterIP") != "None":
        spec.pop("clusterIP", None)
        spec.pop("clusterIPs", None)
    if keep_node_ports:
        return
    spec.pop("healthCheckNodePort", None)
    for port in maps(spec.get("ports")):
        port.pop("nodePort", None)


def carry_node_ports(desired: RawObject, live: RawObject) -> None:
    """Updating a Service in place (``replacePolicy: Update``): each port of ``desired`` without a node
    port takes the one ``live`` has for the same port and protocol, and the health check node port is
    kept likewise. A merge patch replaces the ports list as a whole, and the API server allocates a new
    node port for every port left without one: the Service would move under its clients' feet."""
    spec, live_spec = desired.get("spec"), live.get("spec")
    if not isinstance(spec, dict) or not isinstance(live_spec, dict):
        return
    allocated = {
        (port.get("port"), port.get("protocol") or "TCP"): port["nodePort"]
        for port in maps(live_spec.get("ports"))
        if port.get("nodePort")
    }
    for port in maps(spec.get("ports")):
        found = allocated.get((port.get("port"), port.get("protocol") or "TCP"))
        if found and not port.get("nodePort") and spec.get("type") in ("NodePort", "LoadBalancer"):
            port["nodePort"] = found
    # Allocated only for (and allowed only on) a LoadBalancer whose traffic policy is Local.
    local_balancer = spec.get("type") == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local"
    if local_balancer and live_spec.get("healthCheckNodePort") and not spec.get("healthCheckNodePort"):
        spec["healthCheckNodePort"] = live_spec["healthCheckNodePort"]


def strip_binding_annotations(obj: RawObject) -> None:
    annotations = dig(obj, "metadata", "annotations")
    if isinstance(annotations, dict):
        for name in BINDING_ANNOTATIONS:
            annotations.pop(name, None)


def service_account_token_prefix(service_account: str) -> str:
    """The name prefix of the token Secrets the token controller creates for a ServiceAccount."""
    return f"{service_account}-token-"


def strip_token_references(obj: RawObject) -> None:
    """Remove a ServiceAccount's references to its generated token Secrets (not restored: see transform)."""
    prefix = service_account_token_prefix(str(dig(obj, "metadata", "name") or ""))
    secrets = obj.get("secrets")
    if isinstance(secrets, list):
        obj["secrets"] = [s for s in secrets if not str(dig(s, "name") or "").startswith(prefix)]
        drop_empty(obj, "secrets")


def strip_token_volumes(obj: RawObject) -> None:
    """Remove the ServiceAccount token volume admission added to a pod, and its mounts.

    It names a Secret of the source cluster (before 1.21) or is re-added by admission (1.21 on); a pod
    that keeps it would wait for a Secret that is never restored, and admission adds a fresh one.
    """
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    prefix = service_account_token_prefix(str(account))

    def is_token(volume: dict[str, Any]) -> bool:
        name = str(volume.get("name") or "")
        secret = str(dig(volume, "secret", "secretName") or "")
        projected = any("serviceAccountToken" in s for s in maps(dig(volume, "projected", "sources")))
        return secret.startswith(prefix) or (name.startswith(ACCESS_VOLUME_PREFIX) and projected)

    tokens = {str(v.get("name")) for v in maps(spec.get("volumes")) if is_token(v)}
    if not tokens:
        return
    spec["volumes"] = [v for v in maps(spec.get("volumes")) if str(v.get("name")) not in tokens]
    drop_empty(spec, "volumes")
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        for container in maps(spec.get(kind)):
            if isinstance(container.get("volumeMounts"), list):
                container["volumeMounts"] = [
                    m for m in maps(container["volumeMounts"]) if str(m.get("name")) not in tokens
                ]
                drop_empty(container, "volumeMounts")


def strip_job_uid_labels(obj: RawObject) -> None:
    """Remove the labels a Job's generated selector derives from its uid, so the API server generates them
    again for the new uid (it refuses a Job whose generated selector names another uid)."""
    if dig(obj, "spec", "manualSelector") is True:
        return
    for path in (("spec", "selector", "matchLabels"), ("spec", "template", "metadata", "labels")):
        labels = dig(obj, *path)
        if isinstance(labels, dict):
            for name in JOB_UID_LABELS:
                labels.pop(name, None)
