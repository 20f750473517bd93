"""The retention service's handlers on the in-memory fakes: deleting a backup (its reclaimPolicy), a
backup's ttl, a location's garbage collection and sync, each delivered again, stale, or retried after a
conflict."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from davit import constants, timeutil
from davit.api.objects import RawObject
from davit.constants import Kind, RetentionAction
from davit.kube.client import ApiException
from davit.operations.messages import Message
from davit.operations.ports import Ports
from davit.retention import deletions
from davit.settings import Settings
from davit_services.retention import collection, deletion, expiry, sync
from tests.fakes import cluster as k
from tests.fakes.dispatch import FakeDispatch
from tests.fakes.scratch import ScratchFactory
from tests.fakes.stores import LocalStores


@pytest.fixture
def fake() -> k.FakeCluster:
    cluster = k.FakeCluster()
    cluster.put(k.location("loc", "app"))
    return cluster


@pytest.fixture
def stores(fake: k.FakeCluster, tmp_path: Path) -> LocalStores:
    return LocalStores(tmp_path / "locations", cluster=fake)


@pytest.fixture
def ports(fake: k.FakeCluster, scratch_factory: ScratchFactory, stores: LocalStores) -> Ports:
    return Ports(fake, scratch_factory, FakeDispatch(), stores, Settings())


def _message(obj: RawObject, action: RetentionAction) -> Message:
    meta = obj["metadata"]
    return Message(Kind(obj["kind"]), meta.get("namespace", ""), meta["name"], meta["uid"], action.value)


def _deleted_backup(fake: k.FakeCluster, policy: str, location: str = "loc") -> RawObject:
    obj = k.backup(
        "b1", "app", stage="Final", status="Successful", finalizers=[constants.BACKUP_FINALIZER],
        backupLocation=location, reclaimPolicy=policy,
    )  # fmt: skip
    obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return fake.put(obj)


# --- deletion ---------------------------------------------------------------------------------------


def test_retain_keeps_the_data_and_removes_the_finalizer_once(ports: Ports, fake: k.FakeCluster) -> None:
    obj = _deleted_backup(fake, "Retain")
    message = _message(obj, RetentionAction.DELETE)
    deletion.handle(ports, message)
    assert fake.find(Kind.APPLICATION_BACKUP, "app", "b1") is None  # the last finalizer went
    assert "delete_backup_snapshots" not in fake.calls
    # Delivered again: the backup is gone, nothing more is done.
    calls = len(fake.calls)
    deletion.handle(ports, message)
    assert fake.calls[calls:] == ["get"]  # the read that finds it gone


def test_delete_with_its_location_gone_says_what_was_left(
    ports: Ports, fake: k.FakeCluster, stores: LocalStores
) -> None:
    obj = _deleted_backup(fake, "Delete", location="gone")
    deletion.handle(ports, _message(obj, RetentionAction.DELETE))
    assert fake.reasons() == ["DataRetained"]
    assert "delete_backup_snapshots" in fake.calls
    assert fake.find(Kind.APPLICATION_BACKUP, "app", "b1") is None


def test_a_conflict_on_the_finalizer_is_retried(ports: Ports, fake: k.FakeCluster) -> None:
    obj = _deleted_backup(fake, "Retain")
    message = _message(obj, RetentionAction.DELETE)
    fake.conflict_next("remove_finalizer")
    with pytest.raises(ApiException) as refused:
        deletion.handle(ports, message)
    assert refused.value.status == 409
    assert fake.find(Kind.APPLICATION_BACKUP, "app", "b1") is not None
    deletion.handle(ports, message)  # the task's retry
    assert fake.find(Kind.APPLICATION_BACKUP, "app", "b1") is None


def test_a_deletion_for_another_incarnation_is_stale(ports: Ports, fake: k.FakeCluster) -> None:
    obj = _deleted_backup(fake, "Retain")
    message = _message(obj, RetentionAction.DELETE)
    stale = Message(message.kind, message.namespace, message.name, "another-uid", message.stage)
    deletion.handle(ports, stale)
    assert fake.find(Kind.APPLICATION_BACKUP, "app", "b1") is not None


# --- a backup's ttl ---------------------------------------------------------------------------------


def test_an_expired_backup_is_deleted_and_counted_once(
    ports: Ports, fake: k.FakeCluster, scratch_factory: ScratchFactory
) -> None:
    obj = fake.put(
        k.backup(
            "old", "app", stage="Final", status="Successful", backupLocation="loc", ttl="1h",
            status_fields={"finishTimestamp": "2026-01-01T00:00:00Z"},
        )
    )  # fmt: skip
    message = _message(obj, RetentionAction.EXPIRE)
    expiry.expire(ports, message)
    assert fake.find(Kind.APPLICATION_BACKUP, "app", "old") is None
    assert fake.reasons() == ["Expired"]
    assert scratch_factory.deletions().counts() == {("app", deletions.TTL): 1}
    expiry.expire(ports, message)  # delivered again
    assert fake.reasons() == ["Expired"]
    assert scratch_factory.deletions().counts() == {("app", deletions.TTL): 1}


def test_a_backup_whose_ttl_has_not_passed_stays(ports: Ports, fake: k.FakeCluster) -> None:
    obj = fake.put(k.backup("young", "app", stage="Final", status="Successful", backupLocation="loc"))
    expiry.expire(ports, _message(obj, RetentionAction.EXPIRE))
    assert fake.find(Kind.APPLICATION_BACKUP, "app", "young") is not None
    assert fake.reasons() == []


@dataclass(frozen=True)
class ShiftedClock:
    """The real time, ``ahead`` later (what ``davit.clocks.OffsetFileClock`` gives a test)."""

    ahead: datetime.timedelta

    def now(self) -> datetime.datetime:
        return timeutil.utcnow() + self.ahead


def test_a_ttl_runs_out_by_the_ports_clock(ports: Ports, fake: k.FakeCluster) -> None:
    finished = timeutil.format_time(timeutil.utcnow())
    obj = fake.put(
        k.backup(
            "recent", "app", stage="Final", status="Successful", backupLocation="loc", ttl="1h",
            status_fields={"finishTimestamp": finished},
        )
    )  # fmt: skip
    message = _message(obj, RetentionAction.EXPIRE)
    expiry.expire(ports, message)
    assert fake.find(Kind.APPLICATION_BACKUP, "app", "recent") is not None  # an hour to go, really

    expiry.expire(replace(ports, clock=ShiftedClock(datetime.timedelta(hours=2))), message)
    assert fake.find(Kind.APPLICATION_BACKUP, "app", "recent") is None
    assert fake.reasons() == ["Expired"]


def test_a_schedule_without_its_policy_keeps_everything(ports: Ports, fake: k.FakeCluster) -> None:
    schedule = fake.put(k.schedule("nightly", "app", schedulePolicyName="missing"))
    fake.put(k.backup("nightly-1", "app", stage="Final", status="Failed", backupLocation="loc"))
    expiry.apply_schedule_retention(ports, _message(schedule, RetentionAction.RETAIN))
    assert fake.find(Kind.APPLICATION_BACKUP, "app", "nightly-1") is not None
    assert "delete" not in fake.calls


# --- the location's collection and sync -------------------------------------------------------------


def test_collection_skips_a_location_not_available(
    ports: Ports, fake: k.FakeCluster, stores: LocalStores
) -> None:
    location = fake.find(Kind.BACKUP_LOCATION, "app", "loc")
    assert location is not None
    collection.handle(ports, _message(location, RetentionAction.COLLECT))
    assert stores.opened == [] and fake.reasons() == []


def test_collection_of_an_unreachable_store_leaves_an_event(
    ports: Ports, fake: k.FakeCluster, stores: LocalStores
) -> None:
    location = fake.find(Kind.BACKUP_LOCATION, "app", "loc")
    assert location is not None
    location = fake.patch_status(Kind.BACKUP_LOCATION, location, {"phase": "Available"})
    stores.unavailable[("app", "loc")] = "the bucket is gone"
    collection.handle(ports, _message(location, RetentionAction.COLLECT))
    assert fake.reasons() == ["CollectionFailed"]
    assert "the bucket is gone" in fake.events[0].message


@pytest.mark.parametrize(("percent", "repacked"), [(None, 1), (0, 0), (30, 1), (20, 0)])
def test_collection_repacks_below_the_locations_threshold(
    ports: Ports, fake: k.FakeCluster, stores: LocalStores, tmp_path: Path, percent: int | None, repacked: int
) -> None:
    """A pack a quarter in use once the old tree is deleted: repacked by default (50%) and at 30%, not
    at 20% nor when the location turns repacking off."""
    from davit.repo.gc import DOOMED_TREES
    from tests.unit.test_repo_gc import shared_pack_backups
    from tests.unit.test_repo_support import Location

    location = fake.find(Kind.BACKUP_LOCATION, "app", "loc")
    assert location is not None
    if percent is not None:
        location = fake.patch(
            Kind.BACKUP_LOCATION, "app", "loc", {"location": {"repackBelowPercent": percent}}
        )
    location = fake.patch_status(Kind.BACKUP_LOCATION, location, {"phase": "Available"})
    repository = stores.repository("app", "loc")
    loc = Location(repository.store, repository.sealer, stores.directory("app", "loc"))  # type: ignore[arg-type]
    old_tree, _new_tree, _shared, _content = shared_pack_backups(loc, tmp_path)
    # The old tree marked in 1970: this collection deletes it, and decides about its pack.
    repository.store.put(f"{DOOMED_TREES}{old_tree.id}.1", repository.sealer.seal("marker", b""))
    collection.handle(ports, _message(location, RetentionAction.COLLECT))
    assert fake.reasons() == ["Collected"]
    assert ("; repacked 1 mostly unused pack(s)" in fake.events[0].message) == bool(repacked)
    assert len(list(repository.store.list("repo/packs/"))) == 1 + repacked


def test_sync_of_a_location_without_sync_does_nothing(
    ports: Ports, fake: k.FakeCluster, stores: LocalStores
) -> None:
    location = fake.find(Kind.BACKUP_LOCATION, "app", "loc")
    assert location is not None
    sync.handle(ports, _message(location, RetentionAction.SYNC))
    assert stores.opened == [] and fake.reasons() == []


def test_sync_of_an_unreachable_location_removes_nothing(
    ports: Ports, fake: k.FakeCluster, stores: LocalStores
) -> None:
    location = fake.find(Kind.BACKUP_LOCATION, "app", "loc")
    assert location is not None
    location = fake.patch(Kind.BACKUP_LOCATION, "app", "loc", {"location": {"sync": True}})
    fake.put(k.backup("imported", "app", stage="Final", status="Successful", backupLocation="loc"))
    stores.unavailable[("app", "loc")] = "the bucket is gone"
    sync.handle(ports, _message(location, RetentionAction.SYNC))
    assert fake.reasons() == ["SyncFailed"]
    assert fake.find(Kind.APPLICATION_BACKUP, "app", "imported") is not None
    assert "lastSynced" not in fake.status(location)
