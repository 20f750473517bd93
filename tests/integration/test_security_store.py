"""What a location holds is untrusted input. A tenant may only create Davit resources in its own namespace,
but it owns its bucket: with the location's own credentials it writes crafted objects there, following
docs/format.md and finding the keys with Davit's layout, and then asks Davit to read them (a restore, a
sync). Each attack must end as a clear failure naming the object, with nothing created in the cluster
(listed, not taken from Davit's status), and the worker must not spend what the crafted object asks for.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import zstandard

from davit.format.layout import BackupRef
from tests.conftest import StackEnv
from tests.crafted import nested_json, sealed_plain, zstd_claiming, zstd_of_zeros
from tests.helpers import wait_for
from tests.integration.conftest import Services
from tests.integration.tenants import TenantUser, events_of
from tests.integration.test_backup_resources import location_manifest, repository_for

pytestmark = pytest.mark.integration

ENCRYPTION_KEY = "correct horse battery staple"
MIB = 1 << 20


class Tenant(TenantUser):
    """The tenant: kubectl as its ServiceAccount (impersonated, so the API server applies its RBAC), and
    its bucket, written with the credentials of its own BackupLocation."""

    def __init__(self, stack: StackEnv, namespace: str, location: dict[str, Any]) -> None:
        super().__init__(stack, namespace)
        self.location = location
        s3 = location["location"]["s3Config"]
        self.bucket = location["location"]["path"]
        self.prefix = location["location"]["prefix"]
        self.s3 = boto3.client(
            "s3",
            endpoint_url=s3["endpoint"],
            region_name=s3["region"],
            aws_access_key_id=s3["accessKeyID"],
            aws_secret_access_key=s3["secretAccessKey"],
        )

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        return self.find(kind, name)

    def put(self, key: str, data: bytes) -> None:
        """Write an object into the location, as anyone with the bucket's credentials can."""
        self.s3.put_object(Bucket=self.bucket, Key=f"{self.prefix}/{key}", Body=data)

    def keys(self) -> set[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{self.prefix}/"
        )
        return {o["Key"][len(self.prefix) + 1 :] for page in pages for o in page.get("Contents", [])}

    def backup(self, name: str, services: Services) -> BackupRef:
        self.apply({
            "apiVersion": "davit.dev/v1alpha1", "kind": "ApplicationBackup",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": {"backupLocation": "loc", "namespaces": [self.namespace], "reclaimPolicy": "Retain"},
        })  # fmt: skip
        status = final(self, "applicationbackup", name, services)
        assert status["status"] == "Successful", status
        obj = self.get("applicationbackup", name)
        assert obj is not None
        return BackupRef(self.namespace, name, obj["metadata"]["uid"])

    def restore(self, name: str, backup: str) -> None:
        self.apply({
            "apiVersion": "davit.dev/v1alpha1", "kind": "ApplicationRestore",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": {"backupName": backup, "backupLocation": "loc"},
        })  # fmt: skip


def final(tenant: Tenant, kind: str, name: str, services: Services, timeout: float = 120) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        status: dict[str, Any] = (tenant.get(kind, name) or {}).get("status") or {}
        return status if status.get("stage") == "Final" else None

    try:
        return wait_for(f"{kind} {tenant.namespace}/{name} to finish", done, timeout=timeout)
    except AssertionError:
        print(services.logs())
        raise


def namespace_objects(stack: StackEnv, namespace: str) -> set[tuple[str, str]]:
    """(kind, name) of what a restore could create in the namespace."""
    out = stack.kubectl(
        "-n", namespace, "get", "configmaps,secrets,serviceaccounts,roles,rolebindings,pods", "-o", "json"
    ).stdout
    return {(o["kind"], o["metadata"]["name"]) for o in json.loads(out)["items"]}


def cluster_bindings(stack: StackEnv) -> set[str]:
    out = stack.kubectl("get", "clusterrolebindings", "-o", "json").stdout
    return {o["metadata"]["name"] for o in json.loads(out)["items"]}


def sealed_json(value: Any) -> bytes:
    """A plain sealed object holding ``value``: what anyone can write without a key."""
    return sealed_plain(zstandard.ZstdCompressor().compress(json.dumps(value).encode()))


def configmap(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace},
        "data": {"planted": "by the bucket's writer"},
    }  # fmt: skip


@pytest.fixture
def tenant_s3(stack: StackEnv, namespace: str, tmp_path: Path) -> Iterator[Tenant]:
    # The namespace's application (put there by its owner, not by the tenant's Davit role).
    stack.kubectl("-n", namespace, "create", "configmap", "settings", "--from-literal=mode=production")
    yield Tenant(stack, namespace, location_manifest(stack, "s3", namespace, tmp_path))


# --- finding: encrypted locations read only what their key sealed --------------------------------------


def test_a_forged_plain_backup_in_an_encrypted_location_is_refused_and_restores_nothing(
    stack: StackEnv, namespace: str, services: Services, tenant_s3: Tenant
) -> None:
    tenant = tenant_s3
    tenant.location["location"]["encryptionKey"] = ENCRYPTION_KEY
    tenant.apply(tenant.location)
    ref = tenant.backup("nightly", services)
    # The location record says the location is encrypted, and carries a MAC.
    record = json.loads(
        tenant.s3.get_object(Bucket=tenant.bucket, Key=f"{tenant.prefix}/davit-location.json")["Body"].read()
    )
    assert record["encrypted"] is True and len(record["mac"]) == 64, record
    assert record["kdf"]["n"] >= 2**17, record

    # Without the key, the tenant forges the backup's manifest and a part: plain objects, checksummed as
    # docs/format.md describes, holding a ConfigMap and a RoleBinding that were never backed up.
    part = ref.resource_part(f"{namespace}/v1/configmaps")
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "planted", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "tenant", "namespace": namespace}],
    }  # fmt: skip
    tenant.put(part, sealed_json([configmap(namespace, "planted"), binding]))
    tenant.put(ref.manifest, sealed_json({
        "formatVersion": 2,
        "backup": {"metadata": {"name": "nightly", "namespace": namespace, "uid": ref.uid}, "spec": {}},
        "summary": {"resourceCount": 2, "encrypted": False},
        "parts": [{"part": f"{namespace}/v1/configmaps", "key": part, "count": 2}],
        "resources": [{"apiVersion": "v1", "kind": "ConfigMap", "namespace": namespace, "name": "planted"}],
        "volumes": [],
    }))  # fmt: skip
    before, bindings = namespace_objects(stack, namespace), cluster_bindings(stack)

    started = time.monotonic()
    tenant.restore("from-forged", "nightly")
    status = final(tenant, "applicationrestore", "from-forged", services)
    elapsed = time.monotonic() - started
    assert status["status"] == "Failed", status
    assert ref.manifest in status["reason"] and "not encrypted" in status["reason"], status
    assert elapsed < 20, f"the refusal took {elapsed:.1f} s"
    events = events_of(stack, namespace, "from-forged")
    assert any(e["type"] == "Warning" and ref.manifest in e["message"] for e in events), events
    # Nothing was created: listed, not taken from the status.
    after = namespace_objects(stack, namespace)
    assert after == before, after - before
    assert ("ConfigMap", "planted") not in after and ("RoleBinding", "planted") not in after
    assert cluster_bindings(stack) == bindings


def test_a_plain_location_record_swapped_in_makes_the_location_refuse(
    stack: StackEnv, namespace: str, services: Services, tenant_s3: Tenant
) -> None:
    """The whole location made to look unencrypted (its record replaced by a plain one, and a plain
    backup beside it): with the BackupLocation's key configured, the record does not verify, and the
    restore fails naming it."""
    tenant = tenant_s3
    tenant.location["location"]["encryptionKey"] = ENCRYPTION_KEY
    tenant.apply(tenant.location)
    ref = tenant.backup("nightly", services)
    tenant.put("davit-location.json", json.dumps({
        "formatVersion": 2, "salt": "00" * 16, "createdAt": "2026-01-01T00:00:00Z", "encrypted": False,
        "kdf": {"name": "scrypt", "n": 2**14, "r": 8, "p": 1},
    }).encode())  # fmt: skip
    tenant.put(ref.manifest, sealed_json({"formatVersion": 2, "parts": [], "volumes": []}))
    before = namespace_objects(stack, namespace)
    tenant.restore("after-swap", "nightly")
    status = final(tenant, "applicationrestore", "after-swap", services)
    assert status["status"] == "Failed", status
    assert "davit-location.json" in status["reason"], status
    assert namespace_objects(stack, namespace) == before


# --- finding: unbounded decompression -----------------------------------------------------------------


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def reset_peak(pid: int) -> None:
    """Reset the process's peak RSS (VmHWM) to its current RSS (proc(5), clear_refs "5")."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


@pytest.mark.parametrize(
    ("target", "payload", "expected"),
    [
        pytest.param(
            "manifest", zstd_claiming(1 << 40), "1099511627776 bytes", id="tiny-object-claiming-1TiB"
        ),
        pytest.param(
            "part",
            zstd_of_zeros(10 << 30, 10 * MIB),
            "10737418240 bytes",
            id="10MB-object-expanding-to-10GiB",
        ),
    ],
)
def test_a_decompression_bomb_fails_the_restore_at_once_without_the_memory(
    stack: StackEnv,
    namespace: str,
    services: Services,
    tenant_s3: Tenant,
    target: str,
    payload: bytes,
    expected: str,
) -> None:
    tenant = tenant_s3
    tenant.apply(tenant.location)
    ref = tenant.backup("nightly", services)
    manifest = repository_for(tenant.location).read_manifest(ref)
    key = ref.manifest if target == "manifest" else manifest["parts"][0]["key"]
    bomb = sealed_plain(payload)
    tenant.put(key, bomb)
    assert len(bomb) < 64 if target == "manifest" else len(bomb) < 11 * MIB

    worker = services.procs["restore"].pid
    baseline = rss_kib(worker, "VmRSS")
    reset_peak(worker)
    before = namespace_objects(stack, namespace)
    started = time.monotonic()
    tenant.restore("bombed", "nightly")
    status = final(tenant, "applicationrestore", "bombed", services)
    elapsed = time.monotonic() - started
    peak = rss_kib(worker, "VmHWM")
    growth_mb = (peak - baseline) * 1024 / 1e6
    print(
        f"{target} bomb of {len(bomb)} bytes claiming {expected}: restore Failed after {elapsed:.2f} s; "
        f"restore worker RSS {baseline / 1024:.1f} MiB before, peak {peak / 1024:.1f} MiB "
        f"(+{growth_mb:.1f} MB)"
    )
    assert status["status"] == "Failed", status
    assert key in status["reason"] and expected in status["reason"], status
    assert "more than the" in status["reason"], status
    assert elapsed < 20, f"the refusal took {elapsed:.1f} s"
    assert growth_mb < 100, f"the restore worker grew by {growth_mb:.1f} MB"
    assert services.procs["restore"].poll() is None, "the restore worker died"
    assert namespace_objects(stack, namespace) == before


def test_an_oversized_manifest_is_not_even_read(
    stack: StackEnv, namespace: str, services: Services, tenant_s3: Tenant
) -> None:
    """An object longer than any manifest may be is refused by its stored length: the worker reads none
    of it (S3 says the length before the body is read)."""
    tenant = tenant_s3
    tenant.apply(tenant.location)
    ref = tenant.backup("nightly", services)
    tenant.put(ref.manifest, sealed_plain(os.urandom(80 * MIB)))
    worker = services.procs["restore"].pid
    baseline = rss_kib(worker, "VmRSS")
    reset_peak(worker)
    started = time.monotonic()
    tenant.restore("oversized", "nightly")
    status = final(tenant, "applicationrestore", "oversized", services)
    elapsed = time.monotonic() - started
    growth_mb = (rss_kib(worker, "VmHWM") - baseline) * 1024 / 1e6
    print(f"80 MiB manifest: restore Failed after {elapsed:.2f} s; restore worker RSS +{growth_mb:.1f} MB")
    assert status["status"] == "Failed", status
    assert ref.manifest in status["reason"] and "bytes or more stored" in status["reason"], status
    assert elapsed < 20, f"the refusal took {elapsed:.1f} s"
    assert growth_mb < 100, f"the restore worker grew by {growth_mb:.1f} MB"


# --- finding: a deeply nested manifest in a synced location ----------------------------------------------


def test_a_deeply_nested_manifest_is_reported_and_sync_imports_the_others(
    stack: StackEnv, namespace: str, stack_services: Any, tenant_s3: Tenant
) -> None:
    services: Services = stack_services(DAVIT_LOCATION_CHECK_SECONDS="2")
    tenant = tenant_s3
    tenant.apply(tenant.location)
    good = tenant.backup("good", services)
    bad = tenant.backup("bad", services)
    # Both leave the cluster (their data stays: reclaimPolicy Retain); the tenant makes one of them a
    # manifest nested 100000 levels deep, which Python's parser cannot read without a RecursionError.
    for name in ("good", "bad"):
        stack.kubectl(tenant.user, "-n", namespace, "delete", "applicationbackup", name)
    deep = b'{"formatVersion": 2, "backup": ' + nested_json(100_000) + b"}"
    tenant.put(bad.manifest, sealed_plain(zstandard.ZstdCompressor().compress(deep)))
    # And two backups that never were: manifests of the wrong shape, one the API server would refuse.
    odd_types = BackupRef(namespace, "odd-types", str(uuid.uuid4()))
    tenant.put(odd_types.manifest, sealed_json({"formatVersion": 2, "volumes": 5}))
    odd_spec = BackupRef(namespace, "odd-spec", str(uuid.uuid4()))
    tenant.put(
        odd_spec.manifest, sealed_json({"formatVersion": 2, "backup": {"spec": {"namespaces": "all"}}})
    )
    assert {good.manifest, bad.manifest, odd_types.manifest, odd_spec.manifest} <= tenant.keys()

    tenant.location["location"]["sync"] = True
    tenant.apply(tenant.location)
    imported = wait_for(
        "the good backup to be imported",
        lambda: ((tenant.get("applicationbackup", "good") or {}).get("status") or {}).get("stage") == "Final",
        timeout=60,
    )
    assert imported
    warning = wait_for(
        "the bad backup to be reported",
        lambda: next(
            (
                e
                for e in events_of(stack, namespace, "loc")
                if e["reason"] == "ImportSkipped" and "bad" in e["message"]
            ),
            None,
        ),
        timeout=60,
    )
    assert "nested deeper than" in warning["message"] and bad.manifest in warning["message"], warning
    assert warning["type"] == "Warning"
    skipped = " ".join(
        e["message"] for e in events_of(stack, namespace, "loc") if e["reason"] == "ImportSkipped"
    )
    assert "odd-types: malformed manifest" in skipped, skipped
    assert "odd-spec: " in skipped, skipped
    # The sync goes on: more syncs complete, the worker is alive, the bad backup was never created.
    synced = (tenant.get("backuplocation", "loc") or {}).get("status", {}).get("lastSynced")
    wait_for(
        "another sync",
        lambda: (tenant.get("backuplocation", "loc") or {}).get("status", {}).get("lastSynced") != synced,
        timeout=30,
    )
    assert services.procs["retention"].poll() is None, "the retention worker died"
    for name in ("bad", "odd-types", "odd-spec"):
        assert tenant.get("applicationbackup", name) is None, name
    assert "RecursionError" not in services.logs()
    assert os.path.exists(f"/proc/{services.procs['retention'].pid}")


def test_a_deeply_nested_manifest_stops_garbage_collection_with_its_name_and_deletes_nothing(
    stack: StackEnv, namespace: str, stack_services: Any, tenant_s3: Tenant
) -> None:
    """What an unreadable manifest names is unknown, so nothing may be deleted on its account: each
    collection stops, says which object stopped it, and the retention worker carries on."""
    services: Services = stack_services(DAVIT_LOCATION_CHECK_SECONDS="2", DAVIT_GC_INTERVAL_SECONDS="3")
    tenant = tenant_s3
    tenant.apply(tenant.location)
    tenant.backup("good", services)
    deep = BackupRef(namespace, "deep", str(uuid.uuid4()))
    body = b'{"formatVersion": 2, "volumes": ' + nested_json(100_000) + b"}"
    tenant.put(deep.manifest, sealed_plain(zstandard.ZstdCompressor().compress(body)))
    # A repository for the collector to look at: a marker of a pack that does not exist, which a run
    # that got that far would remove.
    marker = f"repo/gc/doomed/packs/{'ab' * 32}.{int(time.time()) - 86400 * 30}"
    tenant.put(marker, sealed_json(None))
    before = tenant.keys()

    def failures() -> list[dict[str, Any]]:
        return [e for e in events_of(stack, namespace, "loc") if e["reason"] == "CollectionFailed"]

    first = wait_for("a collection to stop", lambda: failures() or None, timeout=90)[0]
    assert first["type"] == "Warning"
    assert deep.manifest in first["message"] and "nested deeper than" in first["message"], first
    # Later collections run, and stop the same way: the worker did not crash.
    wait_for(
        "another collection",
        lambda: sum(int(e.get("count") or 1) for e in failures()) >= 2 or None,
        timeout=60,
    )
    assert services.procs["retention"].poll() is None, "the retention worker died"
    assert tenant.keys() == before, "a collection deleted something"
    assert "RecursionError" not in services.logs()
