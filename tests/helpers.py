"""Small helpers shared by the test tiers."""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import msgpack

from davit.operations.messages import Message

T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.1) -> T:
    """Poll ``check`` until it returns something truthy and return that; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # a transient API error is "not yet"
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_error})")


def without_nulls(value: Any) -> Any:
    """``value`` without null map entries, at any depth (the API server prunes some nulls, keeps others)."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def queued_messages(redis: Any, queue: str, namespace: str | None = None) -> list[tuple[str, Message]]:
    """(task id, decoded envelope) of the messages waiting in a Celery queue on Redis; only those of
    operations in ``namespace`` when given (objects of earlier tests may still be around)."""
    result = []
    for raw in redis.lrange(queue, 0, -1):
        envelope = json.loads(raw)
        assert envelope["content-type"] == "application/x-msgpack", envelope["content-type"]
        body = base64.b64decode(envelope["body"])
        args, _kwargs, _embed = msgpack.unpackb(body, raw=False)
        message = Message.decode(args[0])
        if namespace is None or message.namespace == namespace:
            result.append((envelope["headers"]["id"], message))
    return result


@contextlib.contextmanager
def json_server(answer: Callable[[str], Any]) -> Iterator[str]:
    """An HTTP server on a free local port that answers every GET with ``answer(path)`` as JSON (as an
    API server answers, for the Kubernetes layer's own logic in unit tests); its URL."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            body = json.dumps(answer(self.path)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
