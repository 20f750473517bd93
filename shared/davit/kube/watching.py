"""List-then-watch loops that survive dropped connections and expired resource versions, gently.

A loop lists once, in pages (``limit``, then ``continue``), and then watches from the list's
resourceVersion, renewing the watch from the last version it saw (bookmarks keep that fresh). It lists
again only when it must: the API server answered 410 Gone (the version fell out of its window), or a
watch could not be resumed. The periodic resync that reconciles everything (``resync_seconds``) is served
from the objects the loop keeps in memory, as client-go's informers do: with thousands of backups a
relist every minute would be the largest load Davit puts on the API server.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from davit import errors
from davit.api.objects import RawObject

log = structlog.get_logger(__name__)

EventType = Literal["ADDED", "MODIFIED", "DELETED"]

#: Longest a single watch request stays open before it is renewed: below typical proxy idle limits, and
#: the longest a stopped loop may take to notice while no events arrive.
WATCH_TIMEOUT_SECONDS = 60
#: A watch's client-side timeouts: connect, and the read margin beyond the server-side timeout.
WATCH_CONNECT_TIMEOUT = 10.0
WATCH_READ_MARGIN = 30.0


class Gone(errors.Transient):
    """The resourceVersion a watch asked for is no longer available: list again."""


#: Objects per page of a list: the API server's own default page size for clients that page.
LIST_PAGE_SIZE = 500


def object_key(obj: RawObject) -> str:
    meta = obj.get("metadata") or {}
    return str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}")


@dataclass
class ListWatch:
    """One resource to follow.

    ``list_call(**kwargs)`` must accept ``resource_version``, ``timeout_seconds``, ``watch``, ``limit``,
    ``_continue`` and ``_preload_content`` like the generated client's list methods do (raw JSON is read,
    not typed models: decoding into typed models is far slower and drops fields the client does not know).
    """

    name: str
    list_call: Callable[..., Any]
    on_list: Callable[[list[RawObject]], None]
    on_event: Callable[[EventType, RawObject], None]
    #: Hand every object to ``on_list`` again at least this often, from memory (no request); None for
    #: never, and then no objects are kept.
    resync_seconds: float | None = None
    list_kwargs: dict[str, Any] | None = None
    page_size: int = LIST_PAGE_SIZE
    #: Lists made so far (each of one or more pages); read by tests and logged.
    lists: int = field(default=0, init=False)
    _store: dict[str, RawObject] = field(default_factory=dict, init=False, repr=False)

    def list_pages(self) -> tuple[list[RawObject], str]:
        """Every object, page by page; and the resourceVersion to watch from. A continue token that
        expired (410) starts the list over: pages from two snapshots must not be mixed."""
        kwargs = dict(self.list_kwargs or {})
        while True:
            items: list[RawObject] = []
            token: str | None = None
            try:
                while True:
                    paging: dict[str, Any] = {"limit": self.page_size}
                    if token:
                        paging["_continue"] = token
                    response = self.list_call(_preload_content=False, **kwargs, **paging)
                    body = json.loads(response.data)
                    items.extend(body.get("items") or [])
                    metadata = body.get("metadata") or {}
                    token = metadata.get("continue") or None
                    if not token:
                        return items, str(metadata["resourceVersion"])
            except ApiException as exc:
                if exc.status == 410 and token:
                    log.info("list.restarted", resource=self.name, reason="continue token expired")
                    continue
                raise

    def list_once(self) -> str:
        items, resource_version = self.list_pages()
        self.lists += 1
        if self.resync_seconds is not None:
            self._store = {object_key(obj): obj for obj in items}
        log.debug("list.done", resource=self.name, count=len(items), lists=self.lists)
        self.on_list(items)
        return resource_version

    def _remember(self, event: EventType, obj: RawObject) -> None:
        if self.resync_seconds is None:
            return
        if event == "DELETED":
            self._store.pop(object_key(obj), None)
        else:
            self._store[object_key(obj)] = obj

    def resync(self) -> None:
        """Everything known, to ``on_list`` again, without asking the API server."""
        self.on_list(list(self._store.values()))

    def watch_from(self, resource_version: str, until: float | None, stop: threading.Event) -> str:
        """Watch from ``resource_version`` until ``until`` (monotonic) or ``stop``; returns the last
        version seen."""
        timeout = WATCH_TIMEOUT_SECONDS
        if until is not None:
            timeout = max(1, min(timeout, int(until - time.monotonic()) + 1))
        kwargs = dict(self.list_kwargs or {})
        # The watch stream is read here rather than through kubernetes.watch.Watch, which wants typed
        # models and mishandles ERROR events when asked for raw JSON.
        response = self.list_call(
            watch=True,
            resource_version=resource_version,
            timeout_seconds=timeout,
            allow_watch_bookmarks=True,
            _preload_content=False,
            # The server ends the watch after ``timeout``; the client waits a little longer, so a watch
            # whose connection hangs ends too (and the default read timeout never cuts a quiet one).
            _request_timeout=(WATCH_CONNECT_TIMEOUT, timeout + WATCH_READ_MARGIN),
            **kwargs,
        )
        try:
            for line in iter_resp_lines(response):
                if stop.is_set():
                    break
                if not line:
                    continue
                event = json.loads(line)
                kind, obj = event["type"], event["object"]
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise Gone(obj.get("message", "resource version too old"))
                    raise RuntimeError(f"watch error {obj.get('code')}: {obj.get('message')}")
                resource_version = obj.get("metadata", {}).get("resourceVersion", resource_version)
                if kind == "BOOKMARK":
                    continue
                self._remember(kind, obj)
                self.on_event(kind, obj)
                if until is not None and time.monotonic() >= until:
                    break
        except ApiException as exc:
            if exc.status == 410:
                raise Gone(str(exc.reason)) from exc
            raise
        finally:
            response.close()
            response.release_conn()
        return resource_version

    def run(self, stop: threading.Event) -> None:
        """Follow the resource until ``stop`` is set. Errors are logged and retried with backoff; the
        watch resumes from the last version seen, and only a 410 (or a failed list) lists again."""
        resource_version: str | None = None
        next_resync: float | None = None
        backoff = 0.5
        while not stop.is_set():
            try:
                if resource_version is None:
                    resource_version = self.list_once()
                    if self.resync_seconds is not None:
                        next_resync = time.monotonic() + self.resync_seconds
                    if stop.is_set():
                        break
                resource_version = self.watch_from(resource_version, next_resync, stop)
                if next_resync is not None and time.monotonic() >= next_resync:
                    self.resync()  # from memory: the watch carries on from where it was
                    next_resync = time.monotonic() + (self.resync_seconds or 0)
                backoff = 0.5
            except Gone as exc:
                log.info("watch.relist", resource=self.name, reason=str(exc))
                resource_version = None
            except Exception as exc:
                log.warning("watch.error", resource=self.name, error=str(exc), retry_in=backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
                # A failure during a list leaves resource_version None, so the next round lists again;
                # a failure during a watch resumes from the last version seen.
