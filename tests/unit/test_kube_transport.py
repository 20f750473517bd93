"""davit.kube.transport: the requests about one object over libcurl, answered as the library's client
answers them (status, body, exceptions, Retry-After, timeouts), against a local HTTP server and the fault
proxy in front of it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException, NotFoundException

from davit.backup.selection import ApiResource
from davit.kube import clients, discovery, transport
from davit.kube.clients import send_json as _request
from davit.operations.workers import is_retryable
from devstack.faults import Fault, FaultProxy, Mode


class Recorder:
    """What the server saw: per request its method, path, headers, body and the client's port."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        #: path -> (status, body) answered instead of the echo.
        self.answers: dict[str, tuple[int, dict[str, Any]]] = {}


@pytest.fixture
def server() -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            recorder.seen.append({
                "method": self.command, "path": self.path, "headers": dict(self.headers.items()),
                "body": json.loads(body) if body else None, "port": self.client_address[1],
            })  # fmt: skip
            status, answer = recorder.answers.get(
                self.path, (201, {"echo": json.loads(body) if body else None})
            )
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_DELETE = answer

    httpd: Any = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", recorder
    finally:
        httpd.shutdown()
        httpd.server_close()


def bounded(url: str, timeout: tuple[float, float] = (2.0, 5.0), **kwargs: Any) -> clients.BoundedApiClient:
    configuration = client.Configuration()
    configuration.host = url
    configuration.api_key = {"authorization": "Bearer sekrit"}
    configuration.retries = False
    return clients.BoundedApiClient(configuration, timeout, **kwargs)


def test_each_object_request_goes_over_libcurl_with_its_method_body_credentials_and_one_connection(
    server: tuple[str, Recorder],
) -> None:
    url, recorder = server
    api = bounded(url)
    assert api.transport is not None
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "é"}, "data": {"v": "x" * 5000}}
    assert _request(api, "POST", "/api/v1/namespaces/a/configmaps", body) == {"echo": body}
    assert _request(api, "PATCH", "/api/v1/namespaces/a/configmaps/b", {"data": {"v": "y"}},
                    "application/merge-patch+json") == {"echo": {"data": {"v": "y"}}}  # fmt: skip
    assert _request(api, "GET", "/api/v1/namespaces/a/configmaps/b") == {"echo": None}
    assert _request(api, "DELETE", "/api/v1/namespaces/a/configmaps/b", {"kind": "DeleteOptions"}) == {
        "echo": {"kind": "DeleteOptions"}
    }
    assert [(s["method"], s["path"], s["body"] is not None) for s in recorder.seen] == [
        ("POST", "/api/v1/namespaces/a/configmaps", True),
        ("PATCH", "/api/v1/namespaces/a/configmaps/b", True),
        ("GET", "/api/v1/namespaces/a/configmaps/b", False),
        ("DELETE", "/api/v1/namespaces/a/configmaps/b", True),
    ]
    first = recorder.seen[0]["headers"]
    assert first["authorization"] == "Bearer sekrit"
    assert first["Content-Type"] == "application/json" and first["Accept"] == "application/json"
    assert first["User-Agent"] == api.user_agent
    assert "Expect" not in first  # no wait for a 100 Continue before a large body
    assert recorder.seen[1]["headers"]["Content-Type"] == "application/merge-patch+json"
    # Kept alive: every request one after the other on the same connection.
    assert len({s["port"] for s in recorder.seen}) == 1


def test_a_list_page_goes_over_libcurl_with_its_query(server: tuple[str, Recorder]) -> None:
    url, recorder = server
    recorder.answers["/api/v1/namespaces/a/configmaps?limit=500&continue=t%2Fk%3D"] = (
        200, {"items": [{"metadata": {"name": "x"}}], "metadata": {"continue": ""}},
    )  # fmt: skip
    api = bounded(url)
    resource = ApiResource("", "v1", "configmaps", "ConfigMap", True, frozenset({"list"}))
    page = discovery.list_page(api, resource, "a", None, 500, "t/k=")
    assert page.items == [{"metadata": {"name": "x"}, "apiVersion": "v1", "kind": "ConfigMap"}]
    assert page.continue_token is None
    assert [(s["method"], s["path"]) for s in recorder.seen] == [
        ("GET", "/api/v1/namespaces/a/configmaps?limit=500&continue=t%2Fk%3D")
    ]


def test_an_answer_outside_2xx_raises_the_librarys_exception_with_status_body_and_headers(
    server: tuple[str, Recorder],
) -> None:
    url, recorder = server
    recorder.answers["/api/v1/namespaces/a/configmaps/gone"] = (404, {"kind": "Status", "reason": "NotFound"})
    recorder.answers["/api/v1/namespaces/a/configmaps"] = (409, {"kind": "Status", "reason": "AlreadyExists"})
    api = bounded(url)
    with pytest.raises(NotFoundException) as missing:
        _request(api, "GET", "/api/v1/namespaces/a/configmaps/gone")
    assert missing.value.status == 404 and json.loads(missing.value.body)["reason"] == "NotFound"
    assert missing.value.headers["content-type"] == "application/json"  # looked up as the library does
    with pytest.raises(ApiException) as conflict:
        _request(api, "POST", "/api/v1/namespaces/a/configmaps", {"metadata": {"name": "x"}})
    assert conflict.value.status == 409 and conflict.value.reason == "Conflict"
    assert not is_retryable(missing.value) and is_retryable(conflict.value)


def test_a_throttled_request_waits_the_retry_after_it_was_given_then_goes_through(
    server: tuple[str, Recorder],
) -> None:
    url, recorder = server
    waits: list[float] = []
    with FaultProxy(url) as proxy:
        api = bounded(proxy.url, sleep=waits.append)
        proxy.set(Fault(Mode.THROTTLE, requests=2, status=503, retry_after=2))
        assert _request(api, "POST", "/api/v1/namespaces/a/configmaps", {"a": 1}) == {"echo": {"a": 1}}
    assert waits == [2.0, 2.0]
    assert [s["method"] for s in recorder.seen] == ["POST"]  # the throttled ones never reached the server


def test_a_stalled_answer_ends_by_the_read_timeout_and_a_refused_connection_fails_both_retryable(
    server: tuple[str, Recorder],
) -> None:
    url, _recorder = server
    with FaultProxy(url) as proxy:
        api = bounded(proxy.url, timeout=(1.0, 1.0))
        assert _request(api, "GET", "/api/v1/namespaces/a/configmaps/b") == {"echo": None}
        proxy.set(Fault(Mode.STALL))
        started = time.monotonic()
        with pytest.raises(transport.TransportTimeout) as timed_out:
            _request(api, "GET", "/api/v1/namespaces/a/configmaps/b")
        assert 1.0 <= time.monotonic() - started < 5
    assert is_retryable(timed_out.value)
    with pytest.raises(transport.TransportError) as refused:
        _request(bounded("http://127.0.0.1:9"), "GET", "/api/v1/namespaces/a/configmaps/b")
    assert is_retryable(refused.value)
    assert "sekrit" not in str(refused.value)


def test_libcurl_takes_a_proxy_only_as_the_librarys_client_does(
    server: tuple[str, Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, recorder = server
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    # libcurl alone would read ALL_PROXY; the library's client does not, and neither does the transport.
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("all_proxy", "http://127.0.0.1:9")
    api = bounded(url)
    assert api.transport is not None
    assert _request(api, "GET", "/api/v1/namespaces/a/configmaps/b") == {"echo": None}
    assert [s["method"] for s in recorder.seen] == ["GET"]
    # HTTPS_PROXY the library's configuration reads: then the library's client sends every request.
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    assert bounded(url).transport is None


def test_a_configuration_libcurl_would_not_honour_keeps_the_librarys_client(
    server: tuple[str, Recorder],
) -> None:
    url, recorder = server
    configuration = client.Configuration()
    configuration.host = url
    configuration.proxy = "http://127.0.0.1:9"
    assert not transport.supports(configuration)
    assert clients.BoundedApiClient(configuration).transport is None
    direct = client.Configuration()
    direct.host = url
    api = clients.BoundedApiClient(direct)
    api.transport = None  # the library's client, as with a proxy: the same answer
    assert _request(api, "POST", "/api/v1/namespaces/a/configmaps", {"a": 1}) == {"echo": {"a": 1}}
    assert recorder.seen[-1]["method"] == "POST"
