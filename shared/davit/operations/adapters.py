"""The real ``Scratch`` of ``davit.operations.ports``: scratch state in the worker's Redis (the client the
``Runtime`` holds). The other ports' real implementations: ``davit.kube.cluster.KubeCluster`` (Cluster),
the ``Runtime`` itself (Stores), ``Runtime.dispatch`` (Dispatch)."""

from __future__ import annotations

from typing import Any

from davit.operations.scratch import (
    BackupScratch,
    CloneScratch,
    OperationState,
    RecordedMetrics,
    RestoreScratch,
    RetentionDeletions,
)


class RedisScratch:
    """Each operation's scratch state over one Redis client (``Runtime.redis``)."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis

    def backup(self, uid: str) -> BackupScratch:
        return BackupScratch(self.redis, uid)

    def restore(self, uid: str) -> RestoreScratch:
        return RestoreScratch(self.redis, uid)

    def clone(self, uid: str) -> CloneScratch:
        return CloneScratch(self.redis, uid)

    def operation(self, uid: str) -> OperationState:
        return OperationState(self.redis, uid)

    def deletions(self) -> RetentionDeletions:
        return RetentionDeletions(self.redis)

    def metrics(self) -> RecordedMetrics:
        return RecordedMetrics(self.redis)
