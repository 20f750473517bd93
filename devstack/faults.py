"""A loopback fault proxy for the stack's object stores (the S3 emulator and Azurite).

It forwards HTTP to the real server and can be switched, while it runs, into a fault mode that hits
every request (or those of some methods, or whose path contains a text) for a number of seconds or of
requests, then passes again:

* ``pass``: forward as it is;
* ``error``: answer 500 (or 502) without forwarding, with the store's error body;
* ``throttle``: answer 503 without forwarding: S3's ``SlowDown`` body, Azure's ``ServerBusy`` error code,
  and a ``Retry-After`` header;
* ``reset``: read the request, then reset the connection (RST, no answer);
* ``truncate``: forward, then send the response's headers with its real Content-Length (one byte more
  than the body when it has none) and only half of its body, and close the connection;
* ``stall``: read the request and never answer; the connection is held until the client gives up
  (counted in ``stats.stalls_abandoned``) or the proxy closes;
* ``drop``: forward the request, then reset the connection instead of answering: the store did the work
  (a write was stored) but its answer is lost.

In a test process (or the chaos runner)::

    with FaultProxy("http://127.0.0.1:9000", flavor="s3") as proxy:
        ...  # a BackupLocation whose endpoint is proxy.url
        proxy.set(Fault(Mode.THROTTLE, seconds=10, retry_after=2))

``proxy.run(fault1, fault2, ...)`` applies faults one after the other (each starts when the one before
has run out). From another process, ``python -m devstack.faults --upstream URL --flavor s3 --port P
--control-port C`` runs one, and ``FaultControl(f"http://127.0.0.1:{C}")`` switches it (POST /fault or
/faults with a list, GET /stats, POST /stats/reset).
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import http.client
import json
import select
import socket
import socketserver
import struct
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import urlsplit

Flavor = Literal["s3", "azure"]

#: Headers that belong to one connection, never forwarded (RFC 9110 §7.6.1), and Expect: the proxy
#: answers ``100-continue`` itself and sends the whole body on.
_HOP_BY_HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
        "transfer-encoding", "upgrade", "expect",
    }
)  # fmt: skip
#: How long a stalled connection is held at most, so that a forgotten stall cannot keep threads forever.
MAX_STALL_SECONDS = 600.0
#: Upstream connect and read bound: the proxy itself must never be what hangs.
UPSTREAM_TIMEOUT = 60.0


class Mode(enum.StrEnum):
    PASS = "pass"
    ERROR = "error"
    THROTTLE = "throttle"
    RESET = "reset"
    TRUNCATE = "truncate"
    STALL = "stall"
    DROP = "drop"


@dataclass(frozen=True)
class Fault:
    """What to do to the next requests. Without ``seconds`` or ``requests`` it lasts until changed."""

    mode: Mode
    #: For how long from ``FaultProxy.set`` on.
    seconds: float | None = None
    #: For how many (matching) requests.
    requests: int | None = None
    #: The status of ``error`` (500 or 502) and ``throttle`` (503).
    status: int | None = None
    #: The Retry-After header of ``throttle`` (and of ``error`` when set), in seconds.
    retry_after: float | None = None
    #: Only requests of these methods (e.g. ``("PUT",)``); empty: all.
    methods: tuple[str, ...] = ()
    #: Only requests whose path contains this; empty: all.
    path_contains: str = ""

    def matches(self, method: str, path: str) -> bool:
        if self.methods and method.upper() not in {m.upper() for m in self.methods}:
            return False
        return not self.path_contains or self.path_contains in path

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fault:
        data = dict(data)
        data["mode"] = Mode(data["mode"])
        data["methods"] = tuple(data.get("methods") or ())
        return cls(**data)


@dataclass
class Stats:
    """What the proxy has seen since it started (or since ``reset_stats``)."""

    requests: int = 0
    forwarded: int = 0
    #: Requests a fault was applied to, by mode.
    faulted: dict[str, int] = field(default_factory=dict)
    #: Stalled connections the client closed (its read timeout ended the wait).
    stalls_abandoned: int = 0
    #: Requests the upstream server could not be reached for (answered 502).
    upstream_errors: int = 0


class FaultProxy:
    """An HTTP proxy on 127.0.0.1 in front of ``upstream`` (``http://host:port``)."""

    def __init__(
        self,
        upstream: str,
        flavor: Flavor = "s3",
        *,
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be http://host:port, not {upstream!r}")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self.flavor = flavor
        self._clock = clock
        self._lock = threading.Lock()
        self._fault = Fault(Mode.PASS)
        self._deadline: float | None = None
        self._remaining: int | None = None
        #: The faults that follow the current one (``run``).
        self._queue: list[Fault] = []
        #: The current fault's seconds start with its first matching request (``run(on_first_request)``).
        self._waiting_for_request = False
        self.stats = Stats()
        self._closed = threading.Event()
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.proxy = self
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The endpoint to give a client instead of the upstream's."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="fault-proxy", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        self._closed.set()  # ends stalls
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- switching ---------------------------------------------------------------------------------

    def set(self, fault: Fault | Mode) -> None:
        """From now on apply ``fault`` (a bare mode: until changed)."""
        self.run(fault)

    def run(self, *faults: Fault | Mode, on_first_request: bool = False) -> None:
        """Apply ``faults`` one after the other: each starts when the one before has run out (its
        seconds passed or its requests were hit), the first now, or with ``on_first_request`` when the
        first request it matches arrives (so that a window of seconds is not spent before a slow client
        has sent anything); then ``pass``."""
        steps = [Fault(f) if isinstance(f, Mode) else f for f in faults] or [Fault(Mode.PASS)]
        with self._lock:
            self._queue = steps[1:]
            self._start(steps[0], None if on_first_request else self._clock())

    def _start(self, fault: Fault, now: float | None) -> None:
        """``fault`` in force; its time counted from ``now`` (None: from its first matching request)."""
        self._fault = fault
        self._deadline = None if fault.seconds is None or now is None else now + fault.seconds
        self._remaining = fault.requests
        self._waiting_for_request = fault.seconds is not None and now is None

    def clear(self) -> None:
        self.set(Fault(Mode.PASS))

    @contextlib.contextmanager
    def fault(self, fault: Fault | Mode) -> Iterator[FaultProxy]:
        """``fault`` for the duration of a ``with`` block (or less, if it has its own limit)."""
        self.set(fault)
        try:
            yield self
        finally:
            self.clear()

    @property
    def current(self) -> Fault:
        """The fault in force now (``pass`` once a limited one has run out)."""
        with self._lock:
            self._expire()
            return self._fault

    def reset_stats(self) -> None:
        with self._lock:
            self.stats = Stats()

    def stats_snapshot(self) -> Stats:
        with self._lock:
            return replace(self.stats, faulted=dict(self.stats.faulted))

    def _expire(self) -> None:
        """Move past every fault that has run out (the next one starts when its predecessor ended)."""
        while True:
            now = self._clock()
            if self._deadline is not None and now >= self._deadline:
                ended = self._deadline
            elif self._remaining is not None and self._remaining <= 0:
                ended = now
            else:
                return
            self._start(self._queue.pop(0) if self._queue else Fault(Mode.PASS), ended)

    def _take(self, method: str, path: str) -> Fault:
        """The fault for one request, counted against the fault's limit."""
        with self._lock:
            self.stats.requests += 1
            self._expire()
            fault = self._fault
            if fault.mode is Mode.PASS or not fault.matches(method, path):
                return Fault(Mode.PASS)
            if self._waiting_for_request and fault.seconds is not None:
                self._waiting_for_request = False
                self._deadline = self._clock() + fault.seconds
            if self._remaining is not None:
                self._remaining -= 1
            self.stats.faulted[fault.mode.value] = self.stats.faulted.get(fault.mode.value, 0) + 1
            return fault

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self.stats, name, getattr(self.stats, name) + 1)

    # --- the stores' error answers ------------------------------------------------------------------

    def error_response(self, fault: Fault) -> tuple[int, list[tuple[str, str]], bytes]:
        """Status, headers and body of the answer to ``fault`` (``error`` or ``throttle``), as the
        upstream store would give it."""
        if fault.mode is Mode.THROTTLE:
            status = fault.status or 503
            code = "SlowDown" if self.flavor == "s3" else "ServerBusy"
            text = (
                "Please reduce your request rate."
                if self.flavor == "s3"
                else "The server is currently unable to receive requests. Please retry your request."
            )
        else:
            status = fault.status or 500
            code = "InternalError"
            text = "We encountered an internal error. Please try again."
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{text}</Message><RequestId>fault-proxy</RequestId></Error>"
        ).encode()
        headers = [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))]
        if self.flavor == "azure":
            headers.append(("x-ms-error-code", code))
        retry_after = fault.retry_after if fault.retry_after is not None else None
        if retry_after is None and fault.mode is Mode.THROTTLE:
            retry_after = 1
        if retry_after is not None:
            headers.append(("Retry-After", f"{retry_after:g}"))
        return status, headers, body

    def stall(self, sock: socket.socket) -> None:
        """Hold ``sock`` without answering until the client closes it or the proxy closes."""
        deadline = time.monotonic() + MAX_STALL_SECONDS
        while not self._closed.is_set() and time.monotonic() < deadline:
            readable, _, _ = select.select([sock], [], [], 0.1)
            if readable:
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    self._count("stalls_abandoned")
                    return


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    proxy: FaultProxy


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    _upstream: http.client.HTTPConnection | None = None

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a proxy under a test must not write a line per request

    def handle(self) -> None:
        try:
            super().handle()
        finally:
            if self._upstream is not None:
                self._upstream.close()

    def _read_body(self) -> tuple[bytes, bool]:
        """The request's body, and whether it came chunked."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks), True
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return (self.rfile.read(length) if length else b""), False

    def _proxy(self) -> None:
        proxy = self.server.proxy
        body, chunked = self._read_body()
        fault = proxy._take(self.command, self.path)
        if fault.mode in (Mode.ERROR, Mode.THROTTLE):
            self._send(*proxy.error_response(fault))
            return
        if fault.mode is Mode.RESET:
            self._reset()
            return
        if fault.mode is Mode.STALL:
            self.close_connection = True
            proxy.stall(self.connection)
            return
        try:
            status, reason, headers, payload = self._forward(body, chunked)
        except (OSError, http.client.HTTPException):
            proxy._count("upstream_errors")
            self._send(502, [("Content-Length", "0")], b"", reason="Bad Gateway")
            return
        proxy._count("forwarded")
        if fault.mode is Mode.DROP:
            self._reset()
            return
        if fault.mode is Mode.TRUNCATE:
            announced = len(payload) if payload else 1
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
            headers.append(("Content-Length", str(announced)))
            self.close_connection = True
            self._send(status, headers, payload[: len(payload) // 2], reason=reason, with_length=False)
            return
        self._send(status, headers, payload, reason=reason, with_length=False)

    def _reset(self) -> None:
        # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def _forward(self, body: bytes, chunked: bool) -> tuple[int, str, list[tuple[str, str]], bytes]:
        proxy = self.server.proxy
        for attempt in (1, 2):
            if self._upstream is None:
                self._upstream = http.client.HTTPConnection(
                    proxy.upstream_host, proxy.upstream_port, timeout=UPSTREAM_TIMEOUT
                )
            conn = self._upstream
            try:
                # The client's Host header is kept: S3's signature covers it.
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for name, value in self.headers.items():
                    if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                        conn.putheader(name, value)
                # A chunked body was read whole: it goes on with its length.
                if body or chunked or "Content-Length" in self.headers:
                    conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body if body else None)
                response = conn.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                self._upstream = None
                if attempt == 2:
                    raise
                continue  # a kept-alive upstream connection the server closed: one fresh try
            headers = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
            if self.command != "HEAD":
                # The body was read whole (and de-chunked): its length is what the client gets.
                headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
                headers.append(("Content-Length", str(len(payload))))
            if response.will_close:
                conn.close()
                self._upstream = None
            return response.status, response.reason, headers, payload
        raise AssertionError("unreachable")

    def _send(
        self,
        status: int,
        headers: list[tuple[str, str]],
        body: bytes,
        *,
        reason: str | None = None,
        with_length: bool = True,
    ) -> None:
        reason = reason or self.responses.get(status, ("",))[0]
        lines = [f"HTTP/1.1 {status} {reason}"]
        lines += [f"{k}: {v}" for k, v in headers if not (with_length and k.lower() == "content-length")]
        if with_length:
            lines.append(f"Content-Length: {len(body)}")
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            self.wfile.write(head + (b"" if self.command == "HEAD" else body))
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _proxy


# --- control from another process ------------------------------------------------------------------


class _ControlHandler(BaseHTTPRequestHandler):
    server: _ControlServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, data: Any) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        proxy = self.server.proxy
        if self.path == "/stats":
            self._reply(200, asdict(proxy.stats_snapshot()))
        elif self.path == "/fault":
            self._reply(200, {**asdict(proxy.current), "mode": proxy.current.mode.value})
        else:
            self._reply(404, {"error": "GET /stats or /fault"})

    def do_POST(self) -> None:
        proxy = self.server.proxy
        data = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if self.path in ("/fault", "/faults"):
            try:
                faults = [Fault.from_json(item) for item in (data if isinstance(data, list) else [data])]
            except (KeyError, TypeError, ValueError) as exc:
                self._reply(400, {"error": str(exc)})
                return
            proxy.run(*faults)
            self._reply(200, {"mode": proxy.current.mode.value})
        elif self.path == "/stats/reset":
            proxy.reset_stats()
            self._reply(200, {})
        else:
            self._reply(404, {"error": "POST /fault, /faults or /stats/reset"})


class _ControlServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
    proxy: FaultProxy


class FaultControl:
    """Switches a proxy run by ``python -m devstack.faults`` in another process."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, data: Any = None) -> Any:
        body = None if data is None else json.dumps(data).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=body, method=method)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            return json.loads(response.read() or b"null")

    def set(self, fault: Fault | Mode) -> None:
        self.run(fault)

    def run(self, *faults: Fault | Mode) -> None:
        """Like ``FaultProxy.run``: the faults one after the other."""
        steps = [Fault(f) if isinstance(f, Mode) else f for f in faults]
        self._call("POST", "/faults", [{**asdict(f), "mode": f.mode.value} for f in steps])

    def clear(self) -> None:
        self.set(Fault(Mode.PASS))

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/stats")
        return result

    def reset_stats(self) -> None:
        self._call("POST", "/stats/reset", {})


def serve_control(proxy: FaultProxy, port: int = 0) -> _ControlServer:
    """A control endpoint for ``proxy`` on 127.0.0.1:``port``, served from a daemon thread."""
    server = _ControlServer(("127.0.0.1", port), _ControlHandler)
    server.proxy = proxy
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devstack.faults", description="a fault proxy for a store")
    parser.add_argument("--upstream", required=True, help="http://host:port of the real store")
    parser.add_argument("--flavor", choices=("s3", "azure"), default="s3")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--control-port", type=int, default=0)
    args = parser.parse_args(argv)
    proxy = FaultProxy(args.upstream, args.flavor, port=args.port).start()
    control = serve_control(proxy, args.control_port)
    # One line a runner can read to learn both ports.
    print(json.dumps({"url": proxy.url, "control": f"http://127.0.0.1:{control.server_address[1]}"}))
    sys.stdout.flush()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        control.shutdown()
        proxy.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
