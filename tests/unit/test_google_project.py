"""``googleConfig.projectID`` is used, not dropped: sent as GCS's ``x-goog-project-id`` with the requests
that address the bucket (the listings, the location check), seen here by a recording XML API endpoint on
the loopback; a value that cannot be a project is refused before any request is made."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from davit.api.types import LocationSpec
from davit.storage.base import ObjectStore
from davit.storage.factory import LocationConfigError, LocationPolicy, open_store, resolve_credentials
from davit.storage.retry import RetryPolicy

_EMPTY_LISTING = (
    b'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
    b"<Name>bucket</Name><Prefix></Prefix><KeyCount>0</KeyCount><MaxKeys>1</MaxKeys>"
    b"<IsTruncated>false</IsTruncated></ListBucketResult>"
)


class _Recorder(BaseHTTPRequestHandler):
    seen: list[tuple[str, str, str | None]] = []

    def _answer(self, body: bytes = b"") -> None:
        self.seen.append((self.command, self.path, self.headers.get("x-goog-project-id")))
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(200 if self.command != "DELETE" else 204)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer(_EMPTY_LISTING)

    def do_PUT(self) -> None:
        self._answer()

    def do_DELETE(self) -> None:
        self._answer()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[str]:
    _Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _location(endpoint: str, **google: str) -> LocationSpec:
    config = {"endpoint": endpoint, "accessKeyID": "GOOG1EXAMPLE", "secretAccessKey": "hmac-secret", **google}
    return LocationSpec.model_validate({"type": "google", "path": "bucket", "googleConfig": config})


def _open(spec: LocationSpec, secret: dict[str, str] | None = None) -> ObjectStore:
    resolved = resolve_credentials(spec, secret)
    return open_store(resolved, LocationPolicy(admin_namespace="kube-system"), RetryPolicy(total_seconds=5))


def test_the_project_goes_with_the_bucket_requests_and_not_with_the_object_requests(endpoint: str) -> None:
    store = _open(_location(endpoint, projectID="my-project-123"))
    store.check()
    list(store.list("backups/"))

    listings = [(m, p, h) for m, p, h in _Recorder.seen if m == "GET"]
    objects = [(m, p, h) for m, p, h in _Recorder.seen if m in ("PUT", "DELETE")]
    assert len(listings) == 2 and all(h == "my-project-123" for _, _, h in listings), _Recorder.seen
    assert objects and all(h is None for _, _, h in objects), _Recorder.seen


def test_the_project_from_the_secret_wins_and_none_sends_no_header(endpoint: str) -> None:
    store = _open(_location(endpoint, projectID="inline-project"), {"projectID": "from-secret"})
    list(store.list())
    store = _open(_location(endpoint))
    list(store.list())
    assert [h for _, _, h in _Recorder.seen] == ["from-secret", None]


@pytest.mark.parametrize("value", ["My Project", "proj\r\nx-evil: 1", "-leading", "a" * 64])
def test_a_project_that_cannot_be_one_is_refused_before_any_request(endpoint: str, value: str) -> None:
    with pytest.raises(ValueError):
        _location(endpoint, projectID=value)  # the CRD's rule
    with pytest.raises(LocationConfigError, match=r"googleConfig\.projectID"):
        _open(_location(endpoint), {"projectID": value})  # the Secret's value, checked the same way
    assert _Recorder.seen == []
