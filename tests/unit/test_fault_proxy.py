"""The stack's fault proxy (devstack.faults) against a tiny local HTTP server: every mode, its limits by
requests and by time, filters, and control from another process's point of view."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from devstack.faults import Fault, FaultControl, FaultProxy, Mode, serve_control
from tests.helpers import wait_for

BODY = bytes(range(256)) * 40  # 10 KiB


class _Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: bytes, **headers: str) -> None:
        self.server.seen.append((self.command, self.path, dict(self.headers)))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer(200, BODY, ETag='"x"')

    def do_HEAD(self) -> None:
        self._answer(200, BODY)

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.bodies.append(body)
        self._answer(200, b"")


@pytest.fixture
def upstream() -> Iterator[Any]:
    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    server.daemon_threads = True
    server.seen, server.bodies = [], []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def proxy(upstream: Any, clock: Clock) -> Iterator[FaultProxy]:
    with FaultProxy(f"http://127.0.0.1:{upstream.server_address[1]}", "s3", clock=clock) as running:
        yield running


def request(
    proxy: FaultProxy, method: str = "GET", path: str = "/bucket/key", body: bytes | None = None,
    timeout: float = 5.0,
) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers={"Host": "store.example:9000"})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def test_pass_forwards_requests_and_answers_unchanged(proxy: FaultProxy, upstream: Any) -> None:
    status, headers, body = request(proxy)
    assert (status, body, headers["etag"]) == (200, BODY, '"x"')
    assert request(proxy, "PUT", "/bucket/new", body=b"payload")[0] == 200
    status, headers, body = request(proxy, "HEAD")
    assert (status, body, headers["content-length"]) == (200, b"", str(len(BODY)))
    assert upstream.bodies == [b"payload"]
    # The client's Host header reaches the store: S3's signature covers it.
    assert {seen[2]["Host"] for seen in upstream.seen} == {"store.example:9000"}
    assert proxy.stats_snapshot().forwarded == 3


def test_keep_alive_connections_carry_several_requests(proxy: FaultProxy, upstream: Any) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    for _ in range(3):
        conn.request("GET", "/bucket/key")
        assert conn.getresponse().read() == BODY
    conn.close()
    assert len(upstream.seen) == 3


@pytest.mark.parametrize("status", [500, 502])
def test_error_answers_without_forwarding(proxy: FaultProxy, upstream: Any, status: int) -> None:
    proxy.set(Fault(Mode.ERROR, status=status))
    got, _, body = request(proxy, "PUT", body=b"lost")
    assert got == status
    assert b"<Code>InternalError</Code>" in body
    assert upstream.seen == [] and upstream.bodies == []


def test_s3_throttle_is_slowdown_with_retry_after(proxy: FaultProxy, upstream: Any) -> None:
    proxy.set(Fault(Mode.THROTTLE, retry_after=3))
    status, headers, body = request(proxy)
    assert status == 503
    assert headers["retry-after"] == "3"
    assert b"<Code>SlowDown</Code>" in body
    assert upstream.seen == []


def test_azure_throttle_is_server_busy(upstream: Any) -> None:
    with FaultProxy(f"http://127.0.0.1:{upstream.server_address[1]}", "azure") as proxy:
        proxy.set(Mode.THROTTLE)
        status, headers, body = request(proxy)
    assert status == 503
    assert headers["x-ms-error-code"] == "ServerBusy"
    assert headers["retry-after"] == "1"  # a throttle always says when to come back
    assert b"ServerBusy" in body


def test_reset_closes_the_connection_without_an_answer(proxy: FaultProxy, upstream: Any) -> None:
    proxy.set(Mode.RESET)
    with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected)):
        request(proxy)
    assert upstream.seen == []
    assert proxy.stats_snapshot().faulted == {"reset": 1}


def test_drop_forwards_then_resets_instead_of_answering(proxy: FaultProxy, upstream: Any) -> None:
    proxy.set(Mode.DROP)
    with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected)):
        request(proxy, "PUT", body=b"stored, answer lost")
    assert upstream.bodies == [b"stored, answer lost"]
    assert proxy.stats_snapshot().faulted == {"drop": 1}


def test_truncate_forwards_then_sends_less_than_announced(proxy: FaultProxy, upstream: Any) -> None:
    proxy.set(Mode.TRUNCATE)
    with pytest.raises(http.client.IncompleteRead) as caught:
        request(proxy)
    assert caught.value.partial == BODY[: len(BODY) // 2]
    assert len(upstream.seen) == 1  # the store did the work: only its answer was cut


def test_truncate_of_an_empty_answer_announces_a_byte(proxy: FaultProxy, upstream: Any) -> None:
    proxy.set(Mode.TRUNCATE)
    with pytest.raises(http.client.IncompleteRead):
        request(proxy, "PUT", body=b"stored anyway")
    assert upstream.bodies == [b"stored anyway"]


def test_stall_never_answers_and_counts_the_client_giving_up(proxy: FaultProxy, upstream: Any) -> None:
    proxy.set(Mode.STALL)
    with pytest.raises(TimeoutError):
        request(proxy, timeout=0.3)
    assert upstream.seen == []

    def abandoned() -> bool:
        return proxy.stats_snapshot().stalls_abandoned == 1

    wait_for("the proxy to see the stalled client leave", abandoned, timeout=5)


def test_a_fault_for_a_number_of_requests_then_passes(proxy: FaultProxy, upstream: Any) -> None:
    proxy.set(Fault(Mode.ERROR, requests=2))
    assert [request(proxy)[0] for _ in range(3)] == [500, 500, 200]
    assert proxy.current.mode is Mode.PASS


def test_a_fault_for_a_time_then_passes(proxy: FaultProxy, clock: Clock) -> None:
    proxy.set(Fault(Mode.THROTTLE, seconds=30))
    assert request(proxy)[0] == 503
    clock.now += 29.9
    assert request(proxy)[0] == 503
    clock.now += 0.2
    assert request(proxy)[0] == 200
    assert proxy.stats_snapshot().faulted == {"throttle": 2}


def test_faults_run_one_after_the_other(proxy: FaultProxy, clock: Clock) -> None:
    proxy.run(Fault(Mode.ERROR, seconds=10), Fault(Mode.THROTTLE, requests=1), Fault(Mode.ERROR, seconds=5))
    assert request(proxy)[0] == 500
    clock.now += 10
    assert request(proxy)[0] == 503  # the throttle began when the first fault's time ran out
    assert request(proxy)[0] == 500  # ... and the last fault when the throttle's request was hit
    clock.now += 4.9
    assert request(proxy)[0] == 500
    clock.now += 0.2
    assert request(proxy)[0] == 200
    assert proxy.current.mode is Mode.PASS


def test_a_window_may_start_with_its_first_request(proxy: FaultProxy, clock: Clock) -> None:
    proxy.run(Fault(Mode.ERROR, seconds=10), Fault(Mode.THROTTLE, requests=1), on_first_request=True)
    clock.now += 60  # nobody asked yet: the window has not begun
    assert request(proxy)[0] == 500
    clock.now += 9.9
    assert request(proxy)[0] == 500
    clock.now += 0.2
    assert request(proxy)[0] == 503
    assert request(proxy)[0] == 200


def test_faults_left_unrequested_still_end_on_time(proxy: FaultProxy, clock: Clock) -> None:
    proxy.run(Fault(Mode.ERROR, seconds=10), Fault(Mode.THROTTLE, seconds=10))
    clock.now += 25  # nobody asked during either fault
    assert request(proxy)[0] == 200


def test_filters_hit_only_matching_requests(proxy: FaultProxy) -> None:
    proxy.set(Fault(Mode.ERROR, methods=("PUT",), path_contains="manifest"))
    assert request(proxy, "PUT", "/b/backups/x/manifest.json", body=b"m")[0] == 500
    assert request(proxy, "PUT", "/b/data/pack", body=b"p")[0] == 200
    assert request(proxy, "GET", "/b/backups/x/manifest.json")[0] == 200


def test_context_manager_clears_the_fault(proxy: FaultProxy) -> None:
    with proxy.fault(Mode.ERROR):
        assert request(proxy)[0] == 500
    assert request(proxy)[0] == 200


def test_an_unreachable_upstream_is_a_bad_gateway() -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    with FaultProxy(f"http://127.0.0.1:{port}") as proxy:
        assert request(proxy)[0] == 502
        assert proxy.stats_snapshot().upstream_errors == 1


def test_control_endpoint_switches_modes_and_reports(proxy: FaultProxy) -> None:
    server = serve_control(proxy)
    try:
        control = FaultControl(f"http://127.0.0.1:{server.server_address[1]}")
        control.set(Fault(Mode.THROTTLE, requests=1, retry_after=2))
        status, headers, _ = request(proxy)
        assert (status, headers["retry-after"]) == (503, "2")
        assert request(proxy)[0] == 200
        control.run(Fault(Mode.ERROR, requests=1), Fault(Mode.ERROR, status=502, requests=1))
        assert [request(proxy)[0] for _ in range(3)] == [500, 502, 200]
        stats = control.stats()
        assert stats["faulted"] == {"throttle": 1, "error": 2} and stats["forwarded"] == 2
        control.reset_stats()
        assert control.stats()["requests"] == 0
    finally:
        server.shutdown()
        server.server_close()
