"""When garbage collection runs by itself: the watcher's location checker asks for one collection per
``gc_interval_seconds`` of each Available location whose store holds a repository, and the retention
service routes the message to the collection."""

from __future__ import annotations

import datetime
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from davit.constants import Kind
from davit.operations import queueing
from davit.operations.messages import Message
from davit.repo.gc import COLLECT_STAGE
from davit.storage.local import LocalStore
from davit_services.retention import collection, tasks
from davit_services.watcher.locations import LocationChecker, collect_message, has_repository

NOW = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)
DAY = 86400.0
LOCATION = {"metadata": {"name": "loc", "namespace": "app", "uid": "loc-uid"}, "location": {"type": "local"}}


def test_collect_message_names_the_location_and_its_interval() -> None:
    message = collect_message(LOCATION, NOW, DAY)
    assert (message.kind, message.namespace, message.name, message.uid, message.stage) == (
        Kind.BACKUP_LOCATION, "app", "loc", "loc-uid", COLLECT_STAGE,
    )  # fmt: skip
    later_that_day = collect_message(LOCATION, NOW + datetime.timedelta(hours=11, minutes=59), DAY)
    next_day = collect_message(LOCATION, NOW + datetime.timedelta(hours=12), DAY)
    assert later_that_day.key == message.key, "every check of one interval: the same message"
    assert next_day.key != message.key, "the next interval's collection is a new message"


def test_a_store_has_a_repository_once_volume_data_is_in_it(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put("backups/app/b/u/manifest", b"resources only")
    assert not has_repository(store)
    store.put("repo/index/" + "0" * 64, b"an index object")
    assert has_repository(store)


@pytest.fixture
def checker() -> LocationChecker:
    celery = queueing.create_app("redis://127.0.0.1:1/0", "davit-test")  # never reached: nothing is sent
    return LocationChecker(None, 300.0, threading.Event(), celery=celery, gc_interval_seconds=1e9)


def test_the_checker_asks_once_per_interval_and_only_for_a_repository(
    checker: LocationChecker, tmp_path: Path
) -> None:
    store = LocalStore(tmp_path)
    assert checker._collection(LOCATION, store) is None, "no repository: nothing to collect"
    store.put("repo/packs/00/" + "0" * 64, b"a pack")
    message = checker._collection(LOCATION, store)
    assert message is not None and message.stage == COLLECT_STAGE
    checker._collections["loc-uid"] = message.part  # what check() records once it sent the message
    assert checker._collection(LOCATION, store) is None, "sent already in this interval"
    checker._collections["loc-uid"] = str(int(message.part) - 1)
    again = checker._collection(LOCATION, store)
    assert again is not None and again.key == message.key, "last interval's was sent, not this one's"


def test_the_gc_interval_defaults_to_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAVIT_GC_INTERVAL_SECONDS", "3600")
    celery = queueing.create_app("redis://127.0.0.1:1/0", "davit-test")
    assert LocationChecker(None, 300.0, threading.Event(), celery=celery).gc_interval == 3600.0


def test_the_retention_service_routes_a_collect_message(monkeypatch: pytest.MonkeyPatch) -> None:
    handled: list[Message] = []
    monkeypatch.setattr(collection, "handle", lambda _rt, message: handled.append(message))
    message = collect_message(LOCATION, NOW, DAY)
    rt: Any = SimpleNamespace(ports=None)  # the handler is given the Runtime's ports
    tasks.handle(rt, message)
    assert handled == [message]
