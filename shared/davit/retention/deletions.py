"""Counting the backups retention deletes, for the exporter's ``davit_retention_deletions_total``.

Workers have no ``/metrics`` of their own (only the exporter serves one), so the retention service adds
to a Redis hash (kept by ``davit.operations.scratch.RetentionDeletions``) and the exporter reads it at
scrape time. Labels stay bounded: the namespace and one of the few reasons below, never a backup's name.
"""

from __future__ import annotations

from typing import Any, Final

from davit.operations.scratch import RetentionDeletions

KEY: Final = RetentionDeletions.KEY
#: Why retention deleted a backup.
RETAIN: Final = "retain"  # beyond a policy type's `retain` count
SUPERSEDED: Final = "failed-superseded"  # a failed backup after a newer success of its type
EXPIRED: Final = "expire-after"  # older than its policy type's `expireAfter`
TTL: Final = "ttl"  # an ad-hoc backup's `ttl` passed
REASONS: Final = (RETAIN, SUPERSEDED, EXPIRED, TTL)


def record(redis: Any, namespace: str, reason: str) -> None:
    RetentionDeletions(redis).record(namespace, reason)


def counts(redis: Any) -> dict[tuple[str, str], int]:
    """(namespace, reason) → deletions so far."""
    return RetentionDeletions(redis).counts()
