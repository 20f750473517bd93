"""List-then-watch loops that survive dropped connections and expired resource versions.

A watch resumes from the last resourceVersion it saw; when the API server answers 410 Gone (the version
fell out of its window), the loop lists again. Every list hands the full set of objects to ``on_list`` so
the caller can reconcile level-triggered, then events go to ``on_event``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass
class ListWatch:
    """One resource to follow.

    ``list_call(**kwargs)`` must accept ``resource_version``, ``timeout_seconds``, ``watch`` and
    ``_preload_content`` like the generated client's list methods do (raw JSON is read, not typed models:
    decoding into typed models is far slower and drops fields the client does not know).
    """

    name: str
    list_call: Callable[..., Any]
    on_list: Callable[[list[RawObject]], None]
    on_event: Callable[[EventType, RawObject], None]
    #: Relist (and so reconcile everything) at least this often; None for never.
    resync_seconds: float | None = None
    list_kwargs: dict[str, Any] | None = None

    def list_once(self) -> str:
        kwargs = dict(self.list_kwargs or {})
        response = self.list_call(_preload_content=False, **kwargs)
        body = json.loads(response.data)
        self.on_list(body.get("items", []))
        return str(body["metadata"]["resourceVersion"])

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
        """Follow the resource until ``stop`` is set. Errors are logged and retried with backoff."""
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
                    resource_version = None  # periodic resync: list and reconcile everything again
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
