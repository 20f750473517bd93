"""The exporter process: follow the operations, BackupLocations and schedules into an in-memory cache,
and on each scrape turn the cache, the metrics recorded in Redis and the Davit queues' lengths into
metrics (``model``).

The gauges of what exists are computed at every scrape from the objects present, so a missed or replayed
event cannot skew them; until every kind has been listed once they are left out rather than reported as
zeros. The counters of what happened are read from Redis, where they were recorded once
(``davit.metrics``); the exporter also records any Final operation it sees that nobody counted
(``OutcomeCatchUp``), so a writer that died between its status write and its count loses nothing.
"""

from __future__ import annotations

import datetime
import platform
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

import davit
from davit import constants, metrics, timeutil
from davit.api.objects import RawObject
from davit.constants import Kind
from davit.kube import client
from davit.kube.operations import Operations
from davit.kube.watching import EventType, ListWatch
from davit.operations import scratch
from davit.retention import deletions
from davit.settings import Settings, parse_address
from davit_services.exporter import model

log = structlog.get_logger(__name__)

#: What the exporter follows: the operations, the locations whose availability it reports, the schedules.
WATCHED_KINDS: tuple[Kind, ...] = (
    *constants.OPERATION_KINDS, Kind.BACKUP_LOCATION, Kind.APPLICATION_BACKUP_SCHEDULE,
)  # fmt: skip
#: How often the catch-up counts the Final operations it found unrecorded.
CATCH_UP_INTERVAL_SECONDS = 15.0
#: A scrape must not hang on Redis: Prometheus' default scrape timeout is 10 s.
REDIS_TIMEOUT_SECONDS = 2.0


def _key(obj: RawObject) -> str:
    meta = obj.get("metadata") or {}
    return str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}")


class Cache:
    """The objects of each watched kind, slimmed to what the metrics read; thread-safe."""

    def __init__(self, kinds: Iterable[Kind] = WATCHED_KINDS) -> None:
        self._lock = threading.Lock()
        self._kinds = tuple(kinds)
        self._objects: dict[Kind, dict[str, RawObject]] = {kind: {} for kind in self._kinds}
        self._listed: set[Kind] = set()

    def replace(self, kind: Kind, items: list[RawObject]) -> None:
        """A full list: it replaces whatever was known, so deletions missed while away are forgotten."""
        objects = {_key(obj): model.slim(obj) for obj in items}
        with self._lock:
            self._objects[kind] = objects
            self._listed.add(kind)

    def apply(self, kind: Kind, event: EventType, obj: RawObject) -> None:
        with self._lock:
            if event == "DELETED":
                self._objects[kind].pop(_key(obj), None)
            else:
                self._objects[kind][_key(obj)] = model.slim(obj)

    def snapshot(self) -> model.Snapshot | None:
        """The objects as now known, or None until every kind has been listed once."""
        with self._lock:
            if self._listed != set(self._kinds):
                return None
            operations: dict[Kind, list[RawObject]] = {
                kind: list(objects.values())
                for kind, objects in self._objects.items()
                if kind in constants.OPERATION_KINDS
            }
            locations = list(self._objects.get(Kind.BACKUP_LOCATION, {}).values())
            schedules = list(self._objects.get(Kind.APPLICATION_BACKUP_SCHEDULE, {}).values())
        return model.Snapshot(operations=operations, locations=locations, schedules=schedules)


def queue_lengths(redis_client: Any) -> dict[str, int]:
    """LLEN of every Davit queue: the fixed ones always (0 when absent), node queues that exist."""
    lengths: dict[str, int] = {}
    for key, length in scratch.QueueState(redis_client).lengths().items():
        queue = model.queue_of(key)
        lengths[queue] = lengths.get(queue, 0) + length
    return lengths


class DavitCollector(Collector):
    """Builds every Davit metric afresh on each scrape from the cache and Redis."""

    def __init__(
        self,
        cache: Cache,
        redis_client: Any,
        clock: Callable[[], datetime.datetime] = timeutil.utcnow,
    ) -> None:
        self.cache = cache
        self.redis = redis_client
        self.clock = clock

    def collect(self) -> Iterable[Metric]:
        yield model.build_info_family(davit.__version__, platform.python_version())
        snapshot = self.cache.snapshot()
        if snapshot is not None:
            yield from model.families(snapshot, self.clock())
        try:
            recorded = metrics.decode(scratch.RecordedMetrics(self.redis).read())
        except scratch.RedisError as exc:
            # Absent rather than zero: a counter served as 0 would read as a reset.
            log.warning("metrics.recorded_unreadable", error=str(exc))
        else:
            yield from model.recorded_families(recorded)
        try:
            lengths = queue_lengths(self.redis)
        except scratch.RedisError as exc:
            # The other metrics are still worth a scrape; the queue series go absent, which
            # absent(davit_queue_length) can alert on.
            log.warning("metrics.queues_unreadable", error=str(exc))
        else:
            yield model.queue_family(lengths)
        try:
            yield model.deletions_family(deletions.counts(self.redis))
        except scratch.RedisError as exc:
            log.warning("metrics.deletions_unreadable", error=str(exc))


class OutcomeCatchUp:
    """Counts the Final operations the exporter sees that no writer counted (``davit.metrics``): the
    uid makes it idempotent with the writer's count. Only operations that finished within
    ``RecordedMetrics.CATCH_UP_SECONDS`` are looked at: the record of counted uids reaches further back,
    so an older one can never be counted twice."""

    def __init__(self, recorded: scratch.RecordedMetrics, clock: Callable[[], float] = time.time) -> None:
        self.recorded = recorded
        self.clock = clock
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[float, metrics.Increments]] = {}
        #: Per kind, the uids known counted: not looked up again until they leave a list.
        self._counted: dict[Kind, set[str]] = {}
        self._kinds: dict[str, Kind] = {}

    def offer(self, kind: Kind, obj: RawObject) -> None:
        uid = (obj.get("metadata") or {}).get("uid")
        if not isinstance(uid, str) or uid in self._counted.get(kind, ()) or uid in self._pending:
            return
        increments = metrics.outcome_increments(kind, obj)
        finished = metrics.finished_at(obj)
        if increments is None or finished is None:
            return
        if self.clock() - finished > scratch.RecordedMetrics.CATCH_UP_SECONDS:
            return
        with self._lock:
            self._pending[uid] = (finished, increments)
            self._kinds[uid] = kind

    def forget_all_but(self, kind: Kind, uids: set[str]) -> None:
        """After a full list of ``kind``: uids no longer present need no memory."""
        with self._lock:
            self._counted[kind] = self._counted.get(kind, set()) & uids

    def flush(self) -> int:
        """Count the pending operations nobody counted; how many this counted. Redis errors are the
        caller's (the pending ones stay for the next try)."""
        with self._lock:
            pending = dict(self._pending)
        if not pending:
            return 0
        uids = list(pending)
        already = self.recorded.counted(uids)
        counted_now = 0
        for uid in uids:
            finished, increments = pending[uid]
            if uid not in already and self.recorded.record_once(
                uid, finished, increments.adds, increments.maxima
            ):
                counted_now += 1
            with self._lock:
                self._pending.pop(uid, None)
                self._counted.setdefault(self._kinds.pop(uid), set()).add(uid)
        if counted_now:
            log.info("metrics.caught_up", operations=counted_now)
        return counted_now

    def run(self, stop: threading.Event, interval: float = CATCH_UP_INTERVAL_SECONDS) -> None:
        while not stop.wait(interval):
            try:
                self.flush()
            except scratch.RedisError as exc:
                log.warning("metrics.catch_up_failed", error=str(exc))


class Exporter:
    def __init__(self, settings: Settings, api: client.ApiClient, redis_client: Any = None) -> None:
        self.settings = settings
        self.ops = Operations(api)
        self.redis = redis_client or scratch.connect(
            settings.redis_url, timeout=REDIS_TIMEOUT_SECONDS, connect_timeout=REDIS_TIMEOUT_SECONDS
        )
        self.cache = Cache()
        self.catch_up = OutcomeCatchUp(scratch.RecordedMetrics(self.redis))
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.registry.register(DavitCollector(self.cache, self.redis))

    def list_watches(self) -> list[ListWatch]:
        watches = []
        for kind in WATCHED_KINDS:

            def on_list(items: list[RawObject], _kind: Kind = kind) -> None:
                self.cache.replace(_kind, items)
                if _kind in constants.OPERATION_KINDS:
                    self.catch_up.forget_all_but(_kind, {str(o["metadata"].get("uid")) for o in items})
                    for obj in items:
                        self.catch_up.offer(_kind, obj)
                log.debug("cache.listed", kind=_kind.value, count=len(items))

            def on_event(event: EventType, obj: RawObject, _kind: Kind = kind) -> None:
                self.cache.apply(_kind, event, obj)
                if _kind in constants.OPERATION_KINDS and event != "DELETED":
                    self.catch_up.offer(_kind, obj)

            watches.append(
                ListWatch(
                    name=constants.PLURALS[kind],
                    list_call=self.ops.list_call(kind),
                    on_list=on_list,
                    on_event=on_event,
                    # The cache is kept by the watch's events; a relist happens only on 410 or a lost
                    # watch, and there is nothing to reconcile in between.
                    resync_seconds=None,
                )
            )
        return watches

    def run(self, stop: threading.Event) -> None:
        host, port = parse_address(self.settings.metrics_address)
        server, _ = start_http_server(port, host, registry=self.registry)
        log.info("exporter.started", address=f"{host}:{port}")
        threads = [
            threading.Thread(target=lw.run, args=(stop,), name=f"watch-{lw.name}", daemon=True)
            for lw in self.list_watches()
        ]
        # At least as often as a relist: an operation ended while nobody counted it shows by then.
        interval = min(CATCH_UP_INTERVAL_SECONDS, self.settings.resync_seconds or CATCH_UP_INTERVAL_SECONDS)
        threads.append(
            threading.Thread(target=self.catch_up.run, args=(stop, interval), name="catch-up", daemon=True)
        )
        for thread in threads:
            thread.start()
        try:
            stop.wait()
        finally:
            # The watch threads are not joined: one may sit in a quiet watch for up to a minute, and the
            # cache has nothing to save. They are daemons and end with the process.
            server.shutdown()
            server.server_close()
            log.info("exporter.stopped")
