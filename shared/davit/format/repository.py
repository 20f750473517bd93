"""A location as Davit reads and writes it: sealed objects, the location record, backups and manifests.

A backup is complete only when its manifest exists; the manifest is written after everything it lists,
and deleting a backup removes the manifest first, so a reader never takes a partial backup for a whole
one (``list_backups`` returns only backups with a manifest).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from davit import timeutil
from davit.format import FORMAT_VERSION, layout
from davit.format.sealing import Sealer, new_salt
from davit.storage.base import ObjectNotFound, ObjectStore


class FormatError(Exception):
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
        """Read the location record (creating it on first use) and set up sealing with its salt."""
        record = read_location_record(store)
        if record is None:
            if not create:
                raise FormatError(f"{store.url} holds no Davit location record")
            record = {
                "formatVersion": FORMAT_VERSION,
                "salt": new_salt().hex(),
                "createdAt": timeutil.format_time(timeutil.utcnow()),
            }
            store.put(layout.LOCATION_RECORD, json.dumps(record).encode())
            # Two writers may create the record at once; the one stored wins, and objects carry the salt
            # they were sealed with, so objects sealed by the loser stay readable too.
            record = read_location_record(store) or record
        try:
            version = int(record["formatVersion"])
            salt = bytes.fromhex(str(record["salt"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"{store.url}: unreadable {layout.LOCATION_RECORD}: {exc!r}") from exc
        if version > FORMAT_VERSION:
            raise FormatError(f"{store.url} uses format {version}; this Davit reads up to {FORMAT_VERSION}")
        if len(salt) != len(new_salt()):
            raise FormatError(f"{store.url}: {layout.LOCATION_RECORD} holds a salt of {len(salt)} bytes")
        return cls(store, Sealer(passphrase=encryption_key or None, salt=salt))

    # --- sealed objects ----------------------------------------------------------------------------

    def put(self, key: str, data: bytes) -> int:
        sealed = self.sealer.seal(key, data)
        self.store.put(key, sealed)
        return len(sealed)

    def get(self, key: str) -> bytes:
        return self.sealer.open(key, self.store.get(key))

    # --- backups -----------------------------------------------------------------------------------

    def write_part(self, ref: layout.BackupRef, part: str, objects: list[dict[str, Any]]) -> PartInfo:
        raw = json.dumps(objects, separators=(",", ":")).encode()
        key = ref.resource_part(part)
        stored = self.put(key, raw)
        return PartInfo(part=part, key=key, count=len(objects), raw_size=len(raw), stored_size=stored)

    def read_part(self, key: str) -> list[dict[str, Any]]:
        objects: list[dict[str, Any]] = json.loads(self.get(key))
        return objects

    def write_manifest(self, ref: layout.BackupRef, manifest: dict[str, Any]) -> int:
        return self.put(ref.manifest, json.dumps({"formatVersion": FORMAT_VERSION, **manifest}).encode())

    def read_manifest(self, ref: layout.BackupRef) -> dict[str, Any]:
        manifest: dict[str, Any] = json.loads(self.get(ref.manifest))
        if int(manifest.get("formatVersion", 0)) > FORMAT_VERSION:
            raise FormatError(f"{ref.manifest} uses format {manifest['formatVersion']}")
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


def read_location_record(store: ObjectStore) -> dict[str, Any] | None:
    try:
        record: dict[str, Any] = json.loads(store.get(layout.LOCATION_RECORD))
    except ObjectNotFound:
        return None
    except ValueError as exc:
        raise FormatError(f"{store.url}: unreadable {layout.LOCATION_RECORD}: {exc}") from exc
    if not isinstance(record, dict):
        raise FormatError(f"{store.url}: unreadable {layout.LOCATION_RECORD}: not a JSON object")
    return record
