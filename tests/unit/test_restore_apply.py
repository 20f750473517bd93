"""The restore's Applier over the in-memory API server: every request about an object passes the
restore's guard first (nothing reaches the cluster for a refused object), what exists is learnt from
paginated lists, and a create's outcome follows ``replacePolicy`` and re-delivery."""

from __future__ import annotations

from typing import Any

import pytest

from davit import constants
from davit.api.objects import RawObject
from davit.restore.fields import RESTORE_UID_ANNOTATION
from davit.tenancy import RestoreGuard
from davit_services.restore import apply
from davit_services.restore.apply import FAILED, RESTORED, RETAINED, Applier, Refused, key_of
from davit_services.restore.restore import applier_for
from tests.fakes.cluster import FakeCluster, api_error

ADMIN = constants.DEFAULT_ADMIN_NAMESPACE
OBJECT_CALLS = ("get_object", "create_object", "patch_object", "delete_object", "list_page")


def configmap(name: str, namespace: str = "app", restore_uid: str | None = None) -> RawObject:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if restore_uid:
        meta["annotations"] = {RESTORE_UID_ANNOTATION: restore_uid}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"k": name}}


def crd(name: str, established: bool) -> RawObject:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": name},
        "status": {"conditions": [{"type": "Established", "status": "True" if established else "False"}]},
    }


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> FakeCluster:
    monkeypatch.setattr("davit_services.restore.apply.time.sleep", lambda _seconds: None)
    return FakeCluster()


def tenant(cluster: FakeCluster, namespace: str = "app") -> Applier:
    return Applier(cluster, RestoreGuard(namespace, ADMIN))


def object_calls(cluster: FakeCluster) -> list[str]:
    return [c for c in cluster.calls if c in OBJECT_CALLS]


# --- the guard -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "obj",
    [
        configmap("a", namespace="other"),
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "app", "namespace": "app"}},
        configmap("../a"),
    ],
    ids=["another-namespace", "cluster-scoped", "unsafe-name"],
)
def test_every_request_about_a_refused_object_stops_before_the_cluster(
    cluster: FakeCluster, obj: RawObject
) -> None:
    applier = tenant(cluster)
    outcome = applier.create(obj)
    assert outcome.result == FAILED and outcome.reason.startswith("refused: ")
    with pytest.raises(Refused):
        applier.get(*key_of(obj))
    with pytest.raises(Refused):
        applier.delete(obj)
    with pytest.raises(Refused):
        applier.gone(obj)
    with pytest.raises(Refused):
        applier.set_owners(obj, [{"kind": "Deployment", "name": "d", "uid": "u"}])
    assert object_calls(cluster) == []
    assert cluster.of_kind("ConfigMap") == [] and cluster.of_kind("Namespace") == []


def test_refusal_judges_scope_by_discovery_not_by_the_stored_object(cluster: FakeCluster) -> None:
    applier = tenant(cluster)
    assert applier.refusal(configmap("a")) is None
    # A cluster-scoped kind with a namespace in its stored bytes is still cluster-scoped.
    reason = applier.refusal({"apiVersion": "v1", "kind": "PersistentVolume",
                              "metadata": {"name": "pv", "namespace": "app"}})  # fmt: skip
    assert reason is not None and "cluster-scoped" in reason
    # A type the cluster does not serve is not refused here; writing it fails.
    unknown = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w", "namespace": "app"},
    }
    assert applier.refusal(unknown) is None
    outcome = applier.create(unknown)
    assert outcome.result == FAILED and "the cluster serves no Widget in example.com/v1" in outcome.reason
    assert cluster.calls.count("discover") == 3  # at the start, then again for each unknown type


def test_a_restores_applier_accepts_a_discovery_made_since_the_restore_was_created(
    cluster: FakeCluster,
) -> None:
    """Each chunk of a restore makes an Applier: a discovery made since the restore's creation serves
    (the Kubernetes layer keeps the last, tests/unit/test_kube_discovery.py); an unknown type is looked
    for in a fresh one."""
    restore = {"metadata": {"namespace": "app", "name": "r", "creationTimestamp": "2026-12-05T10:00:00Z"},
               "spec": {"backupName": "b"}}  # fmt: skip
    applier = applier_for(cluster, ADMIN, restore)
    assert cluster.discovered_since == [1796464800.0]
    assert applier.create({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})
    assert cluster.discovered_since == [1796464800.0, None]


def test_the_admin_namespace_restores_anywhere_and_cluster_scoped_objects(cluster: FakeCluster) -> None:
    applier = Applier(cluster, RestoreGuard(ADMIN, ADMIN))
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}
    assert applier.create(namespace).result == RESTORED
    assert applier.create(configmap("a", namespace="shop")).result == RESTORED
    assert cluster.find("Namespace", None, "shop") is not None
    assert cluster.find("ConfigMap", "shop", "a") is not None


# --- existing --------------------------------------------------------------------------------------


def test_existing_lists_each_resource_and_namespace_page_by_page(
    cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(apply, "LIST_LIMIT", 2)
    cluster.put(*(configmap(n) for n in ("a", "b", "c", "d", "e")), configmap("x", namespace="other"))
    applier = tenant(cluster)
    wanted = [configmap("a"), configmap("e"), configmap("zz"), configmap("x", namespace="other")]
    assert applier.existing(wanted) == {key_of(configmap("a")), key_of(configmap("e"))}
    # Five ConfigMaps in app at two a page; nothing listed in a namespace the guard refuses.
    assert object_calls(cluster) == ["list_page"] * 3


def test_existing_skips_types_the_cluster_does_not_serve(cluster: FakeCluster) -> None:
    unknown = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w", "namespace": "app"},
    }
    assert tenant(cluster).existing([unknown]) == set()
    assert object_calls(cluster) == []


# --- create ----------------------------------------------------------------------------------------


def test_create_writes_the_object_in_its_namespace(cluster: FakeCluster) -> None:
    assert tenant(cluster).create(configmap("a")).result == RESTORED
    stored = cluster.find("ConfigMap", "app", "a")
    assert stored is not None and stored["data"] == {"k": "a"}


def test_an_object_already_there_is_retained_unless_this_restore_made_it(cluster: FakeCluster) -> None:
    cluster.put(
        configmap("theirs"), configmap("ours", restore_uid="r-1"), configmap("older", restore_uid="r-0")
    )
    applier = tenant(cluster)
    assert applier.create(configmap("theirs", restore_uid="r-1")).result == RETAINED
    assert applier.create(configmap("ours", restore_uid="r-1")).result == RESTORED  # a retried chunk
    assert applier.create(configmap("older", restore_uid="r-1")).result == RETAINED
    theirs = cluster.find("ConfigMap", "app", "theirs")
    assert theirs is not None and "annotations" not in theirs["metadata"]  # left as it was


def test_a_timeout_for_an_object_that_was_created_counts_as_it_exists(cluster: FakeCluster) -> None:
    # The API server answers ServerTimeout instead of AlreadyExists for generateName objects.
    cluster.put(configmap("a", restore_uid="r-1"))
    cluster.fail_next("create_object", api_error(504, "Gateway Timeout"))
    assert tenant(cluster).create(configmap("a", restore_uid="r-1")).result == RESTORED
    assert cluster.calls.count("create_object") == 1


@pytest.mark.parametrize("status", sorted(apply.RETRYABLE))
def test_retryable_answers_are_tried_again(cluster: FakeCluster, status: int) -> None:
    cluster.fail_next("create_object", api_error(status), times=2)
    assert tenant(cluster).create(configmap("a")).result == RESTORED
    assert cluster.calls.count("create_object") == 3


def test_a_refusal_of_the_api_server_fails_the_object_with_its_message(cluster: FakeCluster) -> None:
    cluster.fail_next("create_object", api_error(403, "Forbidden", 'configmaps is forbidden: User "x"'))
    outcome = tenant(cluster).create(configmap("a"))
    assert outcome.result == FAILED
    assert outcome.reason == 'ConfigMap app/a (v1): configmaps is forbidden: User "x"'
    assert cluster.calls.count("create_object") == 1


# --- delete, owners, CRDs ----------------------------------------------------------------------------


def test_delete_removes_the_object_and_a_missing_one_is_no_error(cluster: FakeCluster) -> None:
    cluster.put(configmap("a"))
    applier = tenant(cluster)
    applier.delete(configmap("a"))
    applier.delete(configmap("a"))
    assert applier.gone(configmap("a"))
    assert applier.wait_gone([configmap("a")], timeout=1.0) == []


def test_wait_gone_names_what_is_still_there_at_the_deadline(cluster: FakeCluster) -> None:
    cluster.put(configmap("a"))
    assert tenant(cluster).wait_gone([configmap("a")], timeout=0.0) == [configmap("a")]


def test_set_owners_patches_only_the_owner_references(cluster: FakeCluster) -> None:
    cluster.put(configmap("a"))
    reference = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d", "uid": "new-uid"}
    tenant(cluster).set_owners(configmap("a"), [reference])
    stored = cluster.find("ConfigMap", "app", "a")
    assert stored is not None
    assert stored["metadata"]["ownerReferences"] == [reference] and stored["data"] == {"k": "a"}


def test_crd_established_reads_its_condition(cluster: FakeCluster) -> None:
    cluster.put(crd("widgets.example.com", True), crd("gadgets.example.com", False))
    applier = tenant(cluster)
    assert applier.crd_established("widgets.example.com")
    assert not applier.crd_established("gadgets.example.com")
    assert not applier.crd_established("missing.example.com")


def test_a_restore_workers_creates_at_once_fit_in_its_api_clients_connection_pool() -> None:
    """Beyond the pool, each request opens (and closes) a connection of its own: a TLS handshake each."""
    from davit.kube import clients
    from davit.settings import Settings
    from davit_services.restore import restore

    assert Settings().worker_concurrency * restore.PARALLEL_CREATES <= clients.CONNECTION_POOL_SIZE
