"""Kindness to the API server: the client's rate limit (QPS and burst), the server's Retry-After honoured
(against a loopback HTTP server that answers 429), and list-and-watch loops that list in pages, start a
list over when its continue token expired, and resync from memory. tests/integration/test_api_load.py
counts the LISTs on the real API server."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from davit.kube import clients, watching

# --- the rate limit ----------------------------------------------------------------------------------


def test_a_burst_is_free_then_requests_wait_their_turn() -> None:
    now = [0.0]
    bucket = clients.TokenBucket(rate=10.0, burst=3, clock=lambda: now[0])
    assert [bucket.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.reserve() == pytest.approx(0.1)
    assert bucket.reserve() == pytest.approx(0.2)
    now[0] += 1.0  # a second later ten tokens came back, minus the two owed
    assert bucket.reserve() == 0.0


@pytest.mark.parametrize(
    ("status", "header", "wait"),
    [(429, "2", 2.0), (429, None, 1.0), (429, "soon", 1.0), (429, "3600", 30.0), (503, "4", 4.0),
     (503, None, None), (500, "4", None), (409, None, None)],
)  # fmt: skip
def test_retry_after(status: int, header: str | None, wait: float | None) -> None:
    exc = ApiException(status=status)
    exc.headers = {"Retry-After": header} if header is not None else {}
    assert clients.retry_after(exc) == wait


class Throttling(http.server.BaseHTTPRequestHandler):
    """Answers 429 (Retry-After: 0) to the first ``refusals`` requests, then an empty namespace list."""

    refusals = 0
    seen = 0

    def do_GET(self) -> None:
        type(self).seen += 1
        if type(self).seen <= type(self).refusals:
            self.send_response(429)
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps({"kind": "NamespaceList", "apiVersion": "v1", "metadata": {}, "items": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def throttling() -> Iterator[type[Throttling]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Throttling)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Throttling.seen = 0
    Throttling.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    yield Throttling
    server.shutdown()
    server.server_close()


def api(url: str) -> clients.BoundedApiClient:
    configuration = client.Configuration()
    configuration.host = url
    configuration.retries = False
    waits: list[float] = []
    bounded = clients.BoundedApiClient(configuration, sleep=waits.append)
    bounded.waits = waits
    return bounded


def test_a_429_is_tried_again_after_the_wait_the_server_asked_for(throttling: type[Throttling]) -> None:
    throttling.refusals = 2
    bounded = api(throttling.url)  # type: ignore[attr-defined]
    assert client.CoreV1Api(bounded).list_namespace().items == []
    assert throttling.seen == 3
    assert bounded.waits == [0.0, 0.0]


def test_a_server_that_keeps_refusing_fails_the_call(throttling: type[Throttling]) -> None:
    throttling.refusals = 100
    bounded = api(throttling.url)  # type: ignore[attr-defined]
    with pytest.raises(ApiException) as refused:
        client.CoreV1Api(bounded).list_namespace()
    assert refused.value.status == 429
    assert throttling.seen == clients.RETRY_AFTER_ATTEMPTS + 1


# --- list and watch ----------------------------------------------------------------------------------


class Pages:
    """A list call over ``count`` objects, ``limit`` per page; a continue token may be made to expire."""

    def __init__(self, count: int, expire_first_continue: bool = False) -> None:
        self.objects = [{"metadata": {"uid": f"u{i}", "name": f"b{i}"}} for i in range(count)]
        self.calls: list[dict[str, Any]] = []
        self.expire = expire_first_continue

    def __call__(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        limit = kwargs["limit"]
        start = int(kwargs.get("_continue") or 0)
        if start and self.expire:
            self.expire = False
            raise ApiException(status=410, reason="Expired")
        page = self.objects[start : start + limit]
        more = start + limit < len(self.objects)
        body = {
            "items": page,
            "metadata": {"resourceVersion": "42", **({"continue": str(start + limit)} if more else {})},
        }

        class Response:
            data = json.dumps(body).encode()

        return Response()


def test_a_list_comes_in_pages_with_a_limit() -> None:
    pages = Pages(1234)
    seen: list[list[Any]] = []
    lw = watching.ListWatch("things", pages, seen.append, lambda kind, obj: None, page_size=500)
    assert lw.list_once() == "42"
    assert [len(items) for items in seen] == [1234]
    assert [call["limit"] for call in pages.calls] == [500, 500, 500]
    assert [call.get("_continue") for call in pages.calls] == [None, "500", "1000"]
    assert lw.lists == 1


def test_an_expired_continue_token_starts_the_list_over() -> None:
    pages = Pages(1200, expire_first_continue=True)
    seen: list[list[Any]] = []
    lw = watching.ListWatch("things", pages, seen.append, lambda kind, obj: None, page_size=500)
    lw.list_once()
    assert [len(items) for items in seen] == [1200], "no object twice, none missing"
    assert [call.get("_continue") for call in pages.calls] == [None, "500", None, "500", "1000"]


def test_a_resync_comes_from_memory_with_the_watchs_changes() -> None:
    pages = Pages(3)
    seen: list[list[Any]] = []
    lw = watching.ListWatch("things", pages, seen.append, lambda kind, obj: None, resync_seconds=60)
    lw.list_once()
    lw._remember("ADDED", {"metadata": {"uid": "u9", "name": "b9"}})
    lw._remember("DELETED", {"metadata": {"uid": "u0", "name": "b0"}})
    lw.resync()
    assert len(pages.calls) == 1, "a resync asks the API server nothing"
    assert sorted(o["metadata"]["name"] for o in seen[-1]) == ["b1", "b2", "b9"]


def test_without_a_resync_nothing_is_kept() -> None:
    lw = watching.ListWatch("things", Pages(3), lambda items: None, lambda kind, obj: None)
    lw.list_once()
    lw._remember("ADDED", {"metadata": {"uid": "u9"}})
    assert lw._store == {}
