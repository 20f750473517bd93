"""A documented normalisation under which a restored object equals its original.

A restored object is never byte-for-byte its original: the API server assigns a new uid and
resourceVersion, controllers allocate new cluster IPs and bind claims to new volumes, the restore moves it
to another namespace and labels it. "The restore is faithful" therefore means: after removing exactly
those differences, and nothing else, the two are equal. This module is that list, so a test can assert

    normalize(original, namespace_mapping) == normalize(restored, {})

for every object of a restore. ``original`` is the backed-up object (its namespaces are mapped as the
restore maps them); ``restored`` is the object read back from the target (already in its namespace, so
its mapping is empty). What is removed from both:

* what the API server assigns: uid, resourceVersion, creationTimestamp, managedFields, generation,
  selfLink, deletion fields, and ``status`` (observed state, recomputed in the target);
* the restore's own labels and annotations (``davit.dev/restored-from-backup``, ``davit.dev/restore``
  and the uids);
* the uids in owner references (an owner's uid is new; the reference must otherwise be the same);
* what the target cluster assigns anew, with the transformation that makes it so:
  a Service's cluster IPs (except ``None``), node ports and health check node port; a pod's node name
  and ServiceAccount token volume; a claim's volume name, selected node and the PV controller's binding
  annotations; a static volume's claimRef uid and binding annotations; a ServiceAccount's generated
  token Secrets; a Job's uid-derived selector labels; and the annotations controllers derive from a
  generation (``deployment.kubernetes.io/revision``, ``deprecated.daemonset.template.generation``).

Empty label and annotation maps are removed, so "none" has one spelling. Storage class and node mappings
can be applied to the original as well (keyword arguments), for restores that use them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Final

from davit.api.objects import RawObject
from davit.restore import fields
from davit.restore.tiers import group_kind

#: Annotations a controller writes from the object's generation or its revision history, which start
#: over in the target.
GENERATION_ANNOTATIONS: Final = (
    "deployment.kubernetes.io/revision",
    "deprecated.daemonset.template.generation",
)


def normalize(
    obj: RawObject,
    namespace_mapping: Mapping[str, str],
    *,
    storage_class_mapping: Mapping[str, str] | None = None,
    node_mapping: Mapping[str, str] | None = None,
) -> RawObject:
    """A copy of ``obj`` without what a restore legitimately changes (see the module docstring)."""
    normal = copy.deepcopy(obj)
    fields.strip_server_assigned(normal)
    fields.strip_provenance(normal)
    meta = fields.metadata(normal)
    for ref in fields.maps(meta.get("ownerReferences")):
        ref.pop("uid", None)
    fields.remap_namespaces(normal, namespace_mapping)
    fields.map_storage_classes(normal, storage_class_mapping or {})
    fields.map_nodes(normal, node_mapping or {})
    annotations = meta.get("annotations")
    if isinstance(annotations, dict):
        for name in GENERATION_ANNOTATIONS:
            annotations.pop(name, None)
    edit = _REASSIGNED.get(group_kind(normal))
    if edit is not None:
        edit(normal)
    for key in ("labels", "annotations", "ownerReferences"):
        fields.drop_empty(meta, key)
    return normal


def _pod(obj: RawObject) -> None:
    fields.pop_path(obj, "spec", "nodeName")
    fields.strip_token_volumes(obj)


def _claim(obj: RawObject) -> None:
    fields.strip_binding_annotations(obj)
    fields.pop_path(obj, "metadata", "annotations", fields.SELECTED_NODE_ANNOTATION)
    fields.pop_path(obj, "spec", "volumeName")


def _volume(obj: RawObject) -> None:
    fields.strip_binding_annotations(obj)
    fields.pop_path(obj, "spec", "claimRef", "uid")
    fields.pop_path(obj, "spec", "claimRef", "resourceVersion")


_REASSIGNED: dict[tuple[str, str], Callable[[RawObject], None]] = {
    ("", "Service"): fields.strip_service_addresses,
    ("", "Pod"): _pod,
    ("", "PersistentVolumeClaim"): _claim,
    ("", "PersistentVolume"): _volume,
    ("", "ServiceAccount"): fields.strip_token_references,
    ("batch", "Job"): fields.strip_job_uid_labels,
}
