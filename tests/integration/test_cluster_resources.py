"""Cluster-scoped objects on the real stack: by default a backup holds the ClusterRoleBindings of its
namespace's service accounts, the ClusterRoles they grant, its claims' StorageClasses and its workloads'
PriorityClasses; deleted, they come back from a restore in the admin namespace (an existing one is kept
and counted retained). A tenant's backup never stores another namespace's ClusterRoleBinding, even with
``includeClusterResources: true`` got past validation; with a watcher that validates, the tenant's
``true`` is refused with a reason and an Event. An Ingress, served by two groups in 1.20, is stored once.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from davit.api.types import LocationSpec
from davit.format.layout import BackupRef
from davit.storage import factory
from tests.conftest import StackEnv
from tests.helpers import wait_for
from tests.integration import test_restore
from tests.integration.conftest import Services
from tests.integration.tenants import events_of
from tests.integration.tenants import wait_final as wait_operation
from tests.integration.test_backup_resources import apply, backup_manifest, location_manifest, repository_for
from tests.integration.test_restore import ADMIN, restore, wait_done

pytestmark = pytest.mark.integration

RBAC = "rbac.authorization.k8s.io"


def app_manifest(namespace: str, tag: str) -> str:
    """An application whose account holds a ClusterRole through a ClusterRoleBinding, whose claim uses its
    own StorageClass and whose Deployment its own PriorityClass (names unique to the test: ``tag``)."""
    return f"""
apiVersion: v1
kind: ServiceAccount
metadata: {{name: app, namespace: {namespace}}}
---
apiVersion: {RBAC}/v1
kind: ClusterRole
metadata: {{name: {tag}-reader}}
rules:
- {{apiGroups: [""], resources: [nodes, namespaces], verbs: [get, list]}}
- {{apiGroups: [storage.k8s.io], resources: [storageclasses], verbs: [get]}}
---
apiVersion: {RBAC}/v1
kind: ClusterRoleBinding
metadata: {{name: {tag}-reader}}
roleRef: {{apiGroup: {RBAC}, kind: ClusterRole, name: {tag}-reader}}
subjects: [{{kind: ServiceAccount, name: app, namespace: {namespace}}}]
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {{name: {tag}-fast}}
provisioner: davit.dev/dev-local
parameters: {{tier: fast}}
reclaimPolicy: Delete
volumeBindingMode: WaitForFirstConsumer
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {{name: {tag}-high}}
value: 100000
description: the test's workloads
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: data, namespace: {namespace}}}
spec:
  storageClassName: {tag}-fast
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 1Gi}}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {namespace}}}
spec:
  replicas: 0
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      serviceAccountName: app
      priorityClassName: {tag}-high
      containers: [{{name: web, image: nginx}}]
"""


def backup(stack: StackEnv, services: Services, location: str, namespace: str, name: str) -> None:
    """A backup of ``namespace`` from the admin namespace, resources only (its claim is never bound)."""
    body = {
        "backupLocation": location,
        "namespaces": [namespace],
        "reclaimPolicy": "Delete",
        "volumeMode": "skip",
    }
    apply(
        stack,
        {
            "apiVersion": "davit.dev/v1alpha1",
            "kind": "ApplicationBackup",
            "metadata": {"name": name, "namespace": ADMIN},
            "spec": body,
        },
    )
    status = wait_done(stack, services, "applicationbackup", name, timeout=180)
    assert status["status"] == "Successful", status


def get_json(stack: StackEnv, *args: str) -> dict[str, Any] | None:
    out = stack.kubectl("get", *args, "-o", "json", check=False)
    if out.returncode != 0:
        assert "NotFound" in out.stderr, out.stderr
        return None
    found: dict[str, Any] = json.loads(out.stdout)
    return found


@pytest.fixture
def tag(stack: StackEnv, namespace: str) -> Iterator[str]:
    """A prefix for the test's cluster-scoped objects, which are deleted afterwards."""
    prefix = namespace
    yield prefix
    for kind, name in (
        ("clusterrolebinding", f"{prefix}-reader"),
        ("clusterrole", f"{prefix}-reader"),
        ("clusterrolebinding", f"{prefix}-planted"),
        ("storageclass", f"{prefix}-fast"),
        ("priorityclass", f"{prefix}-high"),
    ):
        stack.kubectl("delete", kind, name, "--ignore-not-found", "--wait=false", check=False)


def stored_objects(repository: Any, ref: BackupRef) -> list[dict[str, Any]]:
    """Every object the backup's manifest lists parts for, read back from the location."""
    manifest = repository.read_manifest(ref)
    return [o for part in manifest["parts"] for o in repository.read_part(part["key"])]


def uid_of(stack: StackEnv, kind: str, namespace: str, name: str) -> str:
    """The uid of an object (``namespace`` "" for a cluster-scoped one)."""
    found = get_json(stack, *(["-n", namespace] if namespace else []), kind, name)
    assert found is not None
    return str(found["metadata"]["uid"])


def admin_repository(stack: StackEnv, location: str) -> Any:
    found = get_json(stack, "-n", ADMIN, "backuplocation", location)
    assert found is not None
    return repository_for(found)


def test_a_cluster_role_and_its_binding_come_back_after_both_were_deleted(
    stack: StackEnv, namespace: str, tag: str, services: Services, location: str
) -> None:
    apply(stack, app_manifest(namespace, tag))
    originals = {
        (kind, name): get_json(stack, kind, name)
        for kind, name in (
            ("clusterrole", f"{tag}-reader"),
            ("clusterrolebinding", f"{tag}-reader"),
            ("storageclass", f"{tag}-fast"),
            ("priorityclass", f"{tag}-high"),
        )
    }
    backup(stack, services, location, namespace, f"{tag}-b")

    # The backup holds the four, and no binding of anybody else's account.
    ref = BackupRef(ADMIN, f"{tag}-b", uid_of(stack, "applicationbackup", ADMIN, f"{tag}-b"))
    stored = stored_objects(admin_repository(stack, location), ref)
    cluster = {(o["kind"], o["metadata"]["name"]) for o in stored if not o["metadata"].get("namespace")}
    assert {
        ("ClusterRole", f"{tag}-reader"),
        ("ClusterRoleBinding", f"{tag}-reader"),
        ("StorageClass", f"{tag}-fast"),
        ("PriorityClass", f"{tag}-high"),
        ("Namespace", namespace),
    } <= cluster, cluster
    bindings = [o for o in stored if o["kind"] == "ClusterRoleBinding"]
    assert [b["metadata"]["name"] for b in bindings] == [f"{tag}-reader"], "only the app's account's binding"

    stack.kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=120s")
    for kind, name in originals:
        stack.kubectl("delete", kind, name)
        assert get_json(stack, kind, name) is None

    status = restore(stack, services, location, f"{tag}-r", f"{tag}-b")
    assert status["status"] == "Successful", status
    by_kind = status["resourcesByKind"]
    for kind in ("ClusterRole", "ClusterRoleBinding", "StorageClass", "PriorityClass"):
        assert by_kind[kind]["restored"] == 1, by_kind

    for (kind, name), original in originals.items():
        assert original is not None
        back = get_json(stack, kind, name)
        assert back is not None, f"{kind} {name} did not come back"
        for field in ("rules", "roleRef", "subjects", "provisioner", "parameters", "value"):
            assert back.get(field) == original.get(field), (kind, field)
    claim = get_json(stack, "-n", namespace, "persistentvolumeclaim", "data")
    deployment = get_json(stack, "-n", namespace, "deployment", "web")
    assert claim is not None and claim["spec"]["storageClassName"] == f"{tag}-fast"
    assert (
        deployment is not None
        and deployment["spec"]["template"]["spec"]["priorityClassName"] == f"{tag}-high"
    )

    # Restored again with replacePolicy Delete over a changed ClusterRole: cluster-scoped objects that
    # exist are kept as they are (never overwritten) and counted retained.
    changed = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]
    stack.kubectl(
        "patch", "clusterrole", f"{tag}-reader", "--type=merge", "-p", json.dumps({"rules": changed})
    )
    binding_uid = uid_of(stack, "clusterrolebinding", "", f"{tag}-reader")
    status = restore(stack, services, location, f"{tag}-r2", f"{tag}-b", replacePolicy="Delete")
    assert status["status"] == "Successful", status
    by_kind = status["resourcesByKind"]
    for kind in ("ClusterRole", "ClusterRoleBinding", "StorageClass", "PriorityClass"):
        assert by_kind[kind] == {"restored": 0, "retained": 1, "replaced": 0, "updated": 0, "failed": 0}, (
            kind,
            by_kind,
        )
    role = get_json(stack, "clusterrole", f"{tag}-reader")
    assert role is not None and role["rules"] == changed
    assert uid_of(stack, "clusterrolebinding", "", f"{tag}-reader") == binding_uid


#: A local BackupLocation in the admin namespace, cleaned up after the test (the restore tests' fixture).
admin_location = test_restore.admin_location


@pytest.fixture
def location(admin_location: str) -> str:
    return admin_location


@pytest.fixture
def unstarted(stack: StackEnv, tmp_path: Path) -> Iterator[Services]:
    """The services, none started yet: the test starts each with its own settings."""
    import redis

    redis.Redis.from_url(stack.redis_url).flushdb()
    running = Services(stack, tmp_path / "logs")
    running.log_dir.mkdir()
    yield running
    running.stop_all()
    stack.kubectl("-n", ADMIN, "delete", "lease", running.lease, "--ignore-not-found")


@pytest.fixture
def other_namespace(stack: StackEnv) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    stack.kubectl("create", "namespace", name)
    yield name
    stack.kubectl("delete", "namespace", name, "--wait=false", check=False)


def plant_bindings(stack: StackEnv, tenant: str, other: str, tag: str) -> None:
    """The tenant's account ``app`` bound to a ClusterRole, and a binding of another namespace's account
    of the same name to cluster-admin (made by the cluster's admins, not by the tenant)."""
    apply(stack, app_manifest(tenant, tag))
    apply(
        stack,
        f"""
apiVersion: v1
kind: ServiceAccount
metadata: {{name: app, namespace: {other}}}
---
apiVersion: {RBAC}/v1
kind: ClusterRoleBinding
metadata: {{name: {tag}-planted}}
roleRef: {{apiGroup: {RBAC}, kind: ClusterRole, name: cluster-admin}}
subjects: [{{kind: ServiceAccount, name: app, namespace: {other}}}]
""",
    )


def test_a_tenants_backup_with_true_never_stores_another_namespaces_binding(
    stack: StackEnv,
    namespace: str,
    other_namespace: str,
    tag: str,
    unstarted: Services,
    tmp_path: Path,
) -> None:
    """The attack: ``includeClusterResources: true`` from a tenant namespace, accepted by a watcher that
    takes the tenant's namespace for the admin one (as if validation were bypassed); the workers apply
    the rule themselves where they read the cluster."""
    plant_bindings(stack, namespace, other_namespace, tag)
    location = location_manifest(stack, "s3", namespace, tmp_path)
    apply(stack, location)
    running = unstarted
    running.start("watcher", DAVIT_ADMIN_NAMESPACE=namespace)
    for service in ("backup", "resources"):
        running.start(service)
    apply(stack, backup_manifest(namespace, "everything", includeClusterResources=True, volumeMode="skip"))
    status = wait_operation(stack, running, "applicationbackup", namespace, "everything")
    assert status["status"] == "Successful", status

    ref = BackupRef(namespace, "everything", uid_of(stack, "applicationbackup", namespace, "everything"))
    stored = stored_objects(repository_for(location), ref)
    names = {(o["kind"], o["metadata"]["name"]) for o in stored}
    assert ("ClusterRoleBinding", f"{tag}-planted") not in names
    assert ("ClusterRole", "cluster-admin") not in names
    assert ("ClusterRoleBinding", f"{tag}-reader") in names, "its own account's binding is kept"
    cluster_kinds = {o["kind"] for o in stored if not o["metadata"].get("namespace")}
    assert cluster_kinds <= {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "StorageClass",
        "PriorityClass",
    }
    assert {n for k, n in names if k == "Namespace"} == {namespace}
    for o in stored:
        if o["kind"] == "ClusterRoleBinding":
            assert {s.get("namespace") for s in o.get("subjects") or []} == {namespace}, o


def test_a_tenants_true_is_refused_with_a_reason_and_an_event(
    stack: StackEnv, namespace: str, services: Services, tmp_path: Path
) -> None:
    location = location_manifest(stack, "s3", namespace, tmp_path)
    apply(stack, location)
    apply(stack, backup_manifest(namespace, "everything", includeClusterResources=True))
    status = wait_operation(stack, services, "applicationbackup", namespace, "everything")
    assert status["status"] == "Failed", status
    assert "spec.includeClusterResources" in status["reason"] and ADMIN in status["reason"], status
    # The Event is written after the status that fails the backup: wait for it, not for the status.
    wait_for(
        "the Warning Event naming includeClusterResources",
        lambda: any(
            e["type"] == "Warning" and "includeClusterResources" in e["message"]
            for e in events_of(stack, namespace, "everything")
        ),
    )
    spec = LocationSpec.model_validate(location["location"])
    store = factory.open_store(factory.resolve_credentials(spec, None))
    assert not [info.key for info in store.list("") if info.key.startswith("backups/")], "nothing stored"


def test_an_ingress_served_by_two_groups_is_stored_and_restored_once(
    stack: StackEnv, namespace: str, services: Services, location: str, tag: str
) -> None:
    """kube-apiserver 1.20 serves every Ingress as extensions/v1beta1 and networking.k8s.io/v1 (checked
    first: the test means something only while it does)."""
    groups = json.loads(stack.kubectl("get", "--raw", "/apis/extensions/v1beta1").stdout)
    assert "ingresses" in {r["name"] for r in groups["resources"]}
    apply(
        stack,
        f"""
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: web, namespace: {namespace}}}
spec:
  defaultBackend: {{service: {{name: web, port: {{number: 80}}}}}}
""",
    )
    served = json.loads(
        stack.kubectl("get", "--raw", f"/apis/extensions/v1beta1/namespaces/{namespace}/ingresses").stdout
    )
    assert [i["metadata"]["name"] for i in served["items"]] == ["web"], "the same object, under the old group"

    backup(stack, services, location, namespace, f"{tag}-ing")
    ref = BackupRef(ADMIN, f"{tag}-ing", uid_of(stack, "applicationbackup", ADMIN, f"{tag}-ing"))
    repository = admin_repository(stack, location)
    ingresses = [
        (o["apiVersion"], o["metadata"]["name"])
        for o in stored_objects(repository, ref)
        if o["kind"] == "Ingress"
    ]
    assert ingresses == [("networking.k8s.io/v1", "web")]
    manifest = repository.read_manifest(ref)
    assert [r for r in manifest["resources"] if r["kind"] == "Ingress"] == [
        {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "web", "namespace": namespace}
    ]

    stack.kubectl("-n", namespace, "delete", "ingress", "web")
    status = restore(stack, services, location, f"{tag}-ing-r", f"{tag}-ing")
    assert status["status"] == "Successful", status
    assert status["resourcesByKind"]["Ingress"] == {
        "restored": 1,
        "retained": 0,
        "replaced": 0,
        "updated": 0,
        "failed": 0,
    }
