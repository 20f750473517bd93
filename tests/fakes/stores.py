"""``davit.operations.ports.Stores`` for handler tests: real ``BackupRepository`` objects over real
``LocalStore`` directories below a test's ``tmp_path``, so that a handler's reads and writes go through
the repository code the services run (sealing, layout, manifests).

    from tests.fakes.stores import LocalStores

    stores = LocalStores(tmp_path)                              # any (namespace, location) opens
    stores = LocalStores(tmp_path, cluster=fake)                # only BackupLocations in the fake, resolved
                                                                # as Runtime.repository does
    repository = stores.repository("app", "loc")                # what a handler gets

Each location has its own directory, ``tmp_path/<namespace of the location>/<name>`` (a location shared
from the admin namespace is one directory for every namespace using it). ``unavailable`` maps
(namespace, location name) to the reason ``repository`` raises ``LocationUnavailable`` with; ``opened``
records every call as (namespace, location name, verify).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from davit import constants
from davit.format.repository import BackupRepository
from davit.operations.runtime import LocationUnavailable
from davit.storage.base import StorageError
from davit.storage.local import LocalStore
from davit.validation import Lookup, resolve_location


@dataclass
class LocalStores:
    root: Path
    #: With a cluster, a location must exist there (its own namespace first, then the admin namespace's
    #: shared one, ``davit.validation.resolve_location``); without, any name opens.
    cluster: Lookup | None = None
    admin_namespace: str = constants.DEFAULT_ADMIN_NAMESPACE
    #: The passphrase of every location (a location's own ``encryptionKey`` wins).
    encryption_key: str | None = None
    unavailable: dict[tuple[str, str], str] = field(default_factory=dict)
    opened: list[tuple[str, str, bool]] = field(default_factory=list)
    _repositories: dict[tuple[str, str], BackupRepository] = field(default_factory=dict)

    def repository(self, namespace: str, location_name: str, verify: bool = False) -> BackupRepository:
        self.opened.append((namespace, location_name, verify))
        reason = self.unavailable.get((namespace, location_name))
        if reason is not None:
            raise LocationUnavailable(reason)
        key, passphrase = (namespace, location_name), self.encryption_key
        if self.cluster is not None:
            location = resolve_location(self.cluster, namespace, location_name, self.admin_namespace)
            if location is None:
                raise LocationUnavailable(f"BackupLocation {namespace}/{location_name} not found")
            key = (location["metadata"]["namespace"], location["metadata"]["name"])
            passphrase = (location.get("location") or {}).get("encryptionKey") or passphrase
        cached = self._repositories.get(key)
        if cached is None:
            directory = self.root.joinpath(*key)
            directory.mkdir(parents=True, exist_ok=True)
            store = LocalStore(directory)
            try:
                if verify:
                    store.check()
                cached = self._repositories[key] = BackupRepository.open(store, passphrase)
            except StorageError as exc:  # as Runtime.repository says it
                raise LocationUnavailable(
                    f"BackupLocation {key[0]}/{key[1]} is unavailable: {exc.code}: {exc.message}"
                ) from exc
        return cached

    def directory(self, namespace: str, location_name: str) -> Path:
        """Where the location (by its own namespace and name) keeps its objects."""
        return self.root / namespace / location_name


@pytest.fixture
def stores(tmp_path: Path) -> LocalStores:
    return LocalStores(tmp_path / "locations")
