"""The normalisation under which a restored object equals its original, and only then.

``as_created`` plays the target cluster: it does to a transformed object what the API server and the
controllers do when it is created (new uid and resourceVersion, allocated cluster IP and node ports,
bound claim, scheduled pod with a fresh token volume, new token Secret reference, Job selector for the
new uid, restarted revision counters, status). The original and that result must normalise equal; any
change of content must not.
"""

from __future__ import annotations

from typing import Any

import pytest

from davit.api.objects import RawObject
from davit.restore.normalize import normalize
from davit.restore.transform import Context, ObjectKey, Provenance, Scope, Skip, owner_links, transform
from tests.unit import restoring_objects as build

MOVE = {"shop": "shop-copy"}
PROVENANCE = Provenance("nightly", "uid-backup", "restore-1", "uid-restore")


def as_created(body: RawObject) -> RawObject:
    """``body`` as the target cluster stores it once created and reconciled."""
    obj = build.copied(body)
    meta = obj["metadata"]
    meta.update(
        uid=f"new-{meta['name']}",
        resourceVersion="1",
        creationTimestamp="2024-06-01T00:00:00Z",
        generation=1,
        managedFields=[{"manager": "davit-restore", "operation": "Update"}],
    )
    kind = obj["kind"]
    spec = obj.get("spec") or {}
    if kind == "Service":
        if "clusterIP" not in spec:
            spec["clusterIP"] = "10.100.0.7"
            spec["clusterIPs"] = ["10.100.0.7"]
        if spec.get("type") in ("NodePort", "LoadBalancer"):
            for port in spec["ports"]:
                port["nodePort"] = 31111
            if spec.get("externalTrafficPolicy") == "Local":
                spec["healthCheckNodePort"] = 32222
        obj["status"] = {"loadBalancer": {}}
    elif kind == "Pod":
        spec["nodeName"] = "node-b"
        token = f"{spec['serviceAccountName']}-token-newxy"
        spec["volumes"].append({"name": token, "secret": {"secretName": token}})
        spec["containers"][0]["volumeMounts"].append({"name": token, "mountPath": "/var/run/secrets/x"})
        obj["status"] = {"phase": "Running"}
    elif kind == "PersistentVolumeClaim":
        spec.setdefault("volumeName", "pvc-new")
        meta["annotations"].update({
            "pv.kubernetes.io/bind-completed": "yes",
            "pv.kubernetes.io/bound-by-controller": "yes",
            "volume.kubernetes.io/storage-provisioner": "example.com/local",
            "volume.kubernetes.io/selected-node": "node-b",
        })  # fmt: skip
        obj["status"] = {"phase": "Bound"}
    elif kind == "ServiceAccount":
        obj.setdefault("secrets", []).append({"name": f"{meta['name']}-token-newxy"})
    elif kind == "Deployment":
        meta["annotations"]["deployment.kubernetes.io/revision"] = "1"
        obj["status"] = {"replicas": 2}
    elif kind == "Job":
        spec["selector"]["matchLabels"]["controller-uid"] = meta["uid"]
        spec["template"]["metadata"]["labels"]["controller-uid"] = meta["uid"]
    elif kind == "PersistentVolume":
        spec["claimRef"].update(uid="new-claim", resourceVersion="5")
        meta["annotations"]["pv.kubernetes.io/bound-by-controller"] = "yes"
    return obj


def restore_one(original: RawObject, *present: RawObject, context: Context | None = None) -> RawObject:
    context = context or Context(
        PROVENANCE,
        namespace_mapping=MOVE,
        scope=Scope(present=frozenset(ObjectKey.of(o) for o in (original, *present))),
    )
    body = transform(original, context)
    assert not isinstance(body, Skip), body
    created = as_created(body)
    links = owner_links(original, context)
    if links:  # what the restore does once the owners exist
        created["metadata"]["ownerReferences"] = [link.reference(f"new-{link.name}") for link in links]
    return created


def static_volume() -> RawObject:
    return build.volume("local-pv", provisioner=None)


ORIGINALS = [
    build.namespace(),
    build.config_map("settings"),
    build.secret("db"),
    build.service(),
    build.service("public", node_ports=True),
    build.service("peers", headless=True),
    build.pod(),
    build.claim(),
    build.service_account(),
    build.deployment(),
    build.stateful_set(),
    build.job(),
    build.cron_job(),
    build.widget(),
    build.crd(),
    static_volume(),
    build.obj(
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        "readers",
        subjects=[{"kind": "ServiceAccount", "name": "runner", "namespace": "shop"}],
        roleRef={"kind": "Role", "name": "reader", "apiGroup": "rbac.authorization.k8s.io"},
    ),
]


@pytest.mark.parametrize("original", ORIGINALS, ids=lambda o: f"{o['kind']}-{o['metadata']['name']}")
def test_a_restored_object_equals_its_original_after_normalisation(original: RawObject) -> None:
    restored = restore_one(original)
    assert restored != original
    assert normalize(original, MOVE) == normalize(restored, {})


def test_an_owned_object_relinked_to_its_restored_owner_equals_its_original() -> None:
    owner = build.widget()
    original = build.owned_by(build.config_map("widget-settings"), owner)
    restored = restore_one(original, owner)
    assert restored["metadata"]["ownerReferences"][0]["uid"] == "new-blue"
    assert normalize(original, MOVE) == normalize(restored, {})


def test_a_reference_to_an_owner_that_was_not_restored_is_a_difference() -> None:
    original = build.owned_by(build.config_map("orphan"), build.widget())
    restored = restore_one(original)
    assert normalize(original, MOVE) != normalize(restored, {})


@pytest.mark.parametrize(
    "change",
    [
        lambda o: o["data"].update(color="red"),
        lambda o: o["metadata"]["labels"].update(app="other"),
        lambda o: o["metadata"]["annotations"].pop("kubectl.kubernetes.io/last-applied-configuration"),
        lambda o: o["metadata"].update(name="renamed"),
        lambda o: o["metadata"].update(namespace="shop"),  # not moved as the mapping says
    ],
    ids=["data", "label", "annotation", "name", "namespace"],
)
def test_a_change_of_content_is_a_difference(change: Any) -> None:
    original = build.config_map("settings")
    restored = restore_one(original)
    change(restored)
    assert normalize(original, MOVE) != normalize(restored, {})


def test_workload_and_claim_content_differences_are_seen() -> None:
    deployment = build.deployment()
    restored = restore_one(deployment)
    restored["spec"]["replicas"] = 5
    assert normalize(deployment, MOVE) != normalize(restored, {})
    claim = build.claim()
    restored_claim = restore_one(claim)
    restored_claim["spec"]["resources"]["requests"]["storage"] = "2Gi"
    assert normalize(claim, MOVE) != normalize(restored_claim, {})


def test_a_fixed_cluster_ip_is_not_reported_but_headless_is_compared() -> None:
    original = build.service("peers", headless=True)
    restored = restore_one(original)
    restored["spec"]["clusterIP"] = "10.1.1.1"
    restored["spec"]["clusterIPs"] = ["10.1.1.1"]
    # A headless Service that came back with a cluster IP is not the same Service.
    assert normalize(original, MOVE) != normalize(restored, {})


def test_the_input_is_not_modified() -> None:
    original = build.pod()
    before = build.copied(original)
    normalize(original, MOVE, storage_class_mapping={"standard": "fast"}, node_mapping={"node-a": "node-x"})
    assert original == before


def test_the_restores_own_labels_leave_no_trace() -> None:
    bare = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "shop"}}
    restored = restore_one(bare)
    assert set(restored["metadata"]["labels"]) == {"davit.dev/restored-from-backup", "davit.dev/restore"}
    assert normalize(restored, {}) == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c", "namespace": "shop-copy"},
    }


def test_storage_class_and_node_mappings_apply_to_the_original() -> None:
    classes, nodes = {"standard": "fast"}, {"node-a": "node-x"}
    context = Context(
        PROVENANCE,
        namespace_mapping=MOVE,
        storage_class_mapping=classes,
        node_mapping=nodes,
        scope=Scope(present=frozenset({ObjectKey.of(static_volume())})),
    )
    for original in (static_volume(), build.stateful_set(), build.deployment()):
        restored = restore_one(original, context=context)
        assert normalize(original, MOVE, storage_class_mapping=classes, node_mapping=nodes) == normalize(
            restored, {}
        )
        assert normalize(original, MOVE) != normalize(restored, {})
