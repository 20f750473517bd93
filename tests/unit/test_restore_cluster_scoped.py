"""Cluster-scoped objects in a restore, on the in-memory fakes with a real backup in a local repository:
restored from the admin namespace in tier order (ClusterRoles before their bindings, StorageClasses and
PriorityClasses before claims and pods), an existing one kept as it is and counted retained (also with
``replacePolicy: Delete``), none written by a tenant's restore."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from davit.api.objects import RawObject
from davit.api.types import Stage
from davit.constants import Kind, Queue
from davit.format.layout import BackupRef
from davit.operations.messages import Message
from davit.operations.ports import Ports
from davit.settings import Settings
from davit_services.restore import restore
from tests.fakes import cluster as fakes
from tests.fakes.dispatch import FakeDispatch
from tests.fakes.scratch import ScratchFactory
from tests.fakes.stores import LocalStores
from tests.unit.test_export_cluster_part import RESOURCES

ADMIN = Settings().admin_namespace
RBAC = "rbac.authorization.k8s.io"
UID = "b0000000-0000-4000-8000-000000000002"
RESTORE_UID = "70000000-0000-4000-8000-000000000002"


def obj(api_version: str, kind: str, name: str, namespace: str | None = None, **fields: Any) -> RawObject:
    meta = {"name": name, "uid": f"old-{name}", "resourceVersion": "9"}
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {**meta, **({"namespace": namespace} if namespace else {})},
        **fields,
    }


BACKED_UP = [
    obj("v1", "Namespace", "app"),
    obj(
        f"{RBAC}/v1",
        "ClusterRoleBinding",
        "app-reader",
        roleRef={"apiGroup": RBAC, "kind": "ClusterRole", "name": "reader"},
        subjects=[{"kind": "ServiceAccount", "name": "web", "namespace": "app"}],
    ),
    obj(
        f"{RBAC}/v1",
        "ClusterRole",
        "reader",
        rules=[{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
    ),
    obj("scheduling.k8s.io/v1", "PriorityClass", "high", value=1000),
    obj("storage.k8s.io/v1", "StorageClass", "fast", provisioner="example.com/fast"),
    obj("v1", "Pod", "web-0", "app", spec={"priorityClassName": "high", "containers": [{"name": "c"}]}),
    obj("v1", "PersistentVolumeClaim", "data", "app", spec={"storageClassName": "fast"}),
    obj("v1", "ServiceAccount", "web", "app"),
]


class Restoring:
    def __init__(self, tmp_path: Path, scratch: ScratchFactory, namespace: str) -> None:
        self.cluster = fakes.FakeCluster(resources=RESOURCES)
        self.cluster.put(fakes.node("node-1"), fakes.location("loc", namespace))
        self.stores = LocalStores(tmp_path / "locations", cluster=self.cluster)
        self.dispatch = FakeDispatch()
        self.ports = Ports(self.cluster, scratch, self.dispatch, self.stores, Settings())
        self.namespace = namespace
        self.cluster.put(
            fakes.backup(
                "b1",
                namespace,
                stage="Final",
                status="Successful",
                uid=UID,
                backupLocation="loc",
                namespaces=["app"],
            )
        )
        repository = self.stores.repository(namespace, "loc")
        ref = BackupRef(namespace, "b1", UID)
        info = repository.write_part(ref, "objects", BACKED_UP)
        repository.write_manifest(
            ref,
            {
                "backup": {"metadata": {"namespace": namespace, "name": "b1", "uid": UID}},
                "parts": [{"part": info.part, "key": info.key, "count": info.count}],
                "volumes": [],
            },
        )
        self.created: list[str] = []
        create = self.cluster.create_object

        def recording(resource: Any, scope: Any, body: RawObject) -> RawObject:
            self.created.append(f"{body['kind']}/{body['metadata']['name']}")
            return create(resource, scope, body)

        self.cluster.create_object = recording  # type: ignore[method-assign,assignment]

    def run(self, **spec: Any) -> dict[str, Any]:
        self.cluster.put(
            fakes.restore(
                "r1",
                self.namespace,
                stage="Initial",
                uid=RESTORE_UID,
                backupName="b1",
                backupLocation="loc",
                **spec,
            )
        )
        restore.handle(
            self.ports,
            Message(Kind.APPLICATION_RESTORE, self.namespace, "r1", RESTORE_UID, Stage.INITIAL.value),
        )
        for _ in range(50):
            messages = self.dispatch.to(Queue.RESTORE.value)
            self.dispatch.clear()
            if not messages:
                break
            for message in messages:
                restore.handle(self.ports, message)
        found = self.cluster.find(Kind.APPLICATION_RESTORE, self.namespace, "r1")
        assert found is not None
        return dict(found.get("status") or {})


def counts(**outcomes: int) -> dict[str, int]:
    return {"restored": 0, "retained": 0, "replaced": 0, "updated": 0, "failed": 0, **outcomes}


def test_an_admin_restore_creates_cluster_scoped_objects_in_tier_order(
    tmp_path: Path, scratch_factory: ScratchFactory
) -> None:
    world = Restoring(tmp_path, scratch_factory, ADMIN)
    status = world.run()
    assert status["status"] == "Successful", status
    order = world.created
    assert order.index("ClusterRole/reader") < order.index("ClusterRoleBinding/app-reader")
    assert order.index("ServiceAccount/web") < order.index("ClusterRoleBinding/app-reader")
    assert order.index("StorageClass/fast") < order.index("PersistentVolumeClaim/data")
    assert order.index("PriorityClass/high") < order.index("Pod/web-0")
    for kind in ("ClusterRole", "ClusterRoleBinding", "StorageClass", "PriorityClass"):
        assert status["resourcesByKind"][kind] == counts(restored=1), kind
    binding = world.cluster.find("ClusterRoleBinding", None, "app-reader")
    assert binding is not None and binding["subjects"] == BACKED_UP[1]["subjects"]


@pytest.mark.parametrize("policy", ["Retain", "Delete"])
def test_an_existing_cluster_scoped_object_is_kept_and_counted_retained(
    tmp_path: Path, scratch_factory: ScratchFactory, policy: str
) -> None:
    world = Restoring(tmp_path, scratch_factory, ADMIN)
    live_rules = [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}]
    world.cluster.put(
        obj(f"{RBAC}/v1", "ClusterRole", "reader", rules=live_rules),
        obj(f"{RBAC}/v1", "ClusterRoleBinding", "app-reader", subjects=[]),
    )
    before = world.cluster.find("ClusterRoleBinding", None, "app-reader")

    status = world.run(replacePolicy=policy)

    assert status["status"] == "Successful", status
    assert status["resourcesByKind"]["ClusterRole"] == counts(retained=1)
    assert status["resourcesByKind"]["ClusterRoleBinding"] == counts(retained=1)
    role = world.cluster.find("ClusterRole", None, "reader")
    assert role is not None and role["rules"] == live_rules
    assert world.cluster.find("ClusterRoleBinding", None, "app-reader") == before
    assert "delete_object" not in world.cluster.calls


def test_a_dry_run_with_delete_says_an_existing_cluster_scoped_object_would_be_retained(
    tmp_path: Path, scratch_factory: ScratchFactory
) -> None:
    world = Restoring(tmp_path, scratch_factory, ADMIN)
    world.cluster.put(obj("storage.k8s.io/v1", "StorageClass", "fast", provisioner="example.com/other"))
    status = world.run(replacePolicy="Delete", dryRun=True)
    assert status["resourcesByKind"]["StorageClass"] == counts(retained=1)


def test_a_tenants_restore_writes_no_cluster_scoped_object(
    tmp_path: Path, scratch_factory: ScratchFactory
) -> None:
    world = Restoring(tmp_path, scratch_factory, "app")
    world.cluster.put(fakes.namespace("app"))
    status = world.run()
    assert status["status"] == "Successful", status
    assert not {"ClusterRole", "ClusterRoleBinding", "StorageClass", "PriorityClass"} & set(
        status["resourcesByKind"]
    )
    assert all(not name.startswith(("Cluster", "StorageClass", "PriorityClass")) for name in world.created)
