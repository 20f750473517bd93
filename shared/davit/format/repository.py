"""A location as Davit reads and writes it: sealed objects, the location record, backups and manifests.

A backup is complete only when its manifest exists; the manifest is written after everything it lists,
and deleting a backup removes the manifest first, so a reader never takes a partial backup for a whole
one (``list_backups`` returns only backups with a manifest).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from davit import errors, jsonbytes, timeutil
from davit.format import FORMAT_VERSION, layout, sealing
from davit.format.sealing import (
    LEGACY_KDF,
    MAX_CONTENT,
    SALT_BYTES,
    CorruptObject,
    Kdf,
    ObjectTooLarge,
    Sealer,
    load_json,
    new_salt,
    sealed_limit,
)
from davit.storage.base import ObjectNotFound, ObjectStore
from davit.storage.base import ObjectTooLarge as StoredTooLarge

#: What a manifest may decompress to: it lists every resource of its backup (~100 bytes each), so this
#: leaves room for several hundred thousand.
MAX_MANIFEST: Final = MAX_CONTENT
#: What one resource part (one listed page, ``export_page_size`` objects) may decompress to: a page of
#: 500 objects of half a MiB each. The API server stores objects of up to ~1.5 MiB.
MAX_PART: Final = 256 << 20
#: The location record is a few hundred bytes.
MAX_RECORD: Final = 64 << 10
#: Binds the record's MAC key to its use.
RECORD_MAC_CONTEXT: Final = b"davit location record"


class FormatError(errors.Unreadable):
    """The location holds something this version cannot read."""


@dataclass(frozen=True)
class PartInfo:
    """One written part: where it is and what it holds."""

    part: str
    key: str
    count: int
    raw_size: int
    stored_size: int


class BackupRepository:
    def __init__(self, store: ObjectStore, sealer: Sealer) -> None:
        self.store = store
        self.sealer = sealer

    @classmethod
    def open(cls, store: ObjectStore, encryption_key: str | None, create: bool = True) -> BackupRepository:
        """Read the location record (creating it on first use) and set up sealing as it says: its salt
        and key derivation, checked against ``encryption_key`` (``FormatError`` if they do not agree)."""
        passphrase = encryption_key or None
        record = read_location_record(store)
        if record is None:
            if not create:
                raise FormatError(f"{store.url} holds no Davit location record")
            record = new_location_record(passphrase)
            store.put(layout.LOCATION_RECORD, json.dumps(record).encode())
            # Two writers may create the record at once; the one stored wins, and objects carry the salt
            # they were sealed with, so objects sealed by the loser stay readable too.
            record = read_location_record(store) or record
        return cls(store, record_sealer(store.url, record, passphrase))

    # --- sealed objects ----------------------------------------------------------------------------

    def put(self, key: str, data: bytes) -> int:
        sealed = self.sealer.seal(key, data)
        self.store.put(key, sealed)
        return len(sealed)

    def get(self, key: str, max_size: int = MAX_CONTENT) -> bytes:
        return self.sealer.open(key, fetch_sealed(self.store, key, max_size), max_size)

    # --- backups -----------------------------------------------------------------------------------

    def write_part(self, ref: layout.BackupRef, part: str, objects: list[dict[str, Any]]) -> PartInfo:
        raw = jsonbytes.dumps_compact(objects)
        key = ref.resource_part(part)
        stored = self.put(key, raw)
        return PartInfo(part=part, key=key, count=len(objects), raw_size=len(raw), stored_size=stored)

    def read_part(self, key: str) -> list[dict[str, Any]]:
        return self.read_part_with_digest(key)[0]

    def read_part_with_digest(self, key: str) -> tuple[list[dict[str, Any]], str]:
        """A part's objects and a digest of its content: a reader that reads a part twice (a restore
        plans from it, then creates from it) knows whether it read the same objects."""
        raw = self.get(key, MAX_PART)
        objects = load_json(key, raw)
        if not isinstance(objects, list) or not all(isinstance(o, dict) for o in objects):
            raise CorruptObject(f"{key}: not a list of objects")
        return objects, hashlib.blake2b(raw, digest_size=16).hexdigest()

    def write_manifest(self, ref: layout.BackupRef, manifest: dict[str, Any]) -> int:
        return self.put(ref.manifest, json.dumps({"formatVersion": FORMAT_VERSION, **manifest}).encode())

    def read_manifest(self, ref: layout.BackupRef) -> dict[str, Any]:
        manifest = load_json(ref.manifest, self.get(ref.manifest, MAX_MANIFEST))
        if not isinstance(manifest, dict):
            raise CorruptObject(f"{ref.manifest}: not a JSON object")
        version = manifest.get("formatVersion", 0)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise FormatError(f"{ref.manifest} uses format {version!r}")
        return manifest

    def has_manifest(self, ref: layout.BackupRef) -> bool:
        return self.store.exists(ref.manifest)

    def list_backups(self, namespace: str | None = None) -> Iterator[layout.BackupRef]:
        """Complete backups (those with a manifest), optionally of one namespace."""
        prefix = f"{layout.BACKUPS}/{namespace}/" if namespace else f"{layout.BACKUPS}/"
        for info in self.store.list(prefix):
            ref = layout.parse_manifest_key(info.key)
            if ref is not None:
                yield ref

    def delete_backup(self, ref: layout.BackupRef) -> int:
        """Remove a backup: the manifest first (from then on no reader takes it for a backup), then the
        rest. Safe to repeat after an interruption."""
        self.store.delete(ref.manifest)
        return self.store.delete_prefix(ref.root) + 1

    def write_log(self, ref: layout.BackupRef, lines: list[str]) -> None:
        self.put(ref.log, ("\n".join(lines) + "\n").encode() if lines else b"")

    def read_log(self, ref: layout.BackupRef) -> list[str]:
        try:
            return self.get(ref.log).decode().splitlines()
        except ObjectNotFound:
            return []


def fetch_sealed(store: ObjectStore, key: str, max_content: int = MAX_CONTENT) -> bytes:
    """The stored bytes of a sealed object of at most ``max_content`` bytes of content: never more than
    such an object can take is read (``ObjectTooLarge`` otherwise, a ``CorruptObject``)."""
    limit = sealed_limit(max_content)
    try:
        return store.get(key, limit)
    except StoredTooLarge as exc:
        raise ObjectTooLarge(
            f"{key}: {exc.size} bytes or more stored, more than the {limit} allowed"
        ) from exc


def new_location_record(passphrase: str | None) -> dict[str, Any]:
    """A new location's record: with ``passphrase``, authenticated by a key derived from it."""
    salt, kdf = new_salt(), sealing.DEFAULT_KDF
    record: dict[str, Any] = {
        "formatVersion": FORMAT_VERSION,
        "salt": salt.hex(),
        "createdAt": timeutil.format_time(timeutil.utcnow()),
        "encrypted": bool(passphrase),
        "kdf": kdf.to_record(),
    }
    if passphrase:
        record["mac"] = record_mac(Sealer(passphrase=passphrase, salt=salt, kdf=kdf), record)
    return record


def record_mac(sealer: Sealer, record: dict[str, Any]) -> str:
    """HMAC-SHA256 of the record without its ``mac``, as canonical JSON (sorted keys, no spaces), with a
    key derived from the location's AES key: only a holder of the encryptionKey can write a record that
    verifies, so no one else can turn an encrypted location into a plain one or lower its parameters."""
    canonical = json.dumps(
        {k: v for k, v in record.items() if k != "mac"}, sort_keys=True, separators=(",", ":")
    )
    mac_key = hmac.new(sealer.key(), RECORD_MAC_CONTEXT, hashlib.sha256).digest()
    return hmac.new(mac_key, canonical.encode(), hashlib.sha256).hexdigest()


def record_sealer(url: str, record: dict[str, Any], passphrase: str | None) -> Sealer:
    """The Sealer a location record calls for, refusing a record that does not fit ``passphrase``."""
    where = f"{url}: {layout.LOCATION_RECORD}"
    try:
        version = record["formatVersion"]
        salt = bytes.fromhex(str(record["salt"]))
        if not isinstance(version, int) or isinstance(version, bool):
            raise ValueError(f"formatVersion {version!r} is not a number")
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"{where} is unreadable: {exc!r}") from exc
    if version > FORMAT_VERSION:
        raise FormatError(f"{url} uses format {version}; this Davit reads up to {FORMAT_VERSION}")
    if len(salt) != SALT_BYTES:
        raise FormatError(f"{where} holds a salt of {len(salt)} bytes")
    if version < 2:
        # Format version 1 names no parameters, has no flag and no MAC: it opens as it always did. With
        # an encryptionKey, only objects encrypted with it are read from it all the same.
        return Sealer(passphrase=passphrase, salt=salt, kdf=LEGACY_KDF)
    try:
        kdf = Kdf.from_record(record.get("kdf"))
    except ValueError as exc:
        raise FormatError(f"{where} is unreadable: {exc}") from exc
    encrypted = record.get("encrypted")
    if not isinstance(encrypted, bool):
        raise FormatError(f"{where} is unreadable: 'encrypted' is {encrypted!r}")
    if encrypted and not passphrase:
        raise FormatError(
            f"{url} is encrypted (its {layout.LOCATION_RECORD} says so), and the BackupLocation has "
            "no encryptionKey"
        )
    if passphrase and not encrypted:
        # Encryption is chosen when a location is created, for good: a record saying otherwise where a
        # key is expected is what someone who can write to the bucket, but has no key, would put there.
        raise FormatError(
            f"{where} says the location is not encrypted, and the BackupLocation has an encryptionKey: "
            "refused (use a new location, or prefix, for encrypted backups)"
        )
    sealer = Sealer(passphrase=passphrase, salt=salt, kdf=kdf)
    if passphrase:
        mac = record.get("mac")
        if not isinstance(mac, str) or not hmac.compare_digest(mac, record_mac(sealer, record)):
            raise FormatError(
                f"{where} is not authenticated by the BackupLocation's encryptionKey (another key, or the "
                "record was altered)"
            )
    return sealer


def read_location_record(store: ObjectStore) -> dict[str, Any] | None:
    try:
        data = store.get(layout.LOCATION_RECORD, MAX_RECORD)
    except ObjectNotFound:
        return None
    except StoredTooLarge as exc:
        raise FormatError(f"{store.url}: {layout.LOCATION_RECORD} is {exc.size} bytes or more") from exc
    try:
        record: dict[str, Any] = load_json(layout.LOCATION_RECORD, data, max_depth=4)
    except CorruptObject as exc:
        raise FormatError(f"{store.url}: unreadable {exc}") from exc
    if not isinstance(record, dict):
        raise FormatError(f"{store.url}: unreadable {layout.LOCATION_RECORD}: not a JSON object")
    return record
