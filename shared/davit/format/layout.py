"""Where everything lives inside a location (pure): a value, testable without a bucket.

::

    <prefix>/davit-location.json                           the location record (format version, KDF salt)
    <prefix>/backups/<namespace>/<name>/<uid>/manifest     written last: the backup is complete once it exists
    <prefix>/backups/<namespace>/<name>/<uid>/resources/<part>.bin   resources, one object per listed page
    <prefix>/backups/<namespace>/<name>/<uid>/log.jsonl.bin          the operation's own log

The store applies ``<prefix>``; keys here are relative to it. Namespaces and names are DNS-1123, so they
are safe as path segments; ``part`` names are made safe by ``part_key``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

LOCATION_RECORD = "davit-location.json"
BACKUPS = "backups"
RESTORES = "restores"
MANIFEST = "manifest"

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class BackupRef:
    namespace: str
    name: str
    uid: str

    @property
    def root(self) -> str:
        return f"{BACKUPS}/{self.namespace}/{self.name}/{self.uid}/"

    @property
    def manifest(self) -> str:
        return self.root + MANIFEST

    @property
    def log(self) -> str:
        return self.root + "log.jsonl.bin"

    def resource_part(self, part: str) -> str:
        return f"{self.root}resources/{part_key(part)}.bin"


def restore_log(namespace: str, name: str, uid: str) -> str:
    """Where a restore's (or clone's) own log is kept, in the location of the backup it restored."""
    return f"{RESTORES}/{namespace}/{name}/{uid}/log.jsonl.bin"


def ref_from_path(backup_path: str) -> BackupRef | None:
    """The backup a ``status.backupPath`` (``<store url>/backups/<namespace>/<name>/<uid>/``) names."""
    parts = backup_path.rstrip("/").split("/")
    if len(parts) < 4 or parts[-4] != BACKUPS or not all(parts[-3:]):
        return None
    return BackupRef(namespace=parts[-3], name=parts[-2], uid=parts[-1])


def part_key(part: str) -> str:
    """A file-name-safe, unique, stable name for a part id such as ``apps/v1/deployments#3``."""
    readable = _UNSAFE.sub("_", part).strip("_")[:80] or "part"
    digest = hashlib.sha256(part.encode()).hexdigest()[:12]
    return f"{readable}-{digest}"


def parse_manifest_key(key: str) -> BackupRef | None:
    """The backup a manifest key belongs to, or None if ``key`` is not a manifest."""
    parts = key.split("/")
    if len(parts) != 5 or parts[0] != BACKUPS or parts[4] != MANIFEST:
        return None
    return BackupRef(namespace=parts[1], name=parts[2], uid=parts[3])
