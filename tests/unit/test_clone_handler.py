"""The restore service's ApplicationClone handler on in-memory ports, with nothing of it patched out:
the staging location chosen, the staging operations created once whatever the re-deliveries, and
``replacePolicy: Fail`` planning the restore from a real staging backup in a local repository and
refusing before anything is written. (tests/unit/test_clone_events.py covers the stage walk and the
watcher's side.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from davit import constants
from davit.api.objects import RawObject
from davit.api.types import Stage
from davit.constants import Kind
from davit.format.layout import BackupRef
from davit.operations.messages import Message
from davit.operations.ports import Ports
from davit.settings import Settings
from davit_services.restore import clone
from tests.fakes import cluster as fakes
from tests.fakes.cluster import FakeCluster
from tests.fakes.dispatch import FakeDispatch
from tests.fakes.scratch import ScratchFactory
from tests.fakes.stores import LocalStores

ADMIN = constants.DEFAULT_ADMIN_NAMESPACE
UID = "c10e0000-0000-4000-8000-000000000002"
STAGING = f"copy-{UID[:8]}"


def available(name: str) -> RawObject:
    return {**fakes.location(name, ADMIN), "status": {"phase": "Available"}}


def make_ports(tmp_path: Path, scratch: ScratchFactory, **settings: Any) -> Ports:
    cluster = FakeCluster()
    stores = LocalStores(tmp_path / "locations", cluster=cluster)
    return Ports(cluster, scratch, FakeDispatch(), stores, Settings(**settings))


def fake(ports: Ports) -> FakeCluster:
    assert isinstance(ports.cluster, FakeCluster)
    return ports.cluster


@pytest.fixture
def ports(tmp_path: Path, scratch_factory: ScratchFactory) -> Ports:
    made = make_ports(tmp_path, scratch_factory)
    fake(made).put(available("zeta"), available("staging"), fakes.location("broken", ADMIN))
    return made


def a_clone(ports: Ports, **spec: Any) -> None:
    spec = {"sourceNamespace": "shop", "destinationNamespace": "shop-copy", **spec}
    fake(ports).put(fakes.operation(Kind.APPLICATION_CLONE, "copy", ADMIN, stage="Initial", uid=UID, **spec))


def deliver(ports: Ports) -> None:
    stored = fake(ports).find(Kind.APPLICATION_CLONE, ADMIN, "copy")
    assert stored is not None
    clone.handle(ports, Message(Kind.APPLICATION_CLONE, ADMIN, "copy", UID, stored["status"]["stage"]))


def clone_status(ports: Ports) -> dict[str, Any]:
    return fake(ports).status(
        {"kind": Kind.APPLICATION_CLONE.value, "metadata": {"namespace": ADMIN, "name": "copy"}}
    )


def staging(ports: Ports, kind: Kind) -> RawObject | None:
    return fake(ports).find(kind, ADMIN, STAGING)


def end(ports: Ports, kind: Kind, **status: Any) -> None:
    stored = staging(ports, kind)
    assert stored is not None
    fake(ports).put({**stored, "status": {"stage": "Final", **status}})


def write_staging_backup(ports: Ports, objects: list[RawObject]) -> None:
    """The staging backup's manifest and resources in its location, as the backup would write them."""
    backup = staging(ports, Kind.APPLICATION_BACKUP)
    assert backup is not None
    ref = BackupRef(ADMIN, STAGING, backup["metadata"]["uid"])
    repository = ports.stores.repository(ADMIN, backup["spec"]["backupLocation"])
    info = repository.write_part(ref, "shop/v1/configmaps", objects)
    meta = {"namespace": ADMIN, "name": STAGING, "uid": backup["metadata"]["uid"]}
    parts = [{"part": info.part, "key": info.key, "count": info.count}]
    repository.write_manifest(ref, {"backup": {"metadata": meta}, "parts": parts})


def configmap(name: str, namespace: str) -> RawObject:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace},
            "data": {"k": name}}  # fmt: skip


# --- the staging location ------------------------------------------------------------------------


def test_the_staging_location_is_the_first_available_one_by_name(ports: Ports) -> None:
    assert clone.staging_location(ports, ADMIN) == "staging"


def test_the_clone_location_setting_names_the_staging_location(
    tmp_path: Path, scratch_factory: ScratchFactory
) -> None:
    assert (
        clone.staging_location(make_ports(tmp_path, scratch_factory, clone_location="zeta"), ADMIN) == "zeta"
    )


def test_a_clone_without_an_available_location_fails(tmp_path: Path, scratch_factory: ScratchFactory) -> None:
    ports = make_ports(tmp_path, scratch_factory)
    fake(ports).put(fakes.location("broken", ADMIN))
    a_clone(ports)
    deliver(ports)
    status = clone_status(ports)
    assert (status["stage"], status["status"]) == ("Final", "Failed")
    assert status["reason"].startswith(f"no Available BackupLocation in {ADMIN}")
    assert staging(ports, Kind.APPLICATION_BACKUP) is None


# --- staging operations ----------------------------------------------------------------------------


def test_the_staging_backup_is_created_once_whatever_the_re_deliveries(ports: Ports) -> None:
    a_clone(ports, selectors={"app": "web"})
    deliver(ports)
    deliver(ports)  # the watcher's message again while the backup runs
    deliver(ports)
    assert fake(ports).calls.count("create") == 3  # the later ones answered 409, which is fine
    backup = staging(ports, Kind.APPLICATION_BACKUP)
    assert backup is not None
    assert backup["spec"] == {"backupLocation": "staging", "namespaces": ["shop"], "reclaimPolicy": "Delete",
                              "selectors": {"app": "web"}}  # fmt: skip
    owner = backup["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("ApplicationClone", "copy", UID)
    assert clone_status(ports)["stage"] == Stage.VOLUMES


def test_the_clone_ends_as_its_restore_did_and_the_staging_backup_goes(ports: Ports) -> None:
    a_clone(ports)
    deliver(ports)
    end(ports, Kind.APPLICATION_BACKUP, status="Successful", resourceCount=3)
    deliver(ports)
    restore = staging(ports, Kind.APPLICATION_RESTORE)
    assert restore is not None
    assert restore["spec"] == {
        "backupName": STAGING,
        "backupLocation": "staging",
        "namespaceMapping": {"shop": "shop-copy"},
        "replacePolicy": "Retain",
    }
    end(ports, Kind.APPLICATION_RESTORE, status="Successful", resourceCount=3,
        resourcesByKind={"ConfigMap": {"restored": 3}})  # fmt: skip
    deliver(ports)
    status = clone_status(ports)
    assert (status["stage"], status["status"], status["resourceCount"]) == ("Final", "Successful", 3)
    assert staging(ports, Kind.APPLICATION_BACKUP) is None
    assert staging(ports, Kind.APPLICATION_RESTORE) is not None  # kept for inspection
    deliver(ports)  # the clone ended: a late message changes nothing
    assert clone_status(ports) == status


# --- replacePolicy Fail ----------------------------------------------------------------------------


def test_replace_policy_fail_refuses_a_destination_holding_what_it_would_write(ports: Ports) -> None:
    fake(ports).put(configmap("b", "shop-copy"), configmap("other", "shop-copy"))
    a_clone(ports, replacePolicy="Fail")
    deliver(ports)
    write_staging_backup(ports, [configmap("a", "shop"), configmap("b", "shop")])
    end(ports, Kind.APPLICATION_BACKUP, status="Successful")
    deliver(ports)
    status = clone_status(ports)
    assert (status["stage"], status["status"]) == ("Final", "Failed")
    assert status["reason"] == (
        "replacePolicy Fail: shop-copy already holds 1 object(s) the clone would write: "
        "ConfigMap shop-copy/b (v1); nothing was written"
    )
    assert staging(ports, Kind.APPLICATION_BACKUP) is None
    assert staging(ports, Kind.APPLICATION_RESTORE) is None
    assert fake(ports).find("ConfigMap", "shop-copy", "a") is None
    assert "create_object" not in fake(ports).calls


def test_replace_policy_fail_goes_on_into_an_empty_destination(ports: Ports) -> None:
    fake(ports).put(configmap("b", "elsewhere"))
    a_clone(ports, replacePolicy="Fail")
    deliver(ports)
    write_staging_backup(ports, [configmap("a", "shop"), configmap("b", "shop")])
    end(ports, Kind.APPLICATION_BACKUP, status="Successful")
    deliver(ports)
    assert clone_status(ports)["stage"] == Stage.APPLICATIONS
    restore = staging(ports, Kind.APPLICATION_RESTORE)
    assert restore is not None and restore["spec"]["replacePolicy"] == "Retain"


def test_replace_policy_fail_without_the_staging_backup_in_its_location_fails(ports: Ports) -> None:
    a_clone(ports, replacePolicy="Fail")
    deliver(ports)
    end(ports, Kind.APPLICATION_BACKUP, status="Successful")  # but no manifest was written
    deliver(ports)
    status = clone_status(ports)
    assert (status["stage"], status["status"]) == ("Final", "Failed")
    assert "has no manifest in location staging" in status["reason"]
