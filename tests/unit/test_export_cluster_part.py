"""The cluster-scoped part of a backup (davit_services.resources.export.cluster_part) on the in-memory
fakes, read back from a real local repository: what the namespace's objects need by default, every
cluster-scoped object with ``true`` in the admin namespace and never for a tenant, Namespaces only with
``false``; needed objects proven against the API rather than taken from the scratch state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from davit.api.objects import RawObject
from davit.constants import Kind, Queue
from davit.format.layout import BackupRef
from davit.operations.messages import Message
from davit.operations.ports import Ports
from davit.settings import Settings
from davit_services.resources import export
from tests.fakes import cluster as k
from tests.fakes.dispatch import FakeDispatch
from tests.fakes.scratch import ScratchFactory
from tests.fakes.stores import LocalStores

BACKUP = Kind.APPLICATION_BACKUP
UID = "uid-b1"
ADMIN = Settings().admin_namespace
RBAC = "rbac.authorization.k8s.io"

RESOURCES = (
    *k.DEFAULT_RESOURCES,
    k._resource(RBAC, "v1", "roles", "Role"),
    k._resource(RBAC, "v1", "rolebindings", "RoleBinding"),
    k._resource(RBAC, "v1", "clusterroles", "ClusterRole", namespaced=False),
    k._resource(RBAC, "v1", "clusterrolebindings", "ClusterRoleBinding", namespaced=False),
    k._resource("storage.k8s.io", "v1", "storageclasses", "StorageClass", namespaced=False),
    k._resource("scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", namespaced=False),
    k._resource("networking.k8s.io", "v1", "ingresses", "Ingress"),
    k._resource("extensions", "v1beta1", "ingresses", "Ingress"),
)


def cluster_object(api_version: str, kind: str, name: str, **fields: Any) -> RawObject:
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": name}, **fields}


def role(name: str) -> RawObject:
    return cluster_object(
        f"{RBAC}/v1",
        "ClusterRole",
        name,
        rules=[{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
    )


def cluster_binding(name: str, role_name: str, *subjects: dict[str, str]) -> RawObject:
    return cluster_object(
        f"{RBAC}/v1",
        "ClusterRoleBinding",
        name,
        roleRef={"apiGroup": RBAC, "kind": "ClusterRole", "name": role_name},
        subjects=list(subjects),
    )


def account(namespace: str, name: str) -> dict[str, str]:
    return {"kind": "ServiceAccount", "namespace": namespace, "name": name}


@pytest.fixture
def fake() -> k.FakeCluster:
    cluster = k.FakeCluster(resources=RESOURCES)
    cluster.put(
        k.location("loc", "app"),
        k.location("loc", ADMIN),
        k.namespace("app"),
        k.namespace("other"),
        k.node("node-1"),
    )
    # What app's objects use.
    cluster.put(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "web", "namespace": "app"}},
        k.claim("data", "app", volume="pv-app", storage_class="fast"),
        k.volume("pv-app", claim=("app", "data")),
        {**k.pod("web-0", "app"), "spec": {"priorityClassName": "high", "containers": [{"name": "c"}]}},
        {
            "apiVersion": f"{RBAC}/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "viewers", "namespace": "app"},
            "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "view"},
            "subjects": [account("app", "web")],
        },
        cluster_binding("app-web-reader", "reader", account("app", "web")),
        role("reader"),
        role("view"),
        cluster_object("storage.k8s.io/v1", "StorageClass", "fast", provisioner="example.com/fast"),
        cluster_object("scheduling.k8s.io/v1", "PriorityClass", "high", value=1000),
    )
    # What only others use: another namespace's binding (of an account named like app's), its role, a
    # class nobody in app uses, and the other namespace's volume.
    cluster.put(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "web", "namespace": "other"}},
        cluster_binding("other-web-admin", "cluster-admin", account("other", "web")),
        role("cluster-admin"),
        cluster_object("storage.k8s.io/v1", "StorageClass", "slow", provisioner="example.com/slow"),
        k.volume("pv-other", claim=("other", "data")),
    )
    return cluster


@pytest.fixture
def stores(fake: k.FakeCluster, tmp_path: Path) -> LocalStores:
    return LocalStores(tmp_path / "locations", cluster=fake)


@pytest.fixture
def ports(fake: k.FakeCluster, scratch_factory: ScratchFactory, stores: LocalStores) -> Ports:
    return Ports(fake, scratch_factory, FakeDispatch(), stores, Settings(export_page_size=2))


def run_backup(ports: Ports, fake: k.FakeCluster, namespace: str = "app", **spec: Any) -> RawObject:
    """A backup of ``app`` in ``namespace`` through the whole Applications stage."""
    spec.setdefault("namespaces", ["app"])
    obj = fake.put(
        k.backup(
            "b1", namespace, stage="Applications", status="Pending", uid=UID, backupLocation="loc", **spec
        )
    )
    dispatch = ports.dispatch
    assert isinstance(dispatch, FakeDispatch)
    export.handle(ports, Message(BACKUP, namespace, "b1", UID, "Applications", ""))
    done = 0
    while done < len(dispatch.to(Queue.EXPORT.value)):
        export.handle(ports, dispatch.to(Queue.EXPORT.value)[done])
        done += 1
    return obj


def stored_cluster_part(stores: LocalStores, namespace: str = "app") -> set[tuple[str, str]]:
    repository = stores.repository(namespace, "loc")
    return {
        (o["kind"], o["metadata"]["name"])
        for o in repository.read_part(BackupRef(namespace, "b1", UID).resource_part("_cluster"))
    }


#: What app's objects need: its Namespace, its claim's volume and class, its pod's PriorityClass, the
#: binding of its account and the roles it and the RoleBinding grant.
NEEDED = {
    ("Namespace", "app"),
    ("PersistentVolume", "pv-app"),
    ("StorageClass", "fast"),
    ("PriorityClass", "high"),
    ("ClusterRoleBinding", "app-web-reader"),
    ("ClusterRole", "reader"),
    ("ClusterRole", "view"),
}


@pytest.mark.parametrize("namespace", ["app", ADMIN], ids=["tenant", "admin"])
def test_by_default_a_backup_stores_what_its_objects_need(
    ports: Ports, fake: k.FakeCluster, stores: LocalStores, namespace: str
) -> None:
    obj = run_backup(ports, fake, namespace)
    assert fake.status(obj)["stage"] == "PostExecRule"
    assert stored_cluster_part(stores, namespace) == NEEDED


def test_a_tenants_true_is_taken_as_unset_where_the_objects_are_read(
    ports: Ports, fake: k.FakeCluster, stores: LocalStores
) -> None:
    """Validation refuses it; a backup accepted with it anyway (an older version) gets no more."""
    run_backup(ports, fake, "app", includeClusterResources=True)
    stored = stored_cluster_part(stores)
    assert stored == NEEDED
    assert ("ClusterRoleBinding", "other-web-admin") not in stored


def test_true_in_the_admin_namespace_stores_every_cluster_scoped_object_but_nodes(
    ports: Ports, fake: k.FakeCluster, stores: LocalStores
) -> None:
    run_backup(ports, fake, ADMIN, includeClusterResources=True)
    stored = stored_cluster_part(stores, ADMIN)
    assert stored >= NEEDED
    assert {
        ("ClusterRoleBinding", "other-web-admin"),
        ("ClusterRole", "cluster-admin"),
        ("StorageClass", "slow"),
        ("PersistentVolume", "pv-other"),
    } <= stored
    assert ("Node", "node-1") not in stored and ("Namespace", "other") not in stored


@pytest.mark.parametrize("namespace", ["app", ADMIN], ids=["tenant", "admin"])
def test_false_stores_the_namespaces_only(
    ports: Ports, fake: k.FakeCluster, stores: LocalStores, namespace: str
) -> None:
    run_backup(ports, fake, namespace, includeClusterResources=False)
    assert stored_cluster_part(stores, namespace) == {("Namespace", "app")}


def test_bindings_follow_the_service_accounts_the_backup_covers(
    ports: Ports, fake: k.FakeCluster, stores: LocalStores
) -> None:
    run_backup(ports, fake, "app", resourceTypes=["configmaps"])
    assert stored_cluster_part(stores) == {("Namespace", "app")}


def entry(ref: tuple[str, str, str], source: dict[str, Any]) -> str:
    api_version, plural, name = ref
    return json.dumps({"ref": {"api_version": api_version, "plural": plural, "name": name}, "source": source})


POD_SOURCE = {"apiVersion": "v1", "plural": "pods", "kind": "Pod", "namespace": "app", "name": "web-0"}


def cluster_message(namespace: str = "app") -> Message:
    return Message(BACKUP, namespace, "b1", UID, "Applications", "_cluster")


def test_a_needed_object_the_scratch_state_makes_up_is_not_stored(
    ports: Ports, fake: k.FakeCluster, stores: LocalStores, scratch_factory: ScratchFactory
) -> None:
    """The pages record which object needs what; the cluster part reads that object again and stores
    the need only if the API confirms it. Here the recorded pod does not use the role, and the other
    recorded pod does not exist."""
    fake.put(
        k.backup(
            "b1",
            "app",
            stage="Applications",
            status="Pending",
            uid=UID,
            backupLocation="loc",
            namespaces=["app"],
        )
    )
    state = scratch_factory.backup(UID)
    state.save_namespaces(["app"])
    state.add_pending(["_cluster"])
    state.record_part(
        "forged",
        {"part": "forged"},
        [
            entry((f"{RBAC}/v1", "clusterroles", "cluster-admin"), POD_SOURCE),
            entry(("v1", "persistentvolumes", "pv-other"), {**POD_SOURCE, "name": "ghost"}),
            entry(("scheduling.k8s.io/v1", "priorityclasses", "high"), POD_SOURCE),
        ],
    )

    export.handle(ports, cluster_message())

    stored = stored_cluster_part(stores)
    assert ("PriorityClass", "high") in stored, "a need the API confirms is stored"
    assert ("ClusterRole", "cluster-admin") not in stored and ("PersistentVolume", "pv-other") not in stored


@pytest.mark.parametrize(
    "source",
    [
        pytest.param({**POD_SOURCE, "namespace": "other"}, id="another-namespace"),
        pytest.param({**POD_SOURCE, "name": "../../../api/v1/nodes"}, id="path-in-name"),
        pytest.param("not a source", id="garbage"),
    ],
)
def test_a_needed_entry_outside_the_backup_fails_it(
    ports: Ports, fake: k.FakeCluster, stores: LocalStores, scratch_factory: ScratchFactory, source: Any
) -> None:
    obj = fake.put(
        k.backup(
            "b1",
            "app",
            stage="Applications",
            status="Pending",
            uid=UID,
            backupLocation="loc",
            namespaces=["app"],
        )
    )
    state = scratch_factory.backup(UID)
    state.save_namespaces(["app"])
    state.add_pending(["_cluster"])
    state.record_part("forged", {"part": "forged"}, [entry(("v1", "persistentvolumes", "pv-other"), source)])

    export.handle(ports, cluster_message())

    assert fake.status(obj)["status"] == "Failed" and fake.reasons() == ["ScopeRefused"]
    repository = stores.repository("app", "loc")
    assert not list(repository.store.list(BackupRef("app", "b1", UID).root + "resources/"))


def test_a_tenants_backup_never_stores_a_binding_of_another_namespaces_account(
    ports: Ports, fake: k.FakeCluster, stores: LocalStores, scratch_factory: ScratchFactory
) -> None:
    """Even when the scratch state names it as needed by a real object of the tenant's."""
    fake.put(
        k.backup(
            "b1",
            "app",
            stage="Applications",
            status="Pending",
            uid=UID,
            backupLocation="loc",
            namespaces=["app"],
            includeClusterResources=True,
        )
    )
    state = scratch_factory.backup(UID)
    state.save_namespaces(["app"])
    state.add_pending(["_cluster"])
    state.record_part(
        "forged",
        {"part": "forged"},
        [
            entry((f"{RBAC}/v1", "clusterrolebindings", "other-web-admin"), POD_SOURCE),
        ],
    )

    export.handle(ports, cluster_message())

    assert ("ClusterRoleBinding", "other-web-admin") not in stored_cluster_part(stores)


def test_an_ingress_served_by_two_groups_is_stored_once(
    ports: Ports, fake: k.FakeCluster, stores: LocalStores
) -> None:
    fake.put(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "web", "namespace": "app"},
        }
    )
    run_backup(ports, fake, "app")
    repository = stores.repository("app", "loc")
    ref = BackupRef("app", "b1", UID)
    keys = [info.key for info in repository.store.list(ref.root + "resources/")]
    ingresses = [
        (o["apiVersion"], o["metadata"]["name"])
        for key in keys
        for o in repository.read_part(key)
        if o["kind"] == "Ingress"
    ]
    assert ingresses == [("networking.k8s.io/v1", "web")]


def test_a_tenants_claim_naming_another_namespaces_volume_does_not_bring_it_or_its_class(
    ports: Ports, fake: k.FakeCluster, stores: LocalStores
) -> None:
    """A tenant may write any volumeName into a claim of its own: the volume is stored only if bound to
    one of the namespace's claims, and what a refused volume needs is not read either."""
    fake.put(
        {
            **k.volume("pv-other", claim=("other", "data")),
            "spec": {**k.volume("pv-other", claim=("other", "data"))["spec"], "storageClassName": "slow"},
        }
    )
    fake.put(k.claim("stolen", "app", volume="pv-other"))
    run_backup(ports, fake, "app")
    stored = stored_cluster_part(stores)
    assert ("PersistentVolume", "pv-other") not in stored and ("StorageClass", "slow") not in stored
    assert stored == NEEDED
