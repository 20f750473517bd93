"""The in-memory fakes of the ports (tests/fakes) behave as the real layer does where handlers depend on
it, and they and the real implementations satisfy the ports (``davit.operations.ports``): mypy checks
the assignments in ``_conforms``, ``test_same_methods_as_the_port`` the method signatures at run time."""

from __future__ import annotations

import inspect
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from davit.backup.selection import ClusterRef
from davit.constants import Kind
from davit.format.layout import BackupRef
from davit.kube.client import ApiClient, ApiException
from davit.kube.cluster import KubeCluster
from davit.kube.csi import SnapshotError
from davit.kube.operations import NotFound, Operations, SpecChanged
from davit.operations.adapters import RedisScratch
from davit.operations.ports import Cluster, Dispatch, Moving, Scratch, Stores
from davit.operations.runtime import LocationUnavailable, Runtime
from davit.tenancy import UnsafeName
from davit.volumes import backup_stage
from davit.volumes.claims import VolumePlan
from tests.fakes import cluster as k
from tests.fakes.dispatch import FakeDispatch
from tests.fakes.scratch import ScratchFactory, fake_redis
from tests.fakes.stores import LocalStores

BACKUP = Kind.APPLICATION_BACKUP


def _conforms(
    fake: k.FakeCluster,
    real: KubeCluster,
    stores: LocalStores,
    runtime: Runtime,
    factory: ScratchFactory,
    redis_scratch: RedisScratch,
    dispatch: FakeDispatch,
) -> None:
    """Never called: mypy checks that each fake and each real implementation is its port."""
    clusters: list[Cluster] = [fake, real]
    all_stores: list[Stores] = [stores, runtime]
    scratches: list[Scratch] = [factory, redis_scratch]
    dispatches: list[Dispatch] = [dispatch, runtime.dispatch]
    del clusters, all_stores, scratches, dispatches


def _public(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


@pytest.mark.parametrize("implementation", [k.FakeCluster, KubeCluster])
def test_same_methods_as_the_port(implementation: type) -> None:
    port, implemented = _public(Cluster), _public(implementation)
    for name, signature in port.items():
        assert name in implemented, f"{implementation.__name__} lacks {name}"
        assert list(implemented[name].parameters) == list(signature.parameters), name
        defaults = {p.name: p.default for p in signature.parameters.values()}
        assert {p.name: p.default for p in implemented[name].parameters.values()} == defaults, name


def test_kube_cluster_builds_without_a_server() -> None:
    cluster = KubeCluster(Operations(ApiClient(), accepted_only=True))
    assert cluster.api is cluster.ops.api


# --- custom resources ------------------------------------------------------------------------------


def test_create_assigns_identity_and_returns_copies() -> None:
    fake = k.FakeCluster()
    created = fake.create(BACKUP, "app", k.backup("b1", "app", backupLocation="loc"))
    meta = created["metadata"]
    assert meta["uid"] and meta["resourceVersion"] and meta["generation"] == 1
    assert meta["namespace"] == "app" and created["kind"] == "ApplicationBackup"
    created["spec"]["backupLocation"] = "changed"
    assert fake.require(BACKUP, "app", "b1")["spec"]["backupLocation"] == "loc"
    with pytest.raises(ApiException) as exc:
        fake.create(BACKUP, "app", k.backup("b1", "app"))
    assert exc.value.status == 409


def test_patch_status_merges_and_bumps_the_version() -> None:
    fake = k.FakeCluster()
    obj = fake.put(k.backup("b1", stage="Initial", status_fields={"volumes": [{"a": 1}], "note": "x"}))
    updated = fake.patch_status(BACKUP, obj, {"stage": "Volumes", "note": None, "volumes": [{"b": 2}]})
    assert updated["status"]["stage"] == "Volumes" and updated["status"]["status"] == "Pending"
    assert "note" not in updated["status"] and updated["status"]["volumes"] == [{"b": 2}]  # lists replace
    assert int(updated["metadata"]["resourceVersion"]) > int(obj["metadata"]["resourceVersion"])
    assert updated["metadata"]["generation"] == obj["metadata"]["generation"]  # status is no spec change
    assert fake.status(obj) == updated["status"]


def test_check_version_conflicts_as_the_api_server_does() -> None:
    fake = k.FakeCluster()
    read = fake.put(k.backup("b1", stage="Initial"))
    fake.patch_status(BACKUP, read, {"status": "InProgress"})  # another worker wrote first
    with pytest.raises(ApiException) as exc:
        fake.patch_status(BACKUP, read, {"stage": "Volumes"}, check_version=True)
    assert exc.value.status == 409
    fake.patch_status(BACKUP, read, {"stage": "Volumes"})  # unconditional writes go through
    with pytest.raises(ApiException) as finalizer_conflict:
        fake.add_finalizer(BACKUP, read, "davit.dev/backup")
    assert finalizer_conflict.value.status == 409


def test_update_volume_retries_a_conflict() -> None:
    """backup_stage.update_volume (read, modify, conditional write) against the fake: a 409 is retried."""
    fake = k.FakeCluster()
    volumes = [{"namespace": "app", "persistentVolumeClaim": "data", "status": "InProgress"}]
    obj = fake.put(k.backup("b1", stage="Volumes", status_fields={"volumes": volumes}))
    fake.conflict_next("patch_status")
    backup_stage.update_volume(cast(Moving, SimpleNamespace(cluster=fake)), "app", "b1", "app/data",
                               {"status": "Successful"})  # fmt: skip
    assert fake.status(obj)["volumes"][0]["status"] == "Successful"
    assert fake.status(obj)["volumesProgress"] == "1/1"
    assert fake.calls.count("patch_status") == 2


def test_missing_objects_as_the_real_layer() -> None:
    fake = k.FakeCluster()
    assert fake.get(BACKUP, "app", "nope") is None and fake.get_as_is(BACKUP, "app", "nope") is None
    for call in (
        lambda: fake.require(BACKUP, "app", "nope"),
        lambda: fake.patch(BACKUP, "app", "nope", {"spec": {}}),
        lambda: fake.delete(BACKUP, "app", "nope"),
    ):
        with pytest.raises(NotFound) as exc:
            call()
        assert exc.value.status == 404 and isinstance(exc.value, LookupError)
        assert "applicationbackup app/nope not found" in str(exc.value)
    fake.remove_finalizer(BACKUP, k.backup("nope"), "x")  # gone already: nothing to do
    assert fake.location("app", "") is None and fake.secret_data("app", "nope") is None


def test_delete_honours_uid_and_finalizers() -> None:
    fake = k.FakeCluster()
    obj = fake.put(k.backup("b1", finalizers=["davit.dev/backup"]))
    with pytest.raises(ApiException) as exc:
        fake.delete(BACKUP, "app", "b1", uid="another-incarnation")
    assert exc.value.status == 409
    fake.delete(BACKUP, "app", "b1", uid=obj["metadata"]["uid"])
    deleting = fake.require(BACKUP, "app", "b1")
    assert deleting["metadata"]["deletionTimestamp"]
    fake.remove_finalizer(BACKUP, deleting, "davit.dev/backup")
    assert fake.get_as_is(BACKUP, "app", "b1") is None
    fake.put(k.backup("b2"))
    fake.delete(BACKUP, "app", "b2")
    assert fake.find(BACKUP, "app", "b2") is None


def test_list_all_filters_by_namespace_and_labels() -> None:
    fake = k.FakeCluster()
    fake.put(
        k.backup("b2", "app", labels={"davit.dev/schedule": "s1"}),
        k.backup("b1", "app", labels={"davit.dev/schedule": "s1"}),
        k.backup("b3", "app", labels={"davit.dev/schedule": "s2"}),
        k.backup("b4", "other", labels={"davit.dev/schedule": "s1"}),
    )
    names = [
        o["metadata"]["name"] for o in fake.list_all(BACKUP, "app", label_selector="davit.dev/schedule=s1")
    ]
    assert names == ["b1", "b2"]
    assert len(fake.list_all(BACKUP, None)) == 4
    assert [
        o["metadata"]["namespace"] for o in fake.list_all(BACKUP, None, "davit.dev/schedule in (s1)")
    ] == [
        "app",
        "app",
        "other",
    ]


def test_current_and_accepted_only() -> None:
    fake = k.FakeCluster()
    obj = fake.put(k.backup("b1", stage="Initial"))
    uid = obj["metadata"]["uid"]
    assert fake.current(BACKUP, "app", "b1", uid, "Initial") is not None
    assert fake.current(BACKUP, "app", "b1", "old-uid") is None
    assert fake.current(BACKUP, "app", "b1", uid, "Volumes") is None
    fake.patch(BACKUP, "app", "b1", {"spec": {"backupLocation": "elsewhere"}})  # generation 2
    with pytest.raises(SpecChanged):
        fake.get(BACKUP, "app", "b1")
    assert fake.get_as_is(BACKUP, "app", "b1") is not None
    assert k.FakeCluster(accepted_only=False).put(fake.require(BACKUP, "app", "b1"))


def test_fail_next_then_recover() -> None:
    fake = k.FakeCluster()
    obj = fake.put(k.backup("b1", stage="Initial"))
    fake.fail_next("patch_status")
    with pytest.raises(ApiException) as exc:
        fake.patch_status(BACKUP, obj, {"status": "InProgress"})
    assert exc.value.status == 500
    assert fake.status(obj)["status"] == "Pending"
    fake.patch_status(BACKUP, obj, {"status": "InProgress"})
    assert fake.status(obj)["status"] == "InProgress"
    with pytest.raises(AttributeError):
        fake.fail_next("no_such_method")


def test_events_are_recorded() -> None:
    fake = k.FakeCluster()
    obj = fake.put(k.backup("b1"))
    fake.record_event(obj, "Normal", "StageChanged", "Stage Volumes: Pending", "davit-worker")
    fake.fail_next("record_event")
    fake.record_event(obj, "Warning", "Failed", "lost", "davit-worker")  # refused: not raised, not kept
    assert fake.reasons() == ["StageChanged"]
    assert fake.events[0].uid == obj["metadata"]["uid"] and fake.events[0].kind == "ApplicationBackup"


def test_lookup_and_secrets() -> None:
    fake = k.FakeCluster()
    fake.put(k.location("loc", "app", secretConfig="creds"), k.secret("creds", "app", accessKey="AK"))
    fake.put(k.rule("r1", "app", [{"podSelector": {"app": "db"}, "actions": [{"value": "sync"}]}]))
    location = fake.location("app", "loc")
    assert location is not None and location["location"]["secretConfig"] == "creds"
    assert fake.rule("app", "r1") is not None and fake.backup("app", "b1") is None
    assert fake.secret_data("app", "creds") == {"accessKey": "AK"}
    fake.put(k.schedule_policy("daily", daily={"time": "01:00"}))
    assert fake.get_as_is(Kind.SCHEDULE_POLICY, "", "daily") is not None


# --- core objects, discovery, any resource ---------------------------------------------------------


def test_core_objects() -> None:
    fake = k.FakeCluster()
    fake.put(
        k.claim("data", "app", volume="pv-data", labels={"tier": "db"}),
        k.claim("logs", "app"),
        k.volume("pv-data", claim=("app", "data"), driver="hostpath.csi.k8s.io"),
        k.pod("db-0", "app", claims=["data"]),
        k.namespace("app", {"team": "a"}),
        k.namespace("other", {"team": "b"}),
        k.node("node-1"),
    )
    assert [c["metadata"]["name"] for c in fake.list_claims("app")] == ["data", "logs"]
    assert [c["metadata"]["name"] for c in fake.list_claims("app", "tier=db")] == ["data"]
    claim = fake.read_claim("app", "data")
    assert claim is not None and claim["spec"]["volumeName"] == "pv-data"
    volume = fake.read_volume("pv-data")
    assert volume is not None and volume["spec"]["csi"]["driver"] == "hostpath.csi.k8s.io"
    assert fake.read_claim("app", "nope") is None and fake.read_volume("nope") is None
    pods = fake.list_pods("app")
    assert pods[0]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "data"
    assert fake.namespaces_matching("team=a") == ["app"] and fake.namespaces_matching("team") == [
        "app",
        "other",
    ]
    assert fake.node_names() == {"node-1"}


def test_list_page_paginates() -> None:
    fake = k.FakeCluster()
    configmaps = next(r for r in fake.discover() if r.kind == "ConfigMap")
    for i in range(5):
        fake.put(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm-{i}", "namespace": "app"}}
        )
    fake.put(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "elsewhere", "namespace": "other"}}
    )
    names, token = [], None
    while True:
        page = fake.list_page(configmaps, "app", None, 2, token)
        assert all(item["kind"] == "ConfigMap" and item["apiVersion"] == "v1" for item in page.items)
        names += [item["metadata"]["name"] for item in page.items]
        token = page.continue_token
        if token is None:
            break
    assert names == [f"cm-{i}" for i in range(5)]
    assert len(fake.list_page(configmaps, None, None, 100, None).items) == 6


def test_any_resource() -> None:
    fake = k.FakeCluster()
    deployments = next(r for r in fake.discover() if r.kind == "Deployment")
    body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "uid": "stale"}}
    created = fake.create_object(deployments, "app", body)
    assert created["metadata"]["namespace"] == "app" and created["metadata"]["uid"] != "stale"
    with pytest.raises(ApiException) as exists:
        fake.create_object(deployments, "app", body)
    assert exists.value.status == 409
    fake.patch_object(deployments, "app", "web", {"metadata": {"ownerReferences": [{"name": "o"}]}})
    found = fake.get_object(deployments, "app", "web")
    assert found is not None and found["metadata"]["ownerReferences"] == [{"name": "o"}]
    with pytest.raises(UnsafeName):
        fake.get_object(deployments, "app", "../../secrets/x")
    fake.delete_object(deployments, "app", "web")
    assert fake.get_object(deployments, "app", "web") is None
    with pytest.raises(NotFound):
        fake.delete_object(deployments, "app", "web")
    crds = next(r for r in fake.discover() if r.kind == "CustomResourceDefinition")
    fake.create_object(crds, None, {"metadata": {"name": "things.example.com"}})
    assert fake.get_cluster_object(ClusterRef(crds.api_version, crds.plural, "things.example.com"))


# --- CSI snapshots ---------------------------------------------------------------------------------


def _snapshot_plan() -> VolumePlan:
    return VolumePlan(
        namespace="app", claim="data", volume="pv-data", driver="hostpath.csi.k8s.io", mode="snapshot"
    )


def test_snapshots() -> None:
    fake = k.FakeCluster()
    fake.put(
        k.claim("data", "app", volume="pv-data", storage="2Gi"),
        k.snapshot_class("csi", "hostpath.csi.k8s.io"),
    )
    assert fake.snapshot_drivers() == {"hostpath.csi.k8s.io"}
    result = fake.snapshot_volume(_snapshot_plan(), "b1", "1234abcd-0000", 60)
    assert result["status"] == "Successful" and result["totalSize"] == 2 * 2**30
    assert result["volumeSnapshotClass"] == "csi"
    assert fake.delete_backup_snapshots(["app"], "1234abcd-0000") == [f"app/{result['volumeSnapshot']}"]
    assert fake.of_kind("VolumeSnapshot") == []
    fake.snapshot_statuses["app/data"] = {"readyToUse": False, "error": {"message": "quota"}}
    with pytest.raises(SnapshotError, match="quota"):
        fake.snapshot_volume(_snapshot_plan(), "b1", "1234abcd-0000", 60)
    with pytest.raises(SnapshotError, match="no VolumeSnapshotClass"):
        fake.snapshot_volume(
            VolumePlan("app", "data", "pv-data", "other.csi", "snapshot"), "b2", "5678abcd-0000", 60
        )


def test_executor_records() -> None:
    fake = k.FakeCluster()
    fake.executor().run("app", "db-0", "db", "sync")
    assert [(c.pod, c.command) for c in fake.exec.calls] == [("db-0", "sync")]


# --- helpers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        ("", True),
        ("a=1", True),
        ("a==1,b=2", True),
        ("a!=1", False),
        ("c", False),
        ("!c", True),
        ("a in (1, 3)", True),
        ("a notin (1,3)", False),
        ("c notin (1)", True),
        ("a in (2),b", False),
    ],
)
def test_selector_matches(selector: str, matches: bool) -> None:
    assert k.selector_matches(selector, {"a": "1", "b": "2"}) is matches


# --- stores ----------------------------------------------------------------------------------------


def test_stores_open_real_repositories(tmp_path: Path) -> None:
    stores = LocalStores(tmp_path)
    repository = stores.repository("app", "loc", verify=True)
    ref = BackupRef("app", "b1", "uid-1")
    info = repository.write_part(ref, "part-0", [{"kind": "ConfigMap"}])
    assert stores.repository("app", "loc").read_part(info.key) == [{"kind": "ConfigMap"}]
    assert (tmp_path / "app" / "loc").is_dir() and stores.opened[0] == ("app", "loc", True)
    stores.unavailable[("app", "gone")] = "BackupLocation app/gone is unavailable: AccessDenied"
    with pytest.raises(LocationUnavailable, match="AccessDenied"):
        stores.repository("app", "gone")


def test_stores_resolve_locations_in_the_cluster(tmp_path: Path) -> None:
    fake = k.FakeCluster()
    fake.put(k.location("shared", "davit-system", allowedNamespaces=["app"]), k.location("own", "app"))
    stores = LocalStores(tmp_path, cluster=fake, admin_namespace="davit-system")
    stores.repository("app", "own")
    stores.repository("app", "shared")
    assert (tmp_path / "davit-system" / "shared").is_dir()
    with pytest.raises(LocationUnavailable, match="not found"):
        stores.repository("other", "shared")


def test_redis_scratch_is_the_factory_over_real_keys() -> None:
    redis = fake_redis()
    state = RedisScratch(redis).backup("uid-1")
    state.log("x")
    assert ScratchFactory(redis).names("uid-1") == ["log"]
