"""A location's contents are untrusted input: whoever can write to its bucket can put any bytes there.
Each test here crafts what such a writer could (without the encryptionKey) and shows the reader refuses
it with an error naming the object, without spending the memory or time the object asks for."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import blake3
import pytest
import zstandard

from davit.format import layout
from davit.format.layout import BackupRef
from davit.format.repository import BackupRepository, FormatError, record_mac
from davit.format.sealing import (
    LEGACY_KDF,
    MAX_CONTENT,
    MAX_FOREIGN_SALTS,
    MAX_JSON_DEPTH,
    CorruptObject,
    Kdf,
    NotEncrypted,
    ObjectTooDeep,
    ObjectTooLarge,
    RefusedObject,
    Sealer,
    load_json,
    new_salt,
    sealed_limit,
)
from davit.repo import CorruptChunk, RepoReader
from davit.repo import layout as repo_layout
from davit.repo.codec import ChunkCodec
from davit.repo.gc import GcError, collect
from davit.repo.index import IndexEntry
from davit.repo.reader import open_chunk
from davit.storage.base import ObjectTooLarge as StoredTooLarge
from davit.storage.local import LocalStore
from tests.crafted import nested_json, sealed_plain, zstd_claiming, zstd_of_zeros

KEY = "correct horse battery staple"
REF = BackupRef("shop", "nightly", "0b6c2f4e")
TIB = 1 << 40
GIB = 1 << 30


def _record(tmp_path: Path) -> dict[str, object]:
    record: dict[str, object] = json.loads((tmp_path / layout.LOCATION_RECORD).read_bytes())
    return record


def _write_record(tmp_path: Path, record: dict[str, object]) -> None:
    (tmp_path / layout.LOCATION_RECORD).write_text(json.dumps(record))


# --- the crafted frames are what they claim ---------------------------------------------------------


def test_the_crafted_frames_are_valid_zstd() -> None:
    """Otherwise the tests below would prove nothing: a small frame built the same way decompresses to
    exactly the zeros it declares, and the large ones declare what the attack needs."""
    frame = zstd_of_zeros(3 << 20, 300 << 10)
    assert len(frame) < 400 << 10
    assert zstandard.ZstdDecompressor().decompress(frame) == bytes(3 << 20)
    assert zstandard.frame_content_size(zstd_claiming(TIB)) == TIB
    assert len(zstd_claiming(TIB)) == 17
    bomb = zstd_of_zeros(10 * GIB, 10 << 20)
    assert zstandard.frame_content_size(bomb) == 10 * GIB
    assert 10 << 20 <= len(bomb) < 11 << 20


# --- decompression bounds ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(zstd_claiming(TIB), id="17-bytes-claiming-1TiB"),
        pytest.param(zstd_of_zeros(10 * GIB, 10 << 20), id="10MB-expanding-to-10GiB"),
    ],
)
def test_a_manifest_claiming_more_than_allowed_is_refused_at_once(tmp_path: Path, payload: bytes) -> None:
    repo = BackupRepository.open(LocalStore(tmp_path), None)
    (tmp_path / REF.manifest).parent.mkdir(parents=True)
    (tmp_path / REF.manifest).write_bytes(sealed_plain(payload))
    started = time.monotonic()
    with pytest.raises(
        ObjectTooLarge, match=rf"^{REF.manifest}: its content is \d+ bytes, more than the \d+"
    ):
        repo.read_manifest(REF)
    assert time.monotonic() - started < 1.0


def test_a_resource_part_is_bounded_too(tmp_path: Path) -> None:
    repo = BackupRepository.open(LocalStore(tmp_path), None)
    key = REF.resource_part("shop/v1/configmaps")
    (tmp_path / key).parent.mkdir(parents=True)
    (tmp_path / key).write_bytes(sealed_plain(zstd_claiming(TIB)))
    with pytest.raises(ObjectTooLarge, match=key):
        repo.read_part(key)


def test_a_frame_without_a_content_size_is_refused() -> None:
    """Davit always writes the size; a streaming frame could expand to anything before it is known."""
    streamed = zstandard.ZstdCompressor(write_content_size=False).compressobj()
    frame = streamed.compress(b"x" * 1000) + streamed.flush()
    assert zstandard.frame_content_size(frame) == -1
    with pytest.raises(CorruptObject, match="no content size"):
        Sealer().open("k", sealed_plain(frame))


def test_a_chunk_is_bounded_by_the_size_its_index_gives() -> None:
    data = b"chunk data " * 1000
    codec = ChunkCodec(Sealer())
    chunk_id = blake3.blake3(data).digest()
    sealed = codec.seal("repo/chunks/" + chunk_id.hex(), data)
    entry = IndexEntry("p" * 64, 0, len(sealed), len(data))
    assert open_chunk(codec, chunk_id, entry, sealed) == data
    with pytest.raises(CorruptChunk, match="more than the 10999 allowed"):
        open_chunk(codec, chunk_id, entry._replace(raw_size=len(data) - 1), sealed)
    # An index may not promise more than a chunk can be, either.
    with pytest.raises(CorruptChunk, match="chunks have at most"):
        open_chunk(codec, chunk_id, entry._replace(raw_size=TIB), sealed)
    # A chunk whose sealed form claims a TiB is refused before anything is allocated.
    bomb = sealed_plain(zstd_claiming(TIB))
    with pytest.raises(CorruptChunk, match="more than the 11000 allowed"):
        open_chunk(codec, chunk_id, entry._replace(length=len(bomb)), bomb)


# --- JSON depth ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "depth",
    [
        pytest.param(MAX_JSON_DEPTH + 1, id="just-too-deep"),
        pytest.param(900, id="below-the-recursion-limit"),
        pytest.param(100_000, id="beyond-the-recursion-limit"),
    ],
)
def test_a_deeply_nested_manifest_is_refused_not_a_recursion_error(tmp_path: Path, depth: int) -> None:
    repo = BackupRepository.open(LocalStore(tmp_path), None)
    repo.put(REF.manifest, b'{"formatVersion": 2, "x": ' + nested_json(depth) + b"}")
    with pytest.raises(ObjectTooDeep, match=rf"^{REF.manifest}: JSON nested deeper than {MAX_JSON_DEPTH}"):
        repo.read_manifest(REF)


def test_json_at_the_depth_limit_is_read() -> None:
    assert load_json("k", nested_json(MAX_JSON_DEPTH)) is not None
    with pytest.raises(ObjectTooDeep):
        load_json("k", nested_json(MAX_JSON_DEPTH + 1))
    assert load_json("k", b'{"a": {"b": [1, {"c": null}]}}') == {"a": {"b": [1, {"c": None}]}}
    assert load_json("k", b"5") == 5


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(b'{"kind": "ConfigMap"}', "not a list of objects", id="an-object"),
        pytest.param(b"[1, 2]", "not a list of objects", id="not-objects"),
        pytest.param(b"[{", "not valid JSON", id="cut"),
    ],
)
def test_a_part_must_be_a_list_of_objects(tmp_path: Path, content: bytes, message: str) -> None:
    repo = BackupRepository.open(LocalStore(tmp_path), None)
    key = REF.resource_part("p")
    repo.put(key, content)
    with pytest.raises(CorruptObject, match=message):
        repo.read_part(key)


@pytest.mark.parametrize(
    "manifest",
    [
        pytest.param(b'{"formatVersion": 2, "volumes": ' + nested_json(5000) + b"}", id="deep"),
        pytest.param(b'{"formatVersion": 2, "volumes": 5}', id="volumes-not-a-list"),
        pytest.param(b'{"formatVersion": 2, "volumes": ["x"]}', id="volume-not-an-object"),
        pytest.param(b"[]", id="not-an-object"),
    ],
)
def test_garbage_collection_stops_with_the_object_named(tmp_path: Path, manifest: bytes) -> None:
    """What a manifest names is unknown when it cannot be read: the collection deletes nothing and says
    which object stopped it (the retention service reports it as an Event)."""
    repo = BackupRepository.open(LocalStore(tmp_path), None)
    repo.put(REF.manifest, manifest)
    with pytest.raises(GcError, match=REF.manifest):
        collect(repo.store, repo.sealer, grace_seconds=0)


# --- encryption: only what the key sealed -------------------------------------------------------------


def test_a_forged_plain_manifest_in_an_encrypted_location_is_refused(tmp_path: Path) -> None:
    repo = BackupRepository.open(LocalStore(tmp_path), KEY)
    repo.write_manifest(REF, {"parts": []})
    # The attacker replaces it with a plain object: a valid checksum, no key needed.
    forged = sealed_plain(zstandard.ZstdCompressor().compress(json.dumps({"formatVersion": 2}).encode()))
    (tmp_path / REF.manifest).write_bytes(forged)
    with pytest.raises(NotEncrypted, match=rf"^{REF.manifest}: not encrypted"):
        repo.read_manifest(REF)


def test_plain_objects_in_an_old_encrypted_location_are_refused_too(tmp_path: Path) -> None:
    """Format version 1 locations still open (their record names no parameters: N=2^14), and what their
    key sealed reads back; a plain object among them does not."""
    salt = new_salt()
    _write_record(tmp_path, {"formatVersion": 1, "salt": salt.hex(), "createdAt": "2026-01-01T00:00:00Z"})
    old = BackupRepository(LocalStore(tmp_path), Sealer(passphrase=KEY, salt=salt, kdf=LEGACY_KDF))
    old.write_manifest(REF, {"parts": []})
    repo = BackupRepository.open(LocalStore(tmp_path), KEY)
    assert repo.sealer.kdf == LEGACY_KDF
    assert repo.read_manifest(REF)["parts"] == []
    other = BackupRef("shop", "forged", "1")
    BackupRepository(LocalStore(tmp_path), Sealer()).write_manifest(other, {"parts": []})
    with pytest.raises(NotEncrypted, match=other.manifest):
        repo.read_manifest(other)


def test_the_record_of_an_encrypted_location_says_so_and_is_authenticated(tmp_path: Path) -> None:
    repo = BackupRepository.open(LocalStore(tmp_path), KEY)
    record = _record(tmp_path)
    assert record["encrypted"] is True
    assert record["kdf"] == {"name": "scrypt", "n": repo.sealer.kdf.n, "r": 8, "p": 1}
    assert record["mac"] == record_mac(repo.sealer, record)
    assert BackupRepository.open(LocalStore(tmp_path), KEY).sealer == repo.sealer


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"encrypted": False}, id="says-plain"),
        pytest.param({"encrypted": False, "mac": None}, id="says-plain-without-mac"),
        pytest.param({"kdf": {"name": "scrypt", "n": 2**4, "r": 1, "p": 1}}, id="weaker-parameters"),
        pytest.param({"salt": "00" * 16}, id="other-salt"),
        pytest.param({"mac": "0" * 64}, id="other-mac"),
        pytest.param({"mac": None}, id="no-mac"),
        pytest.param({"createdAt": "2020-01-01T00:00:00Z"}, id="any-field"),
    ],
)
def test_an_altered_record_is_refused(tmp_path: Path, change: dict[str, object]) -> None:
    """Someone who can write to the bucket, but has no key, cannot make the location plain or cheaper
    to attack: the record's MAC needs the key."""
    BackupRepository.open(LocalStore(tmp_path), KEY)
    record = {**_record(tmp_path), **change}
    _write_record(tmp_path, {k: v for k, v in record.items() if v is not None})
    with pytest.raises(FormatError, match=layout.LOCATION_RECORD):
        BackupRepository.open(LocalStore(tmp_path), KEY)


def test_a_plain_record_where_a_key_is_configured_is_refused(tmp_path: Path) -> None:
    """The whole location swapped for a plain one (record and all): the key says it must be encrypted."""
    BackupRepository.open(LocalStore(tmp_path), None)
    with pytest.raises(FormatError, match="says the location is not encrypted"):
        BackupRepository.open(LocalStore(tmp_path), KEY)


@pytest.mark.real_kdf
def test_new_locations_derive_with_n_2_17(tmp_path: Path) -> None:
    repo = BackupRepository.open(LocalStore(tmp_path), KEY)
    assert _record(tmp_path)["kdf"] == {"name": "scrypt", "n": 2**17, "r": 8, "p": 1}
    assert repo.sealer.kdf == Kdf(n=2**17)


def test_objects_may_carry_only_a_few_salts_of_their_own(tmp_path: Path) -> None:
    """Every salt costs a key derivation (at N=2^17, 128 MiB and half a second): objects with ever new
    salts are refused once a location has shown a few, instead of costing that each."""
    repo = BackupRepository.open(LocalStore(tmp_path), KEY)
    keys = []
    for i in range(MAX_FOREIGN_SALTS + 1):
        writer = BackupRepository(repo.store, Sealer(passphrase=KEY, salt=new_salt(), kdf=repo.sealer.kdf))
        keys.append(BackupRef("shop", f"b{i}", "u"))
        writer.write_manifest(keys[-1], {"parts": []})
    for ref in keys[:MAX_FOREIGN_SALTS]:
        assert repo.read_manifest(ref)["parts"] == []
    with pytest.raises(RefusedObject, match="salt"):
        repo.read_manifest(keys[-1])
    # The location's own salt is never counted.
    repo.write_manifest(REF, {"parts": []})
    assert repo.read_manifest(REF)["parts"] == []


# --- stored size --------------------------------------------------------------------------------------


def test_an_object_longer_than_its_content_may_be_is_not_read(tmp_path: Path) -> None:
    repo = BackupRepository.open(LocalStore(tmp_path), None)
    (tmp_path / REF.manifest).parent.mkdir(parents=True)
    (tmp_path / REF.manifest).write_bytes(sealed_plain(bytes(MAX_CONTENT + (1 << 20))))
    with pytest.raises(ObjectTooLarge, match=rf"^{REF.manifest}: \d+ bytes or more stored, more than"):
        repo.read_manifest(REF)
    with pytest.raises(StoredTooLarge, match="more than the 1000 allowed"):
        LocalStore(tmp_path).get(REF.manifest, 1000)
    # What Davit writes itself always fits: incompressible content of the largest size allowed.
    content = os.urandom(1 << 20)
    repo.put(REF.log, content)
    assert repo.get(REF.log, len(content)) == content
    assert len((tmp_path / REF.log).read_bytes()) <= sealed_limit(len(content))


def test_an_oversized_location_record_is_refused(tmp_path: Path) -> None:
    (tmp_path / layout.LOCATION_RECORD).write_bytes(b" " * (1 << 20) + b"{}")
    with pytest.raises(FormatError, match=r"davit-location\.json is \d+ bytes or more"):
        BackupRepository.open(LocalStore(tmp_path), None)


def test_a_pack_longer_than_a_pack_can_be_is_not_read(tmp_path: Path) -> None:
    repo = BackupRepository.open(LocalStore(tmp_path), None)
    pack_id = "ab" * 32
    path = tmp_path / repo_layout.pack_key(pack_id)
    path.parent.mkdir(parents=True)
    with path.open("wb") as file:
        file.truncate(repo_layout.MAX_PACK + 1)
    reader = RepoReader(repo.store, repo.sealer)
    with pytest.raises(CorruptChunk, match=f"its pack {pack_id}: .* more than the {repo_layout.MAX_PACK}"):
        reader.pack(pack_id, bytes(32))
