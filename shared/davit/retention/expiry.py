"""When an ad-hoc backup's ``ttl`` has passed (pure): the watcher's resync sends such backups to the
retention service, which checks again and deletes them."""

from __future__ import annotations

import datetime

from davit import timeutil
from davit.api.objects import RawObject
from davit.retention import rules


def ttl_expired(obj: RawObject, now: datetime.datetime) -> bool:
    """Whether a finished backup's ``ttl``, counted from when it finished, has passed. A ttl that cannot be
    computed with never expires anything: an unparsable one (the API server's pattern keeps one from being
    stored) or one longer than ``rules.MAX_DURATION`` (which would overflow the date)."""
    finished = timeutil.parse_time((obj.get("status") or {}).get("finishTimestamp"))
    try:
        expires = rules.ttl_expires_at((obj.get("spec") or {}).get("ttl") or None, finished)
    except ValueError:
        return False
    return expires is not None and expires <= now
