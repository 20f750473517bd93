"""Restores end to end on the real stack: an application with a volume is backed up from the admin
namespace, its namespace (and its CRD) deleted, and restored: every object equals its original after the
documented normalisation (``davit.restore.normalize``), the volume's files are identical, the pods run
again. Then the same backup into another namespace beside the original, Retain and Delete."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from davit.restore.normalize import normalize
from tests.conftest import StackEnv
from tests.helpers import wait_for
from tests.integration.conftest import Services
from tests.integration.test_backup_resources import APP as BACKUP_APP
from tests.integration.test_backup_resources import apply, location_manifest
from tests.integration.test_backup_volumes import assert_same_tree, fill_mixed

pytestmark = pytest.mark.integration

ADMIN = "kube-system"
#: The custom resource definition the resource-backup tests use (Widgets keep any fields).
CRD = BACKUP_APP.split("---")[0]

APP = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: app, namespace: NS}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: reader, namespace: NS}
rules: [{apiGroups: [""], resources: [configmaps], verbs: [get, list]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: app-reads, namespace: NS}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: reader}
subjects: [{kind: ServiceAccount, name: app, namespace: NS}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: NS, labels: {app: web}}
data: {mode: production, "nested.json": '{"a": [1, 2, 3]}'}
---
apiVersion: v1
kind: Secret
metadata: {name: credentials, namespace: NS}
type: Opaque
stringData: {password: not-a-real-password}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: NS, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      serviceAccountName: app
      containers:
      - name: web
        image: nginx
        envFrom: [{configMapRef: {name: settings}}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: NS, labels: {app: db}}
spec:
  serviceName: db
  replicas: 1
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: db, image: postgres, volumeMounts: [{name: data, mountPath: /var/lib/postgresql}]}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {storageClassName: davit-dev, accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: NS}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: NS}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: pg, port: 5432}]
---
apiVersion: batch/v1beta1
kind: CronJob
metadata: {name: vacuum, namespace: NS}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers: [{name: vacuum, image: postgres, command: [vacuumdb, --all]}]
---
apiVersion: policy/v1beta1
kind: PodDisruptionBudget
metadata: {name: db, namespace: NS}
spec: {minAvailable: 1, selector: {matchLabels: {app: db}}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-web, namespace: NS}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}]}]
---
apiVersion: example.davit.dev/v1
kind: Widget
metadata: {name: blue, namespace: NS}
spec: {size: 3, color: blue}
---
apiVersion: example.davit.dev/v1
kind: Widget
metadata: {name: red, namespace: NS}
spec: {size: 5, color: red}
"""

#: What the test compares, object by object (runtime objects such as Pods, ReplicaSets, Endpoints and
#: the token Secret are recreated by controllers, not restored).
COMPARED = (
    "serviceaccounts",
    "roles.rbac.authorization.k8s.io",
    "rolebindings.rbac.authorization.k8s.io",
    "configmaps",
    "secrets",
    "deployments.apps",
    "statefulsets.apps",
    "services",
    "cronjobs.batch",
    "poddisruptionbudgets.policy",
    "networkpolicies.networking.k8s.io",
    "widgets.example.davit.dev",
    "persistentvolumeclaims",
)


def objects_of(stack: StackEnv, namespace: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) → object, for the compared kinds (without the controllers' own objects)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for resource in COMPARED:
        items = json.loads(stack.kubectl("-n", namespace, "get", resource, "-o", "json").stdout)["items"]
        for item in items:
            if item["kind"] == "Secret" and item.get("type") == "kubernetes.io/service-account-token":
                continue
            if item["kind"] == "ConfigMap" and item["metadata"]["name"] == "kube-root-ca.crt":
                continue
            found[(item["kind"], item["metadata"]["name"])] = item
    return found


def deploy_app(stack: StackEnv, namespace: str) -> Path:
    """The application, Running; returns the directory of the StatefulSet's volume (filled with data)."""
    apply(stack, CRD)
    wait_for(
        "the CRD to be established",
        lambda: (
            "True"
            in stack.kubectl(
                "get",
                "crd",
                "widgets.example.davit.dev",
                "-o",
                "jsonpath={.status.conditions[?(@.type=='Established')].status}",
                check=False,
            ).stdout
        ),
        timeout=30,
    )
    apply(stack, APP.replace("NS", namespace))
    volume = volume_of(stack, namespace, "data-db-0")
    fill_mixed(volume, seed=7, big=8 * 1024 * 1024)
    wait_ready(stack, namespace)
    return volume


def volume_of(stack: StackEnv, namespace: str, claim: str) -> Path:
    def bound() -> Path | None:
        out = stack.kubectl("-n", namespace, "get", "pvc", claim, "-o", "json", check=False)
        if out.returncode or json.loads(out.stdout).get("status", {}).get("phase") != "Bound":
            return None
        volume_name = json.loads(out.stdout)["spec"]["volumeName"]
        pv = json.loads(stack.kubectl("get", "pv", volume_name, "-o", "json").stdout)
        return Path(pv["spec"]["local"]["path"])

    return wait_for(f"claim {claim} to be bound", bound, timeout=60)


def wait_ready(stack: StackEnv, namespace: str) -> None:
    """Every pod of the application Running and Ready: web (2) and db-0."""

    def ready() -> bool:
        pods = json.loads(stack.kubectl("-n", namespace, "get", "pods", "-o", "json").stdout)["items"]
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        ok = [
            p for p in live
            if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
        ]  # fmt: skip
        names = {p["metadata"]["name"] for p in ok}
        return len([n for n in names if n.startswith("web-")]) == 2 and "db-0" in names

    wait_for(f"the pods of {namespace} to be Ready", ready, timeout=120)


def status_of(stack: StackEnv, kind: str, name: str) -> dict[str, Any]:
    out = stack.kubectl("-n", ADMIN, "get", kind, name, "-o", "json").stdout
    status: dict[str, Any] = json.loads(out).get("status") or {}
    return status


def wait_done(stack: StackEnv, services: Services, kind: str, name: str, timeout: float) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        status = status_of(stack, kind, name)
        return status if status.get("stage") == "Final" else None

    try:
        return wait_for(f"{kind} {name} to finish", final, timeout=timeout)
    except AssertionError:
        print(services.logs())
        raise


@pytest.fixture
def admin_location(stack: StackEnv, tmp_path: Path) -> Iterator[str]:
    """A local BackupLocation in the admin namespace; its backups and restores are removed afterwards."""
    name = f"loc-{uuid.uuid4().hex[:8]}"
    manifest = location_manifest(stack, "local", ADMIN, tmp_path)
    manifest["metadata"]["name"] = name
    apply(stack, manifest)
    made: list[tuple[str, str]] = []
    yield name
    for kind in ("applicationrestores", "applicationbackups"):
        items = json.loads(stack.kubectl("-n", ADMIN, "get", kind, "-o", "json").stdout)["items"]
        for item in items:
            if (item.get("spec") or {}).get("backupLocation") == name:
                made.append((kind, item["metadata"]["name"]))
    for kind, item_name in made:
        stack.kubectl("-n", ADMIN, "delete", kind, item_name, "--wait=false", check=False)
    stack.kubectl("-n", ADMIN, "delete", "backuplocation", name, "--wait=false", check=False)


def backup(stack: StackEnv, services: Services, location: str, namespace: str, name: str) -> None:
    body = {"backupLocation": location, "namespaces": [namespace], "reclaimPolicy": "Delete"}
    apply(stack, {"apiVersion": "davit.dev/v1alpha1", "kind": "ApplicationBackup",
                  "metadata": {"name": name, "namespace": ADMIN}, "spec": body})  # fmt: skip
    status = wait_done(stack, services, "applicationbackup", name, timeout=180)
    assert status["status"] == "Successful", status


def restore(stack: StackEnv, services: Services, location: str, name: str, backup_name: str,
            **spec: Any) -> dict[str, Any]:  # fmt: skip
    body = {"backupName": backup_name, "backupLocation": location, **spec}
    apply(stack, {"apiVersion": "davit.dev/v1alpha1", "kind": "ApplicationRestore",
                  "metadata": {"name": name, "namespace": ADMIN}, "spec": body})  # fmt: skip
    return wait_done(stack, services, "applicationrestore", name, timeout=240)


def delete_namespace(stack: StackEnv, namespace: str) -> None:
    stack.kubectl("delete", "namespace", namespace, "--wait=false")
    wait_for(
        f"namespace {namespace} to be gone",
        lambda: stack.kubectl("get", "namespace", namespace, check=False).returncode != 0,
        timeout=120,
    )


def test_round_trip_after_deleting_the_namespace(
    stack: StackEnv, namespace: str, services: Services, admin_location: str, tmp_path: Path
) -> None:
    volume = deploy_app(stack, namespace)
    original_files = tmp_path / "original-files"
    shutil.copytree(volume, original_files, symlinks=True)
    originals = objects_of(stack, namespace)
    assert len(originals) >= 15, sorted(originals)
    backup(stack, services, admin_location, namespace, "app")

    delete_namespace(stack, namespace)
    stack.kubectl("delete", "crd", "widgets.example.davit.dev")
    status = restore(stack, services, admin_location, "app-back", "app")
    assert status["status"] == "Successful", status
    assert status["volumesProgress"] == "1/1", status
    by_kind = status["resourcesByKind"]
    assert by_kind["Widget"]["restored"] == 2, by_kind
    assert by_kind["CustomResourceDefinition"]["restored"] == 1, by_kind
    assert all(counts["failed"] == 0 for counts in by_kind.values()), by_kind

    restored = objects_of(stack, namespace)
    assert sorted(restored) == sorted(originals)
    for key, original in originals.items():
        assert normalize(restored[key], {}) == normalize(original, {}), key
        if key == ("ServiceAccount", "default"):
            continue  # the ServiceAccount controller made it with the namespace: retained as it was
        labels = restored[key]["metadata"].get("labels") or {}
        assert labels.get("davit.dev/restore") == "app-back", key

    # Once the pods run, their init container has removed the node agent's marker from the volume.
    wait_ready(stack, namespace)
    assert_same_tree(original_files, volume_of(stack, namespace, "data-db-0"))


def resource_versions(stack: StackEnv, namespace: str) -> dict[tuple[str, str], tuple[str, str]]:
    return {
        key: (obj["metadata"]["uid"], obj["metadata"]["resourceVersion"])
        for key, obj in objects_of(stack, namespace).items()
    }


def test_into_another_namespace_then_retain_keeps_and_delete_replaces(
    stack: StackEnv, namespace: str, services: Services, admin_location: str, tmp_path: Path
) -> None:
    volume = deploy_app(stack, namespace)
    originals = objects_of(stack, namespace)
    backup(stack, services, admin_location, namespace, "twin")
    target = f"{namespace}-copy"
    mapping = {namespace: target}
    try:
        status = restore(stack, services, admin_location, "twin-1", "twin", namespaceMapping=mapping)
        assert status["status"] == "Successful", (status.get("reason"), status.get("resourcesByKind"))
        copied = objects_of(stack, target)
        assert sorted(copied) == sorted(originals)
        for key, original in originals.items():
            assert normalize(copied[key], {}) == normalize(original, mapping), key
        wait_ready(stack, target)
        assert_same_tree(volume, volume_of(stack, target, "data-db-0"))
        assert objects_of(stack, namespace).keys() == originals.keys(), "the original namespace changed"

        # Restored again with Retain: nothing is written, everything is reported Retained.
        before = resource_versions(stack, target)
        status = restore(stack, services, admin_location, "twin-2", "twin", namespaceMapping=mapping)
        assert status["status"] == "Successful", (status.get("reason"), status.get("resourcesByKind"))
        by_kind = status["resourcesByKind"]
        assert sum(c["restored"] + c["replaced"] + c["failed"] for c in by_kind.values()) == 0, by_kind
        assert by_kind["ConfigMap"]["retained"] >= 1 and by_kind["StatefulSet"]["retained"] == 1, by_kind
        assert resource_versions(stack, target) == before

        # With Delete: the objects are deleted and created again (new uids), the data written anew.
        status = restore(stack, services, admin_location, "twin-3", "twin", namespaceMapping=mapping,
                         replacePolicy="Delete")  # fmt: skip
        assert status["status"] == "Successful", (status.get("reason"), status.get("resourcesByKind"))
        by_kind = status["resourcesByKind"]
        assert by_kind["ConfigMap"]["replaced"] >= 1 and by_kind["StatefulSet"]["replaced"] == 1, by_kind
        after = resource_versions(stack, target)
        replaced = [k for k in before if k != ("ServiceAccount", "default")]
        assert all(after[k][0] != before[k][0] for k in replaced), "an object kept its uid"
        wait_ready(stack, target)
        assert_same_tree(volume, volume_of(stack, target, "data-db-0"))
    finally:
        stack.kubectl("delete", "namespace", target, "--wait=false", check=False)


def test_a_tenant_restore_mapping_into_another_namespace_fails_and_writes_nothing(
    stack: StackEnv, namespace: str, services: Services, tmp_path: Path
) -> None:
    apply(stack, location_manifest(stack, "local", namespace, tmp_path))
    apply(stack, APP.replace("NS", namespace).split("---")[3])  # the ConfigMap
    apply(stack, {"apiVersion": "davit.dev/v1alpha1", "kind": "ApplicationBackup",
                  "metadata": {"name": "mine", "namespace": namespace},
                  "spec": {"backupLocation": "loc", "namespaces": [namespace]}})  # fmt: skip
    elsewhere = f"{namespace}-other"
    stack.kubectl("create", "namespace", elsewhere)
    try:
        apply(stack, {"apiVersion": "davit.dev/v1alpha1", "kind": "ApplicationRestore",
                      "metadata": {"name": "escape", "namespace": namespace},
                      "spec": {"backupName": "mine", "backupLocation": "loc",
                               "namespaceMapping": {namespace: elsewhere}}})  # fmt: skip

        def final() -> dict[str, Any] | None:
            out = stack.kubectl("-n", namespace, "get", "applicationrestore", "escape", "-o", "json").stdout
            status: dict[str, Any] = json.loads(out).get("status") or {}
            return status if status.get("stage") == "Final" else None

        status = wait_for("the restore to be refused", final, timeout=60)
        assert status["status"] == "Failed"
        assert "namespaceMapping" in status["reason"], status
        configmaps = json.loads(stack.kubectl("-n", elsewhere, "get", "configmaps", "-o", "json").stdout)
        assert [c["metadata"]["name"] for c in configmaps["items"]] in ([], ["kube-root-ca.crt"])
    finally:
        stack.kubectl("delete", "namespace", elsewhere, "--wait=false", check=False)


def wait_available(stack: StackEnv, location: str) -> None:
    wait_for(
        f"location {location} to be Available",
        lambda: status_of(stack, "backuplocation", location).get("phase") == "Available",
        timeout=60,
    )


def clone(stack: StackEnv, services: Services, name: str, source: str, destination: str,
          **spec: Any) -> dict[str, Any]:  # fmt: skip
    body = {"sourceNamespace": source, "destinationNamespace": destination, **spec}
    apply(stack, {"apiVersion": "davit.dev/v1alpha1", "kind": "ApplicationClone",
                  "metadata": {"name": name, "namespace": ADMIN}, "spec": body})  # fmt: skip
    try:
        return wait_done(stack, services, "applicationclone", name, timeout=300)
    finally:
        stack.kubectl("-n", ADMIN, "delete", "applicationclone", name, "--wait=false", check=False)


def test_clone_with_data_and_a_clone_that_must_not_overwrite(
    stack: StackEnv, namespace: str, services: Services, admin_location: str, tmp_path: Path
) -> None:
    volume = deploy_app(stack, namespace)
    originals = objects_of(stack, namespace)
    wait_available(stack, admin_location)
    target, occupied = f"{namespace}-clone", f"{namespace}-taken"
    mapping = {namespace: target}
    try:
        status = clone(stack, services, "copy", namespace, target)
        assert status["status"] == "Successful", (status.get("reason"), status.get("resourcesByKind"))
        copied = objects_of(stack, target)
        assert sorted(copied) == sorted(originals)
        for key, original in originals.items():
            assert normalize(copied[key], {}) == normalize(original, mapping), key
        wait_ready(stack, target)
        assert_same_tree(volume, volume_of(stack, target, "data-db-0"))

        # replacePolicy Fail into a namespace that already holds the ConfigMap the clone would write.
        stack.kubectl("create", "namespace", occupied)
        stack.kubectl("-n", occupied, "create", "configmap", "settings", "--from-literal=mine=yes")
        before = resource_versions(stack, occupied)
        status = clone(stack, services, "careful", namespace, occupied, replacePolicy="Fail")
        assert status["status"] == "Failed", status
        assert "ConfigMap" in status["reason"] and "settings" in status["reason"], status["reason"]
        assert resource_versions(stack, occupied) == before, "the failed clone wrote something"
    finally:
        for created in (target, occupied):
            stack.kubectl("delete", "namespace", created, "--wait=false", check=False)


def test_a_dry_run_reports_what_it_would_do_and_changes_nothing(
    stack: StackEnv, namespace: str, services: Services, admin_location: str
) -> None:
    documents = APP.replace("NS", namespace).split("---")
    for document in documents[3:5]:  # the ConfigMap and the Secret
        apply(stack, document)
    backup(stack, services, admin_location, namespace, "small")
    target = f"{namespace}-dry"
    mapping = {namespace: target}
    try:
        status = restore(
            stack, services, admin_location, "dry-1", "small", namespaceMapping=mapping, dryRun=True
        )
        assert status["status"] == "Successful" and "dry run" in status["reason"], status
        by_kind = status["resourcesByKind"]
        assert by_kind["ConfigMap"] == {
            "restored": 1,
            "retained": 0,
            "replaced": 0,
            "updated": 0,
            "failed": 0,
        }, by_kind
        assert by_kind["Secret"]["restored"] == 1 and by_kind["Namespace"]["restored"] == 1, by_kind
        assert stack.kubectl("get", "namespace", target, check=False).returncode != 0, "the dry run wrote"

        stack.kubectl("create", "namespace", target)
        stack.kubectl("-n", target, "create", "configmap", "settings", "--from-literal=mine=yes")
        before = resource_versions(stack, target)
        status = restore(stack, services, admin_location, "dry-2", "small", namespaceMapping=mapping,
                         dryRun=True, replacePolicy="Delete")  # fmt: skip
        by_kind = status["resourcesByKind"]
        assert by_kind["ConfigMap"]["replaced"] == 1 and by_kind["Secret"]["restored"] == 1, by_kind
        assert resource_versions(stack, target) == before, "the dry run wrote"
    finally:
        stack.kubectl("delete", "namespace", target, "--wait=false", check=False)


def test_node_mapping_moves_a_node_bound_volume_to_another_node(
    stack: StackEnv, namespace: str, services: Services, admin_location: str
) -> None:
    """The OpenEBS Local PV case: a volume bound to one node comes back on the node the mapping names, data
    included (the claim's selected node and so its new volume's node affinity are mapped)."""
    volume = deploy_app(stack, namespace)
    claim = json.loads(stack.kubectl("-n", namespace, "get", "pvc", "data-db-0", "-o", "json").stdout)
    old_node = claim["metadata"]["annotations"]["volume.kubernetes.io/selected-node"]
    new_node = next(n for n in stack.env["DEV_NODES"].split(",") if n != old_node)
    backup(stack, services, admin_location, namespace, "pinned")
    target = f"{namespace}-moved"
    try:
        status = restore(stack, services, admin_location, "moved", "pinned",
                         namespaceMapping={namespace: target}, nodeMapping={old_node: new_node})  # fmt: skip
        assert status["status"] == "Successful", (status.get("reason"), status.get("resourcesByKind"))
        moved = json.loads(stack.kubectl("-n", target, "get", "pvc", "data-db-0", "-o", "json").stdout)
        assert moved["metadata"]["annotations"]["volume.kubernetes.io/selected-node"] == new_node
        pv = json.loads(stack.kubectl("get", "pv", moved["spec"]["volumeName"], "-o", "json").stdout)
        terms = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"]
        assert [e["values"] for t in terms for e in t["matchExpressions"]] == [[new_node]], terms
        pod = json.loads(stack.kubectl("-n", target, "get", "pod", "db-0", "-o", "json").stdout)
        assert pod["spec"]["nodeName"] == new_node
        wait_ready(stack, target)
        assert_same_tree(volume, volume_of(stack, target, "data-db-0"))
    finally:
        stack.kubectl("delete", "namespace", target, "--wait=false", check=False)
