"""A tenant attacking through Davit's own resources: editing an accepted operation, restoring a backup
whose stored bytes it rewrote with its own credentials, and planting scratch state in Redis. Each test
performs the attack as a tenant would and then lists the cluster and the store, not Davit's status, to
show nothing was written where it must not be."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from davit.api.types import LocationSpec
from davit.format.layout import BackupRef
from davit.operations.scratch import BackupScratch
from davit.storage import factory
from tests.conftest import StackEnv
from tests.helpers import wait_for
from tests.integration.conftest import Services
from tests.integration.tenants import ADMIN_NAMESPACE as ADMIN
from tests.integration.tenants import events_of, wait_final
from tests.integration.test_backup_resources import (
    apply,
    backup_manifest,
    backup_status,
    location_manifest,
    repository_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def start_only(stack: StackEnv, tmp_path: Path) -> Iterator[Callable[..., Services]]:
    """Starts just the services named, so a test can hold an operation between two stages."""
    import redis

    redis.Redis.from_url(stack.redis_url).flushdb()
    running = Services(stack, tmp_path / "logs")
    running.log_dir.mkdir()

    def start(*names: str) -> Services:
        for name in names:
            running.start(name)
        return running

    yield start
    running.stop_all()
    stack.kubectl("-n", ADMIN, "delete", "lease", running.lease, "--ignore-not-found")


def get(stack: StackEnv, kind: str, namespace: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(stack.kubectl("-n", namespace, "get", kind, name, "-o", "json").stdout)
    return found


def stored_keys(location: dict[str, Any]) -> list[str]:
    """Every key under the location's prefix, listed with the tenant's own credentials."""
    spec = LocationSpec.model_validate(location["location"])
    store = factory.open_store(factory.resolve_credentials(spec, None))
    return sorted(info.key for info in store.list(""))


def accepted(stack: StackEnv, kind: str, namespace: str, name: str) -> dict[str, Any]:
    def has_generation() -> dict[str, Any] | None:
        obj = get(stack, kind, namespace, name)
        return obj if (obj.get("status") or {}).get("acceptedGeneration") else None

    return wait_for(f"{kind} {name} to be accepted", has_generation)


def test_a_backup_edited_after_acceptance_is_failed_by_the_worker_and_reads_nothing(
    stack: StackEnv, namespace: str, start_only: Callable[..., Services], tmp_path: Path
) -> None:
    """The tenant's backup is accepted for its own namespace; before a worker picks it up the tenant
    points it at kube-system. The watcher is down, so only the workers' own check stands in the way."""
    location = location_manifest(stack, "s3", namespace, tmp_path)
    apply(stack, location)
    stack.kubectl("-n", namespace, "create", "configmap", "mine", "--from-literal=a=b")
    services = start_only("watcher")
    apply(stack, backup_manifest(namespace, "edited"))
    before = accepted(stack, "applicationbackup", namespace, "edited")
    services.stop_all()

    stack.kubectl("-n", namespace, "patch", "applicationbackup", "edited", "--type=merge",
                  "-p", json.dumps({"spec": {"namespaces": ["kube-system"]}}))  # fmt: skip
    edited = get(stack, "applicationbackup", namespace, "edited")
    assert edited["metadata"]["generation"] > before["status"]["acceptedGeneration"]
    services = start_only("backup", "resources")

    status = wait_final(stack, services, "applicationbackup", namespace, "edited")
    assert status["status"] == "Failed" and status["reason"].startswith("SpecChanged"), status
    assert any(
        e["reason"] == "SpecChanged" and e["type"] == "Warning" for e in events_of(stack, namespace, "edited")
    )
    # Listed with the tenant's credentials: no resource part, no manifest, nothing of kube-system.
    assert not [k for k in stored_keys(location) if k.startswith("backups/")], stored_keys(location)


def test_a_backup_edited_after_acceptance_is_failed_by_the_watcher(
    stack: StackEnv, namespace: str, start_only: Callable[..., Services], tmp_path: Path
) -> None:
    location = location_manifest(stack, "s3", namespace, tmp_path)
    apply(stack, location)
    services = start_only("watcher")
    apply(stack, backup_manifest(namespace, "edited"))
    accepted(stack, "applicationbackup", namespace, "edited")

    stack.kubectl("-n", namespace, "patch", "applicationbackup", "edited", "--type=merge",
                  "-p", json.dumps({"spec": {"namespaces": ["kube-system"]}}))  # fmt: skip

    status = wait_final(stack, services, "applicationbackup", namespace, "edited")
    assert status["status"] == "Failed" and status["reason"].startswith("SpecChanged"), status
    assert any(e["reason"] == "SpecChanged" for e in events_of(stack, namespace, "edited"))
    services = start_only("backup", "resources")  # a message already queued finds a finished backup
    assert not [k for k in stored_keys(location) if k.startswith("backups/")]


def _successful_backup(
    stack: StackEnv, services: Services, namespace: str, name: str
) -> tuple[BackupRef, dict[str, Any]]:
    apply(stack, backup_manifest(namespace, name))
    status = wait_final(stack, services, "applicationbackup", namespace, name)
    assert status["status"] == "Successful", status
    uid = get(stack, "applicationbackup", namespace, name)["metadata"]["uid"]
    return BackupRef(namespace, name, uid), status


def test_a_restore_edited_after_acceptance_writes_nothing(
    stack: StackEnv, namespace: str, start_only: Callable[..., Services], tmp_path: Path
) -> None:
    """Accepted for the tenant's namespace, then re-pointed at another namespace with namespaceMapping."""
    location = location_manifest(stack, "s3", namespace, tmp_path)
    apply(stack, location)
    stack.kubectl("-n", namespace, "create", "configmap", "mine", "--from-literal=a=b")
    services = start_only("watcher", "backup", "resources")
    _successful_backup(stack, services, namespace, "source")
    victim = f"victim-{uuid.uuid4().hex[:6]}"
    stack.kubectl("create", "namespace", victim)
    try:
        apply(stack, {"apiVersion": "davit.dev/v1alpha1", "kind": "ApplicationRestore",
                      "metadata": {"name": "edited", "namespace": namespace},
                      "spec": {"backupName": "source", "backupLocation": "loc"}})  # fmt: skip
        accepted(stack, "applicationrestore", namespace, "edited")
        services.stop_all()
        stack.kubectl("-n", namespace, "patch", "applicationrestore", "edited", "--type=merge",
                      "-p", json.dumps({"spec": {"namespaceMapping": {namespace: victim}}}))  # fmt: skip
        services = start_only("restore")

        status = wait_final(stack, services, "applicationrestore", namespace, "edited")
        assert status["status"] == "Failed" and status["reason"].startswith("SpecChanged"), status
        assert stack.kubectl("-n", victim, "get", "configmap", "mine", check=False).returncode != 0
    finally:
        stack.kubectl("delete", "namespace", victim, "--wait=false", check=False)


def _crafted(namespace: str, tag: str) -> list[dict[str, Any]]:
    """What a tenant writes into its own backup: objects a restore in its namespace must never create."""
    return [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         # A namespace in the stored object does not make a cluster-scoped kind namespaced.
         "metadata": {"name": f"{tag}-admin", "namespace": namespace},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
         "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": namespace}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": f"{tag}-system", "namespace": "kube-system"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
         "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": namespace}]},
        {"apiVersion": "v1", "kind": "PersistentVolume",
         "metadata": {"name": f"{tag}-root", "namespace": namespace},
         "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                  "hostPath": {"path": "/"}}},
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": f"../../kube-system/configmaps/{tag}-pwned", "namespace": namespace},
         "data": {"a": "b"}},
    ]  # fmt: skip


def test_a_restore_of_objects_rewritten_in_the_tenants_bucket_creates_nothing(
    stack: StackEnv, namespace: str, start_only: Callable[..., Services], tmp_path: Path
) -> None:
    location = location_manifest(stack, "s3", namespace, tmp_path)
    apply(stack, location)
    stack.kubectl("-n", namespace, "create", "configmap", "mine", "--from-literal=a=b")
    services = start_only("watcher", "backup", "resources", "restore")
    ref, _status = _successful_backup(stack, services, namespace, "source")
    tag = f"evil-{uuid.uuid4().hex[:6]}"

    # The tenant's own credentials, the documented format: one more part, listed in the manifest.
    repository = repository_for(location)
    manifest = repository.read_manifest(ref)
    info = repository.write_part(ref, f"{namespace}/v1/configmaps#2", _crafted(namespace, tag))
    manifest["parts"].append({"part": info.part, "key": info.key, "count": info.count,
                              "rawSize": info.raw_size, "storedSize": info.stored_size,
                              "resources": []})  # fmt: skip
    repository.write_manifest(ref, manifest)
    stack.kubectl("-n", namespace, "delete", "configmap", "mine")

    apply(stack, {"apiVersion": "davit.dev/v1alpha1", "kind": "ApplicationRestore",
                  "metadata": {"name": "crafted", "namespace": namespace},
                  "spec": {"backupName": "source", "backupLocation": "loc"}})  # fmt: skip
    status = wait_final(stack, services, "applicationrestore", namespace, "crafted")

    assert status["status"] == "Failed", status
    assert status["reason"].startswith("RestoreRefused"), status
    assert "cluster-scoped" in status["reason"] and "kube-system" in status["reason"], status
    assert any(e["reason"] == "RestoreRefused" for e in events_of(stack, namespace, "crafted"))
    # Listed from the cluster: none of it exists, and nothing else of the backup was written either.
    assert stack.kubectl("get", "clusterrolebinding", f"{tag}-admin", check=False).returncode != 0
    assert (
        stack.kubectl("-n", "kube-system", "get", "rolebinding", f"{tag}-system", check=False).returncode != 0
    )
    assert stack.kubectl("get", "pv", f"{tag}-root", check=False).returncode != 0
    assert tag not in stack.kubectl("get", "configmaps", "-A", "-o", "name").stdout
    assert stack.kubectl("-n", namespace, "get", "configmap", "mine", check=False).returncode != 0


def test_a_restore_from_another_location_than_its_backups_is_refused(
    stack: StackEnv, namespace: str, start_only: Callable[..., Services], tmp_path: Path
) -> None:
    apply(stack, location_manifest(stack, "s3", namespace, tmp_path))
    other = location_manifest(stack, "s3", namespace, tmp_path)
    other["metadata"]["name"] = "other"
    apply(stack, other)
    stack.kubectl("-n", namespace, "create", "configmap", "mine", "--from-literal=a=b")
    services = start_only("watcher", "backup", "resources", "restore")
    _successful_backup(stack, services, namespace, "source")

    apply(stack, {"apiVersion": "davit.dev/v1alpha1", "kind": "ApplicationRestore",
                  "metadata": {"name": "elsewhere", "namespace": namespace},
                  "spec": {"backupName": "source", "backupLocation": "other"}})  # fmt: skip
    status = wait_final(stack, services, "applicationrestore", namespace, "elsewhere")
    assert status["status"] == "Failed" and "spec.backupLocation" in status["reason"], status
    assert any(e["reason"] == "ValidationFailed" for e in events_of(stack, namespace, "elsewhere"))
    assert not [k for k in stored_keys(other) if k.startswith("restores/")]


def test_export_scope_planted_in_redis_is_refused(
    stack: StackEnv, namespace: str, start_only: Callable[..., Services], tmp_path: Path
) -> None:
    """Someone who can write Redis plants a plan for the tenant's backup that lists kube-system's
    Secrets; the export lists only what the accepted spec covers."""
    location = location_manifest(stack, "s3", namespace, tmp_path)
    apply(stack, location)
    services = start_only("watcher", "backup")
    apply(stack, backup_manifest(namespace, "planted"))
    # The services may still be starting on a busy machine: the default 30 s is not always enough.
    wait_for("the backup to reach Applications",
             lambda: backup_status(stack, namespace, "planted").get("stage") == "Applications",
             timeout=180)  # fmt: skip
    uid = get(stack, "applicationbackup", namespace, "planted")["metadata"]["uid"]

    import redis

    state = BackupScratch(redis.Redis.from_url(stack.redis_url), uid)
    target = {"group": "", "version": "v1", "plural": "secrets", "kind": "Secret",
              "namespace": "kube-system", "selector": None}  # fmt: skip
    assert state.lay_out_export(
        {"kube-system/v1/secrets": target}, ["kube-system"], ["kube-system/v1/secrets#1"]
    )
    services.start("resources")

    status = wait_final(stack, services, "applicationbackup", namespace, "planted")
    assert status["status"] == "Failed" and "kube-system" in status["reason"], status
    assert any(e["reason"] == "ScopeRefused" for e in events_of(stack, namespace, "planted"))
    keys = stored_keys(location)
    assert not [k for k in keys if "/resources/" in k or k.endswith("/manifest")], keys


def test_sync_imports_into_a_tenant_namespace_only_that_namespaces_backups(
    stack: StackEnv, namespace: str, stack_services: Callable[..., Services], tmp_path: Path
) -> None:
    """The tenant copies its own backup, byte for byte, to where backups of kube-system and of another
    namespace live in its bucket, then turns sync on: only its own namespace's backup is imported."""
    location = location_manifest(stack, "s3", namespace, tmp_path)
    apply(stack, location)
    stack.kubectl("-n", namespace, "create", "configmap", "mine", "--from-literal=a=b")
    services = stack_services(DAVIT_LOCATION_CHECK_SECONDS="2")
    ref, _status = _successful_backup(stack, services, namespace, "own")
    stack.kubectl("-n", namespace, "delete", "applicationbackup", "own")

    spec = LocationSpec.model_validate(location["location"])
    store = factory.open_store(factory.resolve_credentials(spec, None))
    planted = [
        BackupRef(ADMIN, "planted", str(uuid.uuid4())),
        BackupRef("default", "planted", str(uuid.uuid4())),
    ]
    for target in planted:
        for info in list(store.list(ref.root)):
            store.put(target.root + info.key[len(ref.root) :], store.get(info.key))
    keys = stored_keys(location)
    assert all(target.manifest in keys for target in planted), keys

    location["location"]["sync"] = True
    apply(stack, location)
    wait_for(
        "the tenant's own backup to be imported",
        lambda: (
            (get(stack, "applicationbackup", namespace, "own").get("status") or {}).get("stage") == "Final"
            if stack.kubectl("-n", namespace, "get", "applicationbackup", "own", check=False).returncode == 0
            else None
        ),
        timeout=60,
    )
    synced = (get(stack, "backuplocation", namespace, "loc").get("status") or {}).get("lastSynced")
    wait_for(
        "another sync",
        lambda: (
            (get(stack, "backuplocation", namespace, "loc").get("status") or {}).get("lastSynced") != synced
        ),
        timeout=30,
    )
    # Listed across the cluster: no import of the planted backups anywhere.
    everywhere = json.loads(stack.kubectl("get", "applicationbackups", "-A", "-o", "json").stdout)["items"]
    names = {(b["metadata"]["namespace"], b["metadata"]["name"]) for b in everywhere}
    assert (namespace, "own") in names
    assert not [n for n in names if "planted" in n[1]], names
