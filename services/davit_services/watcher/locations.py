"""Keeping BackupLocations' ``status.phase`` true: checked when created or changed, and periodically.

A check lists and writes a probe in the store with the location's credentials; the store's own reason
(``InvalidAccessKeyId``, ``AccessDenied``, ``AuthenticationFailed``, ``NoSuchBucket``…) becomes the
status message, and a change of phase leaves an Event. Checks run on a small thread pool so that a slow
or unreachable store never holds up the watch loops.

A location with ``sync: true`` found Available is also sent to the retention service to be synced
(``davit.retention.location_sync``), so a sync follows every check: when the location is created or
changed, and
every ``location_check_seconds``. An Available location whose store holds a repository is also sent to be
garbage-collected (``davit.repo.gc``), once every ``gc_interval_seconds``.
"""

from __future__ import annotations

import datetime
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import structlog
from celery import Celery

from davit import constants, timeutil
from davit.api.objects import RawObject
from davit.constants import Kind, Queue, RetentionAction
from davit.kube import client, events
from davit.kube.client import ApiException
from davit.kube.operations import Operations
from davit.operations import queueing
from davit.operations.messages import Message
from davit.operations.runtime import open_location_store
from davit.repo import layout as repo_layout
from davit.settings import Settings
from davit.storage.base import ObjectStore, StorageError
from davit.storage.factory import LocationPolicy, retry_policy
from davit.storage.retry import CHECK_RETRY_SECONDS

log = structlog.get_logger(__name__)


def needs_check(obj: RawObject, now: datetime.datetime, interval_seconds: float) -> bool:
    """Pure: a location is checked when its spec changed since the last check, or the last check is old."""
    status = obj.get("status") or {}
    if status.get("observedGeneration") != obj["metadata"].get("generation"):
        return True
    last = timeutil.parse_time(status.get("lastValidated"))
    return last is None or (now - last).total_seconds() >= interval_seconds


def sync_message(obj: RawObject, now: datetime.datetime, interval_seconds: float) -> Message | None:
    """Pure: the message asking for a sync of ``obj``, or None when its ``sync`` is off.

    The part is the current interval's number: a message is known by its key (uid, stage, part), so the
    next interval's sync is a new message, while two checks within one interval send the same one.
    """
    if not (obj.get("location") or {}).get("sync"):
        return None
    meta = obj["metadata"]
    slot = int(now.timestamp() // max(interval_seconds, 1.0))
    return Message(
        Kind.BACKUP_LOCATION,
        meta["namespace"],
        meta["name"],
        meta["uid"],
        RetentionAction.SYNC.value,
        str(slot),
    )


def collect_message(obj: RawObject, now: datetime.datetime, interval_seconds: float) -> Message:
    """Pure: the message asking for a garbage collection of ``obj``'s repository, known (like a sync's)
    by the number of the current interval, so one goes out per interval."""
    meta = obj["metadata"]
    slot = int(now.timestamp() // max(interval_seconds, 1.0))
    return Message(
        Kind.BACKUP_LOCATION,
        meta["namespace"],
        meta["name"],
        meta["uid"],
        RetentionAction.COLLECT.value,
        str(slot),
    )


def has_repository(store: ObjectStore) -> bool:
    """Whether the store holds volume data (one listed key is enough to know)."""
    return next(iter(store.list(repo_layout.PREFIX)), None) is not None


class LocationChecker:
    def __init__(
        self,
        api: client.ApiClient,
        interval_seconds: float,
        is_leader: threading.Event,
        celery: Celery | None = None,
        gc_interval_seconds: float | None = None,
        policy: LocationPolicy | None = None,
    ) -> None:
        self.api = api
        #: What tenants' locations may point at; one found pointing elsewhere is Unavailable with the
        #: reason, and its store is never contacted.
        self.policy = policy or LocationPolicy.from_settings(Settings.from_env())
        # Sync messages go out through the given app; without one, through an app on the Redis the
        # environment's settings name.
        self.celery = celery or queueing.create_app(Settings.from_env().redis_url, "davit-watcher")
        self.gc_interval = gc_interval_seconds or Settings.from_env().gc_interval_seconds
        #: A check reports a store that does not answer within seconds (davit.storage.retry).
        store_retry = retry_policy(Settings.from_env())
        self.check_retry = replace(
            store_retry, total_seconds=min(store_retry.total_seconds, CHECK_RETRY_SECONDS)
        )
        #: The last collection message sent per location uid: checks come every ``interval_seconds``,
        #: a collection once per ``gc_interval``.
        self._collections: dict[str, str] = {}
        self.ops = Operations(api)
        self.interval = interval_seconds
        self.is_leader = is_leader
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="location-check")
        self._running: set[str] = set()
        self._lock = threading.Lock()

    def on_list(self, items: list[RawObject]) -> None:
        now = timeutil.utcnow()
        for obj in items:
            if needs_check(obj, now, self.interval):
                self.submit(obj)

    def on_event(self, event: str, obj: RawObject) -> None:
        if event in ("ADDED", "MODIFIED") and needs_check(obj, timeutil.utcnow(), self.interval):
            self.submit(obj)

    def submit(self, obj: RawObject) -> None:
        uid = obj["metadata"]["uid"]
        with self._lock:
            if uid in self._running:
                return
            self._running.add(uid)
        self.pool.submit(self._check_and_release, obj)

    def _check_and_release(self, obj: RawObject) -> None:
        try:
            self.check(obj)
        except Exception:
            log.exception("location.check_failed", name=obj["metadata"]["name"])
        finally:
            with self._lock:
                self._running.discard(obj["metadata"]["uid"])

    def _collection(self, obj: RawObject, store: ObjectStore) -> Message | None:
        """The collection message to send for ``obj``, if this interval's has not gone out yet and the
        store holds a repository."""
        message = collect_message(obj, timeutil.utcnow(), self.gc_interval)
        if self._collections.get(obj["metadata"]["uid"]) == message.part:
            return None
        try:
            return message if has_repository(store) else None
        except StorageError as exc:  # the check itself passed: this listing is retried next check
            log.warning("location.repository_unknown", name=obj["metadata"]["name"], error=str(exc))
            return None

    def check(self, obj: RawObject) -> None:
        meta = obj["metadata"]
        collect: Message | None = None
        try:
            store, _ = open_location_store(self.ops, obj, self.policy, self.check_retry)
            store.check()
            phase, message = "Available", f"{store.url} is reachable and writable"
            collect = self._collection(obj, store)
        except StorageError as exc:
            phase, message = "Unavailable", f"{exc.code}: {exc.message}"
        if not self.is_leader.is_set():
            return
        status = {
            "phase": phase,
            "message": message,
            "lastValidated": timeutil.format_time(timeutil.utcnow()),
            "observedGeneration": meta.get("generation"),
        }
        try:
            self.ops.patch_status(Kind.BACKUP_LOCATION, obj, status)
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        previous = (obj.get("status") or {}).get("phase")
        log.info("location.checked", namespace=meta["namespace"], name=meta["name"], phase=phase)
        sync = sync_message(obj, timeutil.utcnow(), self.interval) if phase == "Available" else None
        if sync is not None:
            queueing.send(self.celery, sync, Queue.RETENTION.value)
            log.info("message.sent", queue=Queue.RETENTION.value, key=sync.key, why="location sync")
        if collect is not None:
            queueing.send(self.celery, collect, Queue.RETENTION.value)
            self._collections[meta["uid"]] = collect.part
            log.info("message.sent", queue=Queue.RETENTION.value, key=collect.key, why="garbage collection")
        if previous != phase:
            events.record(
                self.api, obj, "Normal" if phase == "Available" else "Warning", phase, message,
                constants.COMPONENT_WATCHER,
            )  # fmt: skip
