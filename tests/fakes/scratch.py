"""Scratch state over an in-memory Redis (fakeredis), for unit tests of handlers and of the scratch
module itself.

The fixture ``scratch_factory`` is registered for every unit test (tests/unit/conftest.py)::

    from tests.fakes.scratch import ScratchFactory

    def test_something(scratch_factory: ScratchFactory) -> None:
        state = scratch_factory.backup("uid-1")
        ...
        assert scratch_factory.names("uid-1") == [...]

or without pytest's fixture: ``ScratchFactory()``. ``factory.redis`` is the in-memory client to put on a
Runtime (``rt.redis``) when the code under test makes its own scratch objects.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import fakeredis
import pytest

from davit.operations.scratch import (
    BackupScratch,
    CloneScratch,
    OperationState,
    QueueState,
    RecordedMetrics,
    RestoreScratch,
    RetentionDeletions,
)


def fake_redis() -> Any:
    """A fresh, empty in-memory Redis (bytes in and out, like the services' client)."""
    return fakeredis.FakeRedis()


@dataclass
class ScratchFactory:
    redis: Any = field(default_factory=fake_redis)

    def backup(self, uid: str = "backup-uid") -> BackupScratch:
        return BackupScratch(self.redis, uid)

    def restore(self, uid: str = "restore-uid") -> RestoreScratch:
        return RestoreScratch(self.redis, uid)

    def clone(self, uid: str = "clone-uid") -> CloneScratch:
        return CloneScratch(self.redis, uid)

    def operation(self, uid: str) -> OperationState:
        return OperationState(self.redis, uid)

    def deletions(self) -> RetentionDeletions:
        return RetentionDeletions(self.redis)

    def metrics(self) -> RecordedMetrics:
        return RecordedMetrics(self.redis)

    def queues(self) -> QueueState:
        return QueueState(self.redis)

    def names(self, uid: str) -> list[str]:
        """The names of the keys the operation ``uid`` has now (after ``davit:op:<uid>:``)."""
        return OperationState(self.redis, uid).names()

    def ttls(self) -> dict[str, int]:
        """Every key in the fake Redis → its TTL in seconds (-1: none)."""
        return {key.decode(): int(self.redis.ttl(key)) for key in self.redis.scan_iter(match="*")}


@pytest.fixture
def scratch_factory() -> Iterator[ScratchFactory]:
    factory = ScratchFactory()
    try:
        yield factory
    finally:
        factory.redis.flushall()
