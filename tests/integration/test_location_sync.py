"""Location sync across two clusters on one store: cluster a backs up, cluster b's BackupLocation with
``sync: true`` on the same bucket and prefix imports the backup, never starts it, re-imports it when
deleted there, and removes it once cluster a deleted the backup."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from davit.constants import Queue
from davit.format.layout import BackupRef
from davit.operations import queueing
from davit.retention.location_sync import IMPORTED_FROM_ANNOTATION, SOURCE_BACKUP_ANNOTATION
from tests.conftest import StackEnv
from tests.helpers import wait_for
from tests.integration.conftest import Services
from tests.integration.test_backup_resources import (
    apply,
    backup_manifest,
    location_manifest,
    repository_for,
    wait_final,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def namespace_b(second_cluster: StackEnv, namespace: str) -> Iterator[str]:
    """The test's namespace, by the same name, in cluster b."""
    second_cluster.kubectl("create", "namespace", namespace)
    yield namespace
    second_cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.fixture
def services_b(second_cluster: StackEnv, tmp_path: Path) -> Iterator[Services]:
    """Cluster b's watcher and retention worker, checking (and so syncing) locations every 2 s. No
    snapshot worker: a backup the watcher wrongly started would wait in davit.snapshot for all to see."""
    redis.Redis.from_url(second_cluster.redis_url).flushdb()
    running = Services(second_cluster, tmp_path / "logs-b")
    running.log_dir.mkdir()
    for service in ("watcher", "retention"):
        running.start(service, DAVIT_LOCATION_CHECK_SECONDS="2")
    yield running
    running.stop_all()
    second_cluster.kubectl("-n", "kube-system", "delete", "lease", running.lease, "--ignore-not-found")


def get(cluster: StackEnv, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    result = cluster.kubectl("-n", namespace, "get", kind, name, "-o", "json", check=False)
    if result.returncode != 0:
        assert "NotFound" in result.stderr, result.stderr
        return None
    obj: dict[str, Any] = json.loads(result.stdout)
    return obj


def last_synced(cluster: StackEnv, namespace: str) -> str | None:
    location = get(cluster, namespace, "backuplocation", "loc") or {}
    synced: str | None = (location.get("status") or {}).get("lastSynced")
    return synced


def wait_for_new_sync(cluster: StackEnv, namespace: str, services: Services, times: int = 1) -> None:
    """Until the location was synced ``times`` more times (lastSynced has a resolution of a second)."""
    for _ in range(times):
        before = last_synced(cluster, namespace)

        def synced_again(before: str | None = before) -> bool:
            after = last_synced(cluster, namespace)
            return after is not None and after != before

        try:
            wait_for("another sync", synced_again)
        except AssertionError:
            print(services.logs())
            raise


def test_a_second_cluster_imports_keeps_and_drops_backups_of_the_first(
    stack: StackEnv,
    second_cluster: StackEnv,
    namespace: str,
    namespace_b: str,
    services: Services,
    services_b: Services,
    tmp_path: Path,
) -> None:
    # Cluster a: a backup of the namespace to S3, deleted with its data later.
    apply(stack, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": namespace}})
    location = location_manifest(stack, "s3", namespace, tmp_path)
    apply(stack, location)
    apply(stack, backup_manifest(namespace, "nightly", reclaimPolicy="Delete", ttl="72h"))
    original_status = wait_final(stack, namespace, "nightly", services)
    assert original_status["status"] == "Successful", original_status
    original = get(stack, namespace, "applicationbackup", "nightly")
    assert original is not None
    source = BackupRef(namespace, "nightly", original["metadata"]["uid"])

    # Cluster b: the same location (bucket, prefix, credentials) in the same namespace, syncing.
    syncing = copy.deepcopy(location)
    syncing["location"]["sync"] = True
    apply(second_cluster, syncing)

    def imported() -> dict[str, Any] | None:
        obj = get(second_cluster, namespace_b, "applicationbackup", "nightly")
        return obj if obj and (obj.get("status") or {}).get("stage") == "Final" else None

    try:
        copy_b = wait_for("the backup to be imported into cluster b", imported, timeout=60)
    except AssertionError:
        print(services_b.logs())
        raise
    status = copy_b["status"]
    assert status["status"] == "Successful", status
    assert status["resourceCount"] == original_status["resourceCount"] > 0
    assert status["backupPath"] == original_status["backupPath"]
    assert copy_b["spec"]["reclaimPolicy"] == "Retain"
    assert copy_b["spec"]["backupLocation"] == "loc"
    assert copy_b["spec"]["namespaces"] == [namespace]
    assert "ttl" not in copy_b["spec"], "the origin applies the TTL; the sync follows"
    annotations = copy_b["metadata"]["annotations"]
    assert annotations[IMPORTED_FROM_ANNOTATION] == "loc"
    assert annotations[SOURCE_BACKUP_ANNOTATION] == f"{namespace}/nightly/{source.uid}"
    assert not copy_b["metadata"].get("finalizers"), "an import holds no data to delete"
    assert last_synced(second_cluster, namespace_b) is not None
    events = json.loads(
        second_cluster.kubectl(
            "-n", namespace_b, "get", "events", "--field-selector", "involvedObject.name=loc", "-o", "json"
        ).stdout
    )["items"]
    assert any(e["reason"] == "Synced" and "nightly" in e["message"] for e in events), events

    # Never started: several syncs and watcher resyncs later the import is exactly as written, and no
    # message for it waits in cluster b's queues.
    wait_for_new_sync(second_cluster, namespace_b, services_b, times=3)
    again = get(second_cluster, namespace_b, "applicationbackup", "nightly")
    assert again is not None
    assert again["metadata"]["resourceVersion"] == copy_b["metadata"]["resourceVersion"]
    assert again["status"] == status
    waiting = queueing.in_flight_task_ids(
        redis.Redis.from_url(second_cluster.redis_url), [q.value for q in Queue]
    )
    assert not [key for key in waiting if key.startswith(copy_b["metadata"]["uid"])], waiting

    # Deleting the import in b deletes no data, and the next sync imports the backup again.
    second_cluster.kubectl("-n", namespace_b, "delete", "applicationbackup", "nightly")
    repository = repository_for(location)
    assert repository.has_manifest(source)

    def reimported() -> dict[str, Any] | None:
        obj = imported()
        return obj if obj and obj["metadata"]["uid"] != copy_b["metadata"]["uid"] else None

    wait_for("the deleted import to be imported again", reimported, timeout=60)
    assert repository.has_manifest(source)

    # A status-less import of another location: the watcher leaves it alone, and this location's sync
    # does not touch what another location imported.
    apply(second_cluster, {
        "apiVersion": "davit.dev/v1alpha1", "kind": "ApplicationBackup",
        "metadata": {"name": "foreign", "namespace": namespace_b, "annotations": {
            IMPORTED_FROM_ANNOTATION: "elsewhere",
            SOURCE_BACKUP_ANNOTATION: f"{namespace}/foreign/{uuid.uuid4()}",
        }},
        "spec": {"backupLocation": "elsewhere", "namespaces": [namespace]},
    })  # fmt: skip
    wait_for_new_sync(second_cluster, namespace_b, services_b, times=2)
    foreign = get(second_cluster, namespace_b, "applicationbackup", "foreign")
    assert foreign is not None and not foreign.get("status"), foreign

    # Cluster a deletes its backup and the data with it: the import leaves cluster b.
    stack.kubectl("-n", namespace, "delete", "applicationbackup", "nightly", "--wait=false")
    wait_for(
        "the backup to be deleted in cluster a",
        lambda: get(stack, namespace, "applicationbackup", "nightly") is None,
    )
    assert not repository.has_manifest(source)
    try:
        wait_for(
            "the import to leave cluster b",
            lambda: get(second_cluster, namespace_b, "applicationbackup", "nightly") is None,
            timeout=60,
        )
    except AssertionError:
        print(services_b.logs())
        raise
    assert get(second_cluster, namespace_b, "applicationbackup", "foreign") is not None


def cross_cluster_app() -> str:
    """The restore tests' ConfigMap, Secret and StatefulSet with a volume claim template."""
    from tests.integration.test_restore import APP

    wanted = ("kind: ConfigMap", "kind: Secret", "kind: StatefulSet")
    return "---".join(doc for doc in APP.split("---") if any(k in doc for k in wanted))


@pytest.fixture
def restoring_b(second_cluster: StackEnv, tmp_path: Path) -> Iterator[Services]:
    """Cluster b's watcher, retention (sync), restore service and node agents."""
    redis.Redis.from_url(second_cluster.redis_url).flushdb()
    running = Services(second_cluster, tmp_path / "logs-b")
    running.log_dir.mkdir()
    for service in ("watcher", "retention", "restore"):
        running.start(service, DAVIT_LOCATION_CHECK_SECONDS="2")
    for node in second_cluster.env["DEV_NODES"].split(","):
        running.start("uploader", name=f"uploader-{node}", DAVIT_NODE_NAME=node,
                      DAVIT_KUBELET_ROOT=second_cluster.env["KUBELET_ROOT"])  # fmt: skip
    yield running
    running.stop_all()
    second_cluster.kubectl("-n", "kube-system", "delete", "lease", running.lease, "--ignore-not-found")


def test_a_backup_of_cluster_a_is_restored_in_cluster_b_with_its_volume(
    stack: StackEnv,
    second_cluster: StackEnv,
    namespace: str,
    namespace_b: str,
    services: Services,
    restoring_b: Services,
    tmp_path: Path,
) -> None:
    from davit.restore.normalize import normalize
    from tests.integration.test_backup_volumes import assert_same_tree, fill_mixed
    from tests.integration.test_restore import volume_of

    apply(stack, cross_cluster_app().replace("NS", namespace))
    volume = volume_of(stack, namespace, "data-db-0")
    fill_mixed(volume, seed=11, big=4 * 1024 * 1024)
    location = location_manifest(stack, "s3", namespace, tmp_path)
    apply(stack, location)
    apply(stack, backup_manifest(namespace, "for-b"))
    assert wait_final(stack, namespace, "for-b", services, timeout=180)["status"] == "Successful"
    originals = {
        (kind, name): json.loads(stack.kubectl("-n", namespace, "get", kind, name, "-o", "json").stdout)
        for kind, name in (("configmap", "settings"), ("secret", "credentials"), ("statefulset", "db"),
                           ("pvc", "data-db-0"))
    }  # fmt: skip

    syncing = copy.deepcopy(location)
    syncing["location"]["sync"] = True
    apply(second_cluster, syncing)
    wait_for(
        "the backup to appear in cluster b",
        lambda: (get(second_cluster, namespace_b, "applicationbackup", "for-b") or {}).get("status"),
        timeout=60,
    )
    apply(second_cluster, {"apiVersion": "davit.dev/v1alpha1", "kind": "ApplicationRestore",
                           "metadata": {"name": "from-a", "namespace": namespace_b},
                           "spec": {"backupName": "for-b", "backupLocation": "loc"}})  # fmt: skip

    def restored() -> dict[str, Any] | None:
        status = (get(second_cluster, namespace_b, "applicationrestore", "from-a") or {}).get("status") or {}
        return status if status.get("stage") == "Final" else None

    try:
        status = wait_for("the restore in cluster b", restored, timeout=240)
    except AssertionError:
        print(restoring_b.logs())
        raise
    assert status["status"] == "Successful", (status.get("reason"), status.get("resourcesByKind"))
    assert status["volumesProgress"] == "1/1"
    for (kind, name), original in originals.items():
        copy_b = json.loads(second_cluster.kubectl("-n", namespace_b, "get", kind, name, "-o", "json").stdout)
        assert normalize(copy_b, {}) == normalize(original, {}), (kind, name)
    # The pod runs once its init container has found and removed the node agent's marker.
    ready = "jsonpath={.status.conditions[?(@.type=='Ready')].status}"
    wait_for(
        "db-0 to run in cluster b",
        lambda: "True" in second_cluster.kubectl("-n", namespace_b, "get", "pod", "db-0", "-o", ready).stdout,
        timeout=60,
    )
    assert_same_tree(volume, volume_of(second_cluster, namespace_b, "data-db-0"))
