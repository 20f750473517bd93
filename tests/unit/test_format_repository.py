"""A location as Davit reads and writes it (docs/format.md), over a real LocalStore in a temporary
directory: the location record, parts, manifests, logs, listing and deletion, and what encryption hides."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from davit import timeutil
from davit.format import FORMAT_VERSION, layout
from davit.format.layout import BackupRef, parse_manifest_key, part_key
from davit.format.repository import MAX_PART, BackupRepository, FormatError, PartInfo
from davit.format.sealing import CorruptObject, Sealer
from davit.storage.local import LocalStore

ENCRYPTION_KEY = "correct horse battery staple"
CM_VALUE = "cm-value-Zq81-orders-endpoint"
SECRET_VALUE = "c2VjcmV0LXZhbHVlLVhZWi1odW50ZXIy"  # base64, as the API server returns Secret data
CM_NAME = "orders-db-config-7f3a"
SECRET_NAME = "orders-db-credentials-9c2e"

B1 = BackupRef("shop", "nightly", "0b6c2f4e-1111-4a4a-8d8d-000000000001")
B2 = BackupRef("shop", "hourly", "0b6c2f4e-2222-4a4a-8d8d-000000000002")
B3 = BackupRef("shop-2", "nightly", "0b6c2f4e-3333-4a4a-8d8d-000000000003")


def configmap(name: str, value: str = "v", namespace: str = "shop") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"key": value},
    }


def secret(name: str, value: str, namespace: str = "shop") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "Opaque",
        "data": {"password": value},
    }


def files_under(directory: Path) -> dict[str, bytes]:
    return {
        path.relative_to(directory).as_posix(): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(params=[pytest.param(None, id="plain"), pytest.param(ENCRYPTION_KEY, id="encrypted")])
def encryption_key(request: pytest.FixtureRequest) -> str | None:
    key: str | None = request.param
    return key


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path)


@pytest.fixture
def repo(store: LocalStore, encryption_key: str | None) -> BackupRepository:
    return BackupRepository.open(store, encryption_key)


def write_backup(repo: BackupRepository, ref: BackupRef, manifest: bool = True) -> list[PartInfo]:
    parts = [
        repo.write_part(ref, f"{ref.namespace}/v1/configmaps", [configmap("a"), configmap("b")]),
        repo.write_part(ref, f"{ref.namespace}/v1/configmaps#1", [configmap("c")]),
        repo.write_part(ref, f"{ref.namespace}/apps/v1/deployments", []),
    ]
    repo.write_log(ref, [f"backing up {ref.name}", "done"])
    if manifest:
        repo.write_manifest(ref, {"backup": {"metadata": {"name": ref.name}}, "parts": []})
    return parts


# --- the location record ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key", [pytest.param(None, id="plain"), pytest.param(ENCRYPTION_KEY, id="encrypted")]
)
def test_open_creates_location_record(tmp_path: Path, store: LocalStore, key: str | None) -> None:
    repo = BackupRepository.open(store, key)
    assert files_under(tmp_path).keys() == {layout.LOCATION_RECORD}
    record = json.loads((tmp_path / "davit-location.json").read_bytes())
    assert set(record) == {"formatVersion", "salt", "createdAt", "encrypted", "kdf"} | (
        {"mac"} if key else set()
    )
    assert record["formatVersion"] == 2 == FORMAT_VERSION
    assert record["encrypted"] is (key is not None)
    assert record["kdf"] == {"name": "scrypt", **{k: getattr(repo.sealer.kdf, k) for k in "nrp"}}
    assert re.fullmatch(r"[0-9a-f]{32}", record["salt"])
    assert timeutil.parse_time(record["createdAt"]) is not None
    assert repo.sealer.salt == bytes.fromhex(record["salt"])
    assert repo.sealer.encrypts is (key is not None)


def test_second_open_reuses_the_record(tmp_path: Path, store: LocalStore) -> None:
    first = BackupRepository.open(store, ENCRYPTION_KEY)
    before = (tmp_path / layout.LOCATION_RECORD).read_bytes()
    second = BackupRepository.open(LocalStore(tmp_path), ENCRYPTION_KEY)
    third = BackupRepository.open(LocalStore(tmp_path), ENCRYPTION_KEY, create=False)
    assert (tmp_path / layout.LOCATION_RECORD).read_bytes() == before
    assert first.sealer.salt == second.sealer.salt == third.sealer.salt
    assert first.sealer.salt == bytes.fromhex(json.loads(before)["salt"])


def test_separate_locations_get_separate_salts(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = BackupRepository.open(LocalStore(tmp_path / "a"), ENCRYPTION_KEY)
    b = BackupRepository.open(LocalStore(tmp_path / "b"), ENCRYPTION_KEY)
    assert a.sealer.salt != b.sealer.salt


def test_open_without_create_on_empty_store(tmp_path: Path, store: LocalStore) -> None:
    with pytest.raises(FormatError, match="holds no Davit location record"):
        BackupRepository.open(store, None, create=False)
    assert files_under(tmp_path) == {}


@pytest.mark.parametrize("create", [pytest.param(True, id="create"), pytest.param(False, id="no-create")])
@pytest.mark.parametrize("version", [pytest.param(3, id="v3"), pytest.param(99, id="v99")])
def test_newer_format_is_refused(tmp_path: Path, store: LocalStore, create: bool, version: int) -> None:
    record = {"formatVersion": version, "salt": "00" * 16, "createdAt": "2030-01-01T00:00:00Z"}
    (tmp_path / layout.LOCATION_RECORD).write_text(json.dumps(record))
    with pytest.raises(FormatError, match=f"uses format {version}; this Davit reads up to 2"):
        BackupRepository.open(store, None, create=create)
    # The newer record is left alone.
    assert json.loads((tmp_path / layout.LOCATION_RECORD).read_text()) == record


def test_unreadable_record_is_a_format_error(tmp_path: Path, store: LocalStore) -> None:
    (tmp_path / layout.LOCATION_RECORD).write_bytes(b"\x28\xb5\x2f\xfd not json")
    with pytest.raises(FormatError, match=re.escape("unreadable davit-location.json")):
        BackupRepository.open(store, None)


def test_newer_manifest_is_refused(repo: BackupRepository) -> None:
    repo.put(B1.manifest, json.dumps({"formatVersion": 3, "parts": []}).encode())
    with pytest.raises(FormatError, match="uses format 3"):
        repo.read_manifest(B1)


# --- parts ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("part", "objects"),
    [
        pytest.param("shop/v1/configmaps", [], id="empty"),
        pytest.param("shop/v1/configmaps", [configmap("one")], id="one"),
        pytest.param(
            "shop/v1/configmaps#7",
            [configmap(f"cm-{i}", "ünïcödé ✓ " * i) for i in range(300)],
            id="many-unicode",
        ),
        pytest.param(
            "_cluster",
            [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}],
            id="cluster",
        ),
    ],
)
def test_part_round_trip(
    tmp_path: Path, repo: BackupRepository, part: str, objects: list[dict[str, Any]]
) -> None:
    info = repo.write_part(B1, part, objects)
    assert info.part == part
    assert info.key == B1.resource_part(part)
    assert info.count == len(objects)
    # The size of the part's content: its objects as compact JSON (in UTF-8, not ASCII-escaped).
    content = repo.get(info.key, MAX_PART)
    assert (
        info.raw_size
        == len(content)
        == len(json.dumps(objects, separators=(",", ":"), ensure_ascii=False).encode())
    )
    assert json.loads(content) == objects
    stored = tmp_path / info.key
    assert info.stored_size == stored.stat().st_size
    assert [(i.key, i.size) for i in repo.store.list(B1.root)] == [(info.key, info.stored_size)]
    assert repo.read_part(info.key) == objects
    assert stored.read_bytes()[:5] == b"DVT\x01" + bytes([repo.sealer.encrypts])


def test_manifest_round_trip(repo: BackupRepository) -> None:
    parts = write_backup(repo, B1, manifest=False)
    manifest = {
        "backup": {"metadata": {"name": B1.name, "namespace": B1.namespace, "uid": B1.uid}},
        "parts": [{"part": p.part, "key": p.key, "count": p.count} for p in parts],
        "resources": [{"apiVersion": "v1", "kind": "ConfigMap", "name": n} for n in "abc"],
    }
    assert not repo.has_manifest(B1)
    stored = repo.write_manifest(B1, manifest)
    assert repo.has_manifest(B1)
    assert stored == next(iter(repo.store.list(B1.manifest))).size
    assert repo.read_manifest(B1) == {"formatVersion": FORMAT_VERSION, **manifest}


# --- listing and deleting ---------------------------------------------------------------------------


def test_list_backups_only_returns_complete_ones(repo: BackupRepository) -> None:
    write_backup(repo, B1, manifest=True)
    write_backup(repo, B2, manifest=False)
    assert list(repo.list_backups()) == [B1]
    repo.write_manifest(B2, {"parts": []})
    assert sorted(repo.list_backups(), key=str) == sorted([B1, B2], key=str)


def test_list_backups_on_empty_location(repo: BackupRepository) -> None:
    assert list(repo.list_backups()) == []
    assert list(repo.list_backups("shop")) == []


@pytest.mark.parametrize(
    ("namespace", "expected"),
    [
        pytest.param(None, {B1, B2, B3}, id="all"),
        pytest.param("shop", {B1, B2}, id="shop-not-shop-2"),
        pytest.param("shop-2", {B3}, id="shop-2"),
        pytest.param("sho", set(), id="prefix-of-a-namespace"),
        pytest.param("other", set(), id="absent"),
    ],
)
def test_list_backups_by_namespace(
    repo: BackupRepository, namespace: str | None, expected: set[BackupRef]
) -> None:
    for ref in (B1, B2, B3):
        write_backup(repo, ref)
    found = list(repo.list_backups(namespace))
    assert len(found) == len(set(found))
    assert set(found) == expected


def test_delete_backup(tmp_path: Path, repo: BackupRepository) -> None:
    write_backup(repo, B1)
    b2_parts = write_backup(repo, B2)
    b2_files = {k: v for k, v in files_under(tmp_path).items() if k.startswith(B2.root)}
    b1_count = sum(1 for _ in repo.store.list(B1.root))
    assert b1_count == 5  # three parts, the log, the manifest

    removed = repo.delete_backup(B1)
    assert removed == b1_count  # the manifest, then the four objects delete_prefix found
    assert not repo.has_manifest(B1)
    assert not any(k.startswith(B1.root) for k in files_under(tmp_path))
    assert not (tmp_path / B1.root).exists()
    assert list(repo.list_backups()) == [B2]

    # Safe to repeat, and the other backup is untouched.
    repo.delete_backup(B1)
    repo.delete_backup(B1)
    assert {k: v for k, v in files_under(tmp_path).items() if k.startswith(B2.root)} == b2_files
    assert [repo.read_part(p.key) for p in b2_parts] == [
        [configmap("a"), configmap("b")],
        [configmap("c")],
        [],
    ]
    assert repo.read_log(B2) == ["backing up hourly", "done"]
    assert (tmp_path / layout.LOCATION_RECORD).is_file()


class RecordingStore(LocalStore):
    """The real directory store, noting deletions and optionally failing one (an interrupted delete)."""

    def __init__(self, directory: Path, fail_on: str | None = None) -> None:
        super().__init__(directory)
        self.deleted: list[str] = []
        self.fail_on = fail_on

    def delete(self, key: str) -> None:
        if key == self.fail_on:
            raise OSError("interrupted")
        self.deleted.append(key)
        super().delete(key)


def test_delete_removes_manifest_first(tmp_path: Path) -> None:
    store = RecordingStore(tmp_path)
    repo = BackupRepository.open(store, None)
    write_backup(repo, B1)
    repo.delete_backup(B1)
    assert store.deleted[0] == B1.manifest
    rest = {B1.log, *(B1.resource_part(p) for p in ("shop/v1/configmaps", "shop/v1/configmaps#1"))}
    assert set(store.deleted[1:]) == rest | {B1.resource_part("shop/apps/v1/deployments")}
    assert len(store.deleted) == 5


def test_interrupted_delete_leaves_debris_a_reader_ignores(tmp_path: Path) -> None:
    store = RecordingStore(tmp_path, fail_on=B1.log)
    repo = BackupRepository.open(store, None)
    write_backup(repo, B1)
    write_backup(repo, B2)
    with pytest.raises(OSError, match="interrupted"):
        repo.delete_backup(B1)
    assert (tmp_path / B1.log).is_file()  # debris
    assert list(repo.list_backups()) == [B2]
    store.fail_on = None
    repo.delete_backup(B1)
    assert not any(k.startswith(B1.root) for k in files_under(tmp_path))
    assert list(repo.list_backups()) == [B2]


# --- logs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lines",
    [
        pytest.param([], id="none"),
        pytest.param(["one"], id="one"),
        pytest.param(["a", "b", "c"], id="three"),
        pytest.param(["", "after a blank"], id="blank-line"),
        pytest.param(['{"level":"info","event":"ünïcödé ✓"}'] * 50, id="json-lines"),
    ],
)
def test_log_round_trip(repo: BackupRepository, lines: list[str]) -> None:
    repo.write_log(B1, lines)
    assert repo.read_log(B1) == lines


def test_missing_log_reads_empty(repo: BackupRepository) -> None:
    assert repo.read_log(B1) == []


# --- encryption -------------------------------------------------------------------------------------


def test_encrypted_location_hides_names_and_values(tmp_path: Path) -> None:
    repo = BackupRepository.open(LocalStore(tmp_path), ENCRYPTION_KEY)
    objects = [configmap(CM_NAME, CM_VALUE), secret(SECRET_NAME, SECRET_VALUE)]
    cms = repo.write_part(B1, "shop/v1/configmaps", [objects[0]])
    secrets = repo.write_part(B1, "shop/v1/secrets", [objects[1]])
    repo.write_log(B1, [f"listed ConfigMap {CM_NAME}", f"listed Secret {SECRET_NAME}"])
    repo.write_manifest(
        B1,
        {
            "parts": [{"part": p.part, "key": p.key, "count": p.count} for p in (cms, secrets)],
            "resources": [
                {"apiVersion": "v1", "kind": o["kind"], "namespace": "shop", "name": o["metadata"]["name"]}
                for o in objects
            ],
        },
    )
    needles = [CM_VALUE, SECRET_VALUE, CM_NAME, SECRET_NAME, "stringData", '"data"']
    files = files_under(tmp_path)
    assert len(files) == 5  # record, two parts, log, manifest
    for name, content in files.items():
        for needle in needles:
            assert needle not in name
        if name == layout.LOCATION_RECORD:
            assert set(json.loads(content)) == {
                "formatVersion",
                "salt",
                "createdAt",
                "encrypted",
                "kdf",
                "mac",
            }
            continue
        assert content[:5] == b"DVT\x01\x01", name
        for needle in needles:
            assert needle.encode() not in content, (name, needle)
    # And yet everything reads back.
    assert repo.read_part(cms.key) + repo.read_part(secrets.key) == objects
    assert [r["name"] for r in repo.read_manifest(B1)["resources"]] == [CM_NAME, SECRET_NAME]


@pytest.mark.parametrize(
    ("reader_key", "message"),
    [
        pytest.param("wrong horse battery staple", "authentication failed", id="wrong-key"),
        pytest.param(None, "the location has no encryptionKey", id="no-key"),
    ],
)
def test_wrong_key_cannot_read_manifest(tmp_path: Path, reader_key: str | None, message: str) -> None:
    writer = BackupRepository.open(LocalStore(tmp_path), ENCRYPTION_KEY)
    write_backup(writer, B1)
    # The record says the location is encrypted and is authenticated: another key, or none, is told so
    # when the location is opened.
    opening = (
        "not authenticated by the BackupLocation's encryptionKey" if reader_key else "has no encryptionKey"
    )
    with pytest.raises(FormatError, match=opening):
        BackupRepository.open(LocalStore(tmp_path), reader_key, create=False)
    # And the objects themselves refuse whoever bypasses the record.
    sealer = Sealer(passphrase=reader_key, salt=writer.sealer.salt, kdf=writer.sealer.kdf)
    reader = BackupRepository(LocalStore(tmp_path), sealer)
    assert list(reader.list_backups()) == [B1]  # listing needs no key
    with pytest.raises(CorruptObject, match=message):
        reader.read_manifest(B1)
    with pytest.raises(CorruptObject, match=message):
        reader.read_part(B1.resource_part("shop/v1/configmaps"))


def test_swapped_objects_fail_to_open(tmp_path: Path) -> None:
    """An object copied to another key (another backup's manifest) does not read as that object."""
    repo = BackupRepository.open(LocalStore(tmp_path), ENCRYPTION_KEY)
    write_backup(repo, B1)
    write_backup(repo, B2)
    (tmp_path / B2.manifest).write_bytes((tmp_path / B1.manifest).read_bytes())
    with pytest.raises(CorruptObject, match="authentication failed"):
        repo.read_manifest(B2)


def test_tampered_plain_object_is_detected(tmp_path: Path) -> None:
    repo = BackupRepository.open(LocalStore(tmp_path), None)
    info = repo.write_part(B1, "shop/v1/configmaps", [configmap("a")])
    blob = bytearray((tmp_path / info.key).read_bytes())
    blob[-1] ^= 0xFF
    (tmp_path / info.key).write_bytes(bytes(blob))
    with pytest.raises(CorruptObject, match="checksum mismatch"):
        repo.read_part(info.key)


# --- layout -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        pytest.param(
            "backups/shop/nightly/uid-1/manifest", BackupRef("shop", "nightly", "uid-1"), id="manifest"
        ),
        pytest.param("backups/shop/nightly/uid-1/resources/x.bin", None, id="part"),
        pytest.param("backups/shop/nightly/uid-1/log.jsonl.bin", None, id="log"),
        pytest.param("backups/shop/nightly/manifest", None, id="too-short"),
        pytest.param("backups/shop/nightly/uid-1/extra/manifest", None, id="too-long"),
        pytest.param("backup/shop/nightly/uid-1/manifest", None, id="wrong-prefix"),
        pytest.param("other/shop/nightly/uid-1/manifest", None, id="other-prefix"),
        pytest.param("backups/shop/nightly/uid-1/manifest.bin", None, id="wrong-name"),
        pytest.param("backups/shop/nightly/uid-1/Manifest", None, id="wrong-case"),
        pytest.param("davit-location.json", None, id="location-record"),
        pytest.param("", None, id="empty"),
    ],
)
def test_parse_manifest_key(key: str, expected: BackupRef | None) -> None:
    assert parse_manifest_key(key) == expected


@pytest.mark.parametrize("ref", [pytest.param(B1, id="b1"), pytest.param(B3, id="b3")])
def test_backup_ref_paths(ref: BackupRef) -> None:
    root = f"backups/{ref.namespace}/{ref.name}/{ref.uid}/"
    assert ref.root == root
    assert ref.manifest == root + "manifest"
    assert ref.log == root + "log.jsonl.bin"
    part = ref.resource_part(f"{ref.namespace}/apps/v1/deployments#2")
    assert part.startswith(root + "resources/")
    assert part.endswith(".bin")
    assert "/" not in part.removeprefix(root + "resources/")
    assert parse_manifest_key(ref.manifest) == ref
    assert parse_manifest_key(ref.log) is None
    assert parse_manifest_key(part) is None


SAFE = re.compile(r"[A-Za-z0-9._-]+")

PART_IDS = [
    pytest.param("shop/apps/v1/deployments#3", id="paged"),
    pytest.param("shop/v1/configmaps", id="core"),
    pytest.param("_cluster", id="cluster"),
    pytest.param("_cluster/apiextensions.k8s.io/v1/customresourcedefinitions", id="cluster-crds"),
    pytest.param("a/b#1", id="slash-hash"),
    pytest.param("", id="empty"),
    pytest.param("///###", id="only-unsafe"),
    pytest.param("../../etc/passwd", id="traversal"),
    pytest.param("..", id="dotdot"),
    pytest.param("ünïcödé/ключ", id="unicode"),
    pytest.param("a b\tc\nd", id="whitespace"),
    pytest.param("x" * 500, id="long"),
]


@pytest.mark.parametrize("part", PART_IDS)
def test_part_key_is_safe_and_stable(part: str) -> None:
    key = part_key(part)
    assert SAFE.fullmatch(key), key
    assert key not in (".", "..")
    assert len(key) <= 80 + 1 + 12
    assert key == part_key(part)
    assert key.endswith("-" + hashlib.sha256(part.encode()).hexdigest()[:12])
    # The key is a single usable path segment in a real store.
    assert B1.resource_part(part) == f"{B1.root}resources/{key}.bin"


def test_part_key_is_readable() -> None:
    assert part_key("shop/apps/v1/deployments#3").startswith("shop_apps_v1_deployments_3-")
    assert part_key("_cluster").startswith("cluster-")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        pytest.param("a/b#1", "a_b#1", id="slash-vs-underscore"),
        pytest.param("a/b#1", "a#b/1", id="swapped-separators"),
        pytest.param("shop/v1/configmaps", "shop/v1/configmaps#1", id="page"),
        pytest.param("x" * 100 + "1", "x" * 100 + "2", id="differ-after-truncation"),
        pytest.param("ключ", "ключи", id="unicode"),
    ],
)
def test_part_key_distinct(tmp_path: Path, a: str, b: str) -> None:
    assert part_key(a) != part_key(b)
    repo = BackupRepository.open(LocalStore(tmp_path), None)
    info_a = repo.write_part(B1, a, [configmap("from-a")])
    info_b = repo.write_part(B1, b, [configmap("from-b")])
    assert repo.read_part(info_a.key) == [configmap("from-a")]
    assert repo.read_part(info_b.key) == [configmap("from-b")]


@pytest.mark.parametrize(
    "record",
    [
        pytest.param({"formatVersion": 1}, id="no-salt"),
        pytest.param({"formatVersion": 1, "salt": "zz"}, id="salt-not-hex"),
        pytest.param({"formatVersion": 1, "salt": "abcd"}, id="salt-too-short"),
        pytest.param({"formatVersion": "two", "salt": "00" * 16}, id="version-not-a-number"),
        pytest.param({"formatVersion": 2, "salt": "00" * 16}, id="v2-without-parameters"),
        pytest.param(
            {"formatVersion": 2, "salt": "00" * 16, "kdf": {"name": "scrypt", "n": 2**30, "r": 8, "p": 1}},
            id="v2-parameters-too-costly",
        ),
        pytest.param(
            {"formatVersion": 2, "salt": "00" * 16, "kdf": {"name": "scrypt", "n": 2**14, "r": 8, "p": 1}},
            id="v2-no-encrypted-flag",
        ),
        pytest.param(["not", "an", "object"], id="a-list"),
    ],
)
def test_a_damaged_location_record_is_a_format_error(tmp_path: Path, record: object) -> None:
    store = LocalStore(str(tmp_path))
    store.put(layout.LOCATION_RECORD, json.dumps(record).encode())
    with pytest.raises(FormatError, match=re.escape(layout.LOCATION_RECORD)):
        BackupRepository.open(store, None)
