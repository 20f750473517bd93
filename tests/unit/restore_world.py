"""A restore service's surroundings in memory, for the restore handlers' unit tests: the API server
(``FakeCluster``), a real backup repository in a directory (``LocalStores``) holding a real backup, the
scratch state over fakeredis and a dispatch that records what is sent.

    world = World.create(tmp_path, scratch_factory)
    world.write_backup([configmap("a"), configmap("b")])
    world.deliver(world.new_restore())           # the Initial message
    world.run()                                  # every message sent to the restore queue, in turn
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from davit import constants
from davit.api.objects import RawObject
from davit.api.types import Stage
from davit.constants import Kind, Queue
from davit.format.layout import BackupRef
from davit.operations.messages import Message
from davit.operations.ports import Ports
from davit.settings import Settings
from davit_services.restore import restore
from tests.fakes import cluster as fakes
from tests.fakes.cluster import FakeCluster
from tests.fakes.dispatch import FakeDispatch
from tests.fakes.scratch import ScratchFactory
from tests.fakes.stores import LocalStores

ADMIN = constants.DEFAULT_ADMIN_NAMESPACE
NAMESPACE = "app"
BACKUP = "b1"
BACKUP_UID = "b0000000-0000-4000-8000-000000000001"
RESTORE = "r1"
RESTORE_UID = "70000000-0000-4000-8000-000000000001"
LOCATION = "loc"


def configmap(name: str, namespace: str = NAMESPACE, **data: str) -> RawObject:
    """A ConfigMap as a backup stores it (with the server-side fields the restore drops)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "uid": f"old-{name}", "resourceVersion": "7"},
        "data": dict(data) or {"key": name},
    }


def live_configmap(name: str, namespace: str = NAMESPACE) -> RawObject:
    """A ConfigMap already in the target namespace (not made by a restore), holding ``key: live``."""
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace},
            "data": {"key": "live"}}  # fmt: skip


@dataclass
class World:
    cluster: FakeCluster
    scratch: ScratchFactory
    dispatch: FakeDispatch
    stores: LocalStores
    ports: Ports

    @classmethod
    def create(cls, tmp_path: Path, scratch: ScratchFactory, **settings: Any) -> World:
        cluster = FakeCluster()
        cluster.put(fakes.node("node-1"), fakes.location(LOCATION, NAMESPACE))
        stores = LocalStores(tmp_path / "locations", cluster=cluster)
        dispatch = FakeDispatch()
        ports = Ports(cluster, scratch, dispatch, stores, Settings(**settings))
        return cls(cluster, scratch, dispatch, stores, ports)

    # --- the backup ---------------------------------------------------------------------------------

    def write_backup(self, objects: list[RawObject], volumes: list[RawObject] | None = None) -> None:
        """A complete ApplicationBackup of ``NAMESPACE`` and its manifest and resources in the location."""
        self.cluster.put(fakes.backup(BACKUP, NAMESPACE, stage="Final", status="Successful", uid=BACKUP_UID,
                                      backupLocation=LOCATION))  # fmt: skip
        repository = self.stores.repository(NAMESPACE, LOCATION)
        ref = BackupRef(NAMESPACE, BACKUP, BACKUP_UID)
        info = repository.write_part(ref, f"{NAMESPACE}/v1/objects", objects)
        repository.write_manifest(ref, {
            "backup": {"metadata": {"namespace": NAMESPACE, "name": BACKUP, "uid": BACKUP_UID}},
            "parts": [{"part": info.part, "key": info.key, "count": info.count}],
            "volumes": list(volumes or []),
        })  # fmt: skip

    # --- the restore --------------------------------------------------------------------------------

    def new_restore(self, namespace: str = NAMESPACE, **spec: Any) -> Message:
        """An accepted ApplicationRestore of the backup in ``namespace``; its Initial message."""
        self.cluster.put(fakes.restore(RESTORE, namespace, stage="Initial", uid=RESTORE_UID,
                                       backupName=BACKUP, backupLocation=LOCATION, **spec))  # fmt: skip
        return Message(Kind.APPLICATION_RESTORE, namespace, RESTORE, RESTORE_UID, Stage.INITIAL.value)

    def restore(self, namespace: str = NAMESPACE) -> RawObject:
        found = self.cluster.find(Kind.APPLICATION_RESTORE, namespace, RESTORE)
        assert found is not None
        return found

    def status(self, namespace: str = NAMESPACE) -> dict[str, Any]:
        return dict(self.restore(namespace).get("status") or {})

    def deliver(self, message: Message) -> None:
        restore.handle(self.ports, message)

    def sent(self) -> list[Message]:
        """The messages sent to the restore service so far, and forget them."""
        messages = self.dispatch.to(Queue.RESTORE.value)
        self.dispatch.clear()
        return messages

    def run(self, limit: int = 50) -> None:
        """Deliver what was sent to the restore service, and what that sends, until nothing is left."""
        for _ in range(limit):
            messages = self.sent()
            if not messages:
                return
            for message in messages:
                self.deliver(message)
        raise AssertionError("the restore did not settle")

    def objects(self, kind: str = "ConfigMap", namespace: str | None = NAMESPACE) -> dict[str, RawObject]:
        """The objects of ``kind`` in the fake API server (in ``namespace``; None: anywhere), by name."""
        return {
            o["metadata"]["name"]: o
            for o in self.cluster.of_kind(kind)
            if namespace is None or o["metadata"].get("namespace") == namespace
        }
