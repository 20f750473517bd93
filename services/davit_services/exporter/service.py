"""The exporter process: follow the operations and BackupLocations into an in-memory cache, and on each
scrape turn the cache (``model``) and the Davit queues' lengths into metrics.

Nothing is counted as events arrive: every scrape computes its numbers from the objects present, so a
missed or replayed event cannot skew a count, and a restarted exporter reports what the one before it did.
Until every kind has been listed once the CR-derived metrics are left out rather than reported as zeros.
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from davit import constants, timeutil
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

#: What the exporter follows: the operations, and the locations whose availability it reports.
WATCHED_KINDS: tuple[Kind, ...] = (*constants.OPERATION_KINDS, Kind.BACKUP_LOCATION)
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
        return model.Snapshot(operations=operations, locations=locations)


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
        snapshot = self.cache.snapshot()
        if snapshot is not None:
            yield from model.families(snapshot, self.clock())
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


class Exporter:
    def __init__(self, settings: Settings, api: client.ApiClient, redis_client: Any = None) -> None:
        self.settings = settings
        self.ops = Operations(api)
        self.redis = redis_client or scratch.connect(
            settings.redis_url, timeout=REDIS_TIMEOUT_SECONDS, connect_timeout=REDIS_TIMEOUT_SECONDS
        )
        self.cache = Cache()
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.registry.register(DavitCollector(self.cache, self.redis))

    def list_watches(self) -> list[ListWatch]:
        watches = []
        for kind in WATCHED_KINDS:

            def on_list(items: list[RawObject], _kind: Kind = kind) -> None:
                self.cache.replace(_kind, items)
                log.debug("cache.listed", kind=_kind.value, count=len(items))

            def on_event(event: EventType, obj: RawObject, _kind: Kind = kind) -> None:
                self.cache.apply(_kind, event, obj)

            watches.append(
                ListWatch(
                    name=constants.PLURALS[kind],
                    list_call=self.ops.list_call(kind),
                    on_list=on_list,
                    on_event=on_event,
                    resync_seconds=self.settings.resync_seconds,
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
