"""The demo's comparison (devstack/demo_check.py) finds every kind of difference it claims to, and none
where there is none: volume manifests, objects, what is left uncompared, and the summary's verdict."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from devstack import demo_check
from devstack.demo_check import FileEntry, Record


def make_volume(root: Path) -> None:
    (root / "base").mkdir(parents=True)
    (root / "base" / "16384").write_bytes(bytes(range(256)) * 64)
    (root / "pg_wal.log").write_text("00000001 order 42 pending\n")
    (root / "empty").mkdir()
    (root / "current").symlink_to("base/16384")
    os.chmod(root / "pg_wal.log", 0o640)


@pytest.fixture
def volumes(tmp_path: Path) -> tuple[Path, Path]:
    """A volume and an exact copy of it: contents, modes, mtimes (directories' and links' too)."""
    original, copy = tmp_path / "original", tmp_path / "copy"
    make_volume(original)
    shutil.copytree(original, copy, symlinks=True)
    return original, copy


def differences(original: Path, copy: Path) -> list[str]:
    return demo_check.volume_differences(
        {"data": demo_check.manifest(original)}, {"data": demo_check.manifest(copy)}
    )


def test_a_manifest_lists_every_entry_below_the_root_with_what_is_compared(
    volumes: tuple[Path, Path],
) -> None:
    entries = {e.path: e for e in demo_check.manifest(volumes[0])}
    assert sorted(entries) == ["base", "base/16384", "current", "empty", "pg_wal.log"]
    table = entries["base/16384"]
    assert (table.type, table.size, len(table.sha256 or "")) == ("file", 16384, 64)
    assert entries["pg_wal.log"].mode == "0640"
    assert (entries["current"].type, entries["current"].target) == ("symlink", "base/16384")
    assert entries["empty"].type == "dir"
    assert demo_check.volume_totals(list(entries.values())) == (2, 16384 + 26)


def test_an_exact_copy_has_no_differences(volumes: tuple[Path, Path]) -> None:
    assert differences(*volumes) == []


def test_one_changed_byte_of_the_same_size_and_mtime_is_found(volumes: tuple[Path, Path]) -> None:
    original, copy = volumes
    table = copy / "base" / "16384"
    kept = table.stat()
    with table.open("r+b") as f:
        f.seek(1000)
        f.write(b"\xff")
    os.utime(table, ns=(kept.st_atime_ns, kept.st_mtime_ns))
    assert differences(original, copy) == ["volume data: base/16384 differs in sha256"]


def test_missing_extra_mode_mtime_and_link_target_differences_are_found(volumes: tuple[Path, Path]) -> None:
    original, copy = volumes
    (copy / "empty").rmdir()
    (copy / "seeded").write_text("a file the restore did not write")
    os.chmod(copy / "pg_wal.log", 0o600)
    os.utime(copy / "base" / "16384", ns=(0, 10**9))
    (copy / "current").unlink()
    (copy / "current").symlink_to("pg_wal.log")
    found = differences(original, copy)
    assert "volume data: empty missing" in found
    assert "volume data: seeded is extra" in found
    assert "volume data: pg_wal.log differs in mode" in found
    assert "volume data: base/16384 differs in mtime_ns" in found
    assert any(d.startswith("volume data: current differs in") and "target" in d for d in found)


def test_a_volume_missing_after_the_restore_is_a_difference() -> None:
    entry = FileEntry("f", "file", "0644", 1, size=1, sha256="0" * 64)
    assert demo_check.volume_differences({"data": [entry]}, {}) == ["volume data: missing after the restore"]


def test_object_differences_name_the_field_and_both_values() -> None:
    before = {"ConfigMap web-config": {"data": {"greeting": "hello"}, "kind": "ConfigMap"}}
    after = {"ConfigMap web-config": {"data": {"greeting": "bye", "new": 1}, "kind": "ConfigMap"}}
    assert demo_check.object_differences(before, after) == [
        'ConfigMap web-config: data.greeting: "hello" → "bye"',
        "ConfigMap web-config: data.new: added 1",
    ]
    assert demo_check.object_differences(before, {}) == ["ConfigMap web-config: missing after the restore"]
    assert demo_check.object_differences({}, before) == [
        "ConfigMap web-config: exists only after the restore"
    ]
    lists = demo_check.field_differences({"ports": [{"port": 80}]}, {"ports": [{"port": 81}]})
    assert lists == ["ports[0].port: 80 → 81"]


def obj(api_version: str, kind: str, name: str, **extra: Any) -> dict[str, Any]:
    meta = {"name": name, **extra.pop("metadata", {})}
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, **extra}


OWNED = {
    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "controller": True}]
}


@pytest.mark.parametrize(
    ("item", "counted_as"),
    [
        (obj("v1", "ConfigMap", "web-config"), None),
        (obj("v1", "ConfigMap", "kube-root-ca.crt"), "ConfigMap kube-root-ca.crt"),
        (obj("v1", "Secret", "db-token-x", type="kubernetes.io/service-account-token"), "Secret (token)"),
        (obj("v1", "Secret", "db-credentials", type="Opaque"), None),
        (obj("v1", "Pod", "db-0", metadata=OWNED), "Pod"),
        (obj("v1", "Pod", "standalone"), None),
        (obj("apps/v1", "ControllerRevision", "db-1", metadata=OWNED), "ControllerRevision"),
        (obj("v1", "Endpoints", "db"), "Endpoints"),
        (obj("davit.dev/v1alpha1", "BackupLocation", "local"), "BackupLocation (Davit's, never restored)"),
        (obj("v1", "PersistentVolumeClaim", "data-db-0"), None),
    ],
)
def test_what_the_cluster_makes_again_is_counted_not_compared(
    item: dict[str, Any], counted_as: str | None
) -> None:
    assert demo_check.uncompared(item) == counted_as


def test_a_record_survives_its_file() -> None:
    record = Record("demo", "2024-01-01T00:00:00Z", {"ConfigMap a": {"data": {"k": "v"}}}, {"Pod": 2},
                    {"data": [FileEntry("current", "symlink", "0777", 5, target="base/16384")]})  # fmt: skip
    assert Record.from_json(record.to_json()) == record


def operation_object(name: str, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": status}


def test_the_summary_says_everything_came_back_only_without_differences() -> None:
    entry = FileEntry("base/16384", "file", "0600", 1, size=2048, sha256="0" * 64)
    record = Record(
        "demo", "t", {"ConfigMap a": {}, "Deployment.apps web": {}}, {"Pod": 2}, {"data": [entry]}
    )
    backup = operation_object("b", status="Successful", triggerTimestamp="2024-01-01T00:00:00Z",
                              finishTimestamp="2024-01-01T00:00:07Z", volumesProgress="1/1",
                              totalSize=2048, storedSize=1024)  # fmt: skip
    restore = operation_object("b", status="Successful", resourcesByKind={
        "ConfigMap": {"restored": 1}, "ServiceAccount": {"restored": 0, "retained": 1}})  # fmt: skip
    text = demo_check.summary(record, record, backup, restore, 12.0, [])
    assert text.splitlines()[-1] == "everything came back"
    assert "backup   b: Successful in 7s, 1/1 volumes, 2.0 KiB of data (1.0 KiB stored)" in text
    assert "ConfigMap 1, ServiceAccount 0 (1 retained)" in text
    assert "objects: 2 of 2 equal after normalization (ConfigMap 1, Deployment 1)" in text
    assert "volume data: 1 entries, 1 files, 2.0 KiB (2,048 bytes): identical" in text

    many = [f"difference {i}" for i in range(30)]
    text = demo_check.summary(record, Record("demo", "t"), backup, restore, 12.0, many)
    assert "everything came back" not in text
    assert "30 difference(s):" in text and "  ... and 5 more" in text
    assert "objects: 0 of 2 equal" in text and "DIFFERENT" in text
