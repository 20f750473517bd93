"""The requests Davit makes by the thousand — about single objects (create, read, patch, delete:
``davit.kube.cluster.KubeCluster``'s ``*_object``) and the reads of ``davit.kube.discovery`` (discovery,
each page of a list, an object found by name) — sent with libcurl (pycurl) instead of the Kubernetes
library's urllib3 client.

Why: a restore creates every object of a backup one request at a time, and on a small node its worker's
HTTP client competes with the API server for the same CPU. Against the local stack (2 cores, 8 threads
creating 2 KB ConfigMaps) the library's path cost 670-890 us of client CPU per create, urllib3 called
directly 550-790, libcurl 310-320, at a higher rate of creates. Watches and Davit's own custom resources
keep the library's client: those are few, or long-lived.

What stays the same as the library's client: the connection settings come from the same
``kubernetes.client.Configuration`` (server, CA, client certificate, ``verify_ssl``), the headers and the
credentials from the same ``ApiClient`` (its token refresh included), an answer outside 2xx raises the
library's ``ApiException`` with the API server's status, reason, body and headers (``Retry-After``
included), and a request is bounded the same way: a connect timeout and a longest silence while reading.
A failure on the way (refused, reset, timed out) raises ``ConnectionError`` or ``TimeoutError``, which the
workers try again like urllib3's. A configuration this module does not carry over (a proxy, a TLS server
name that differs from the host) keeps the library's client for everything (``supports``).
"""

from __future__ import annotations

import math
import queue
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pycurl
from kubernetes import client
from kubernetes.client.exceptions import (
    ApiException,
    ForbiddenException,
    NotFoundException,
    ServiceException,
    UnauthorizedException,
)
from urllib3 import HTTPHeaderDict

#: libcurl's code for a transfer that timed out (CURLE_OPERATION_TIMEDOUT).
_TIMED_OUT = 28


class TransportError(ConnectionError):
    """The request did not get an answer: refused, reset, a TLS failure (libcurl's code and message)."""


class TransportTimeout(TimeoutError):
    """No connection within the connect timeout, or the answer went silent for the read timeout."""


@dataclass
class Response:
    """An answer, with what ``ApiException(http_resp=...)`` reads of one."""

    status: int = 0
    reason: str = ""
    data: bytes = b""
    headers: HTTPHeaderDict = field(default_factory=HTTPHeaderDict)

    def getheaders(self) -> HTTPHeaderDict:
        return self.headers

    def getheader(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)

    def header_line(self, raw: bytes) -> None:
        """libcurl's HEADERFUNCTION: every line of every header block; the last block is the answer's."""
        line = raw.decode("iso-8859-1").rstrip("\r\n")
        if line.startswith("HTTP/"):
            # A new block (after a 100 Continue, say): only the final one describes the answer.
            self.headers = HTTPHeaderDict()
            parts = line.split(" ", 2)
            self.reason = parts[2] if len(parts) > 2 else ""
        elif ":" in line:
            name, _, value = line.partition(":")
            self.headers.add(name.strip(), value.strip())


def supports(configuration: client.Configuration) -> bool:
    """Whether every connection setting of ``configuration`` carries over to libcurl."""
    return not (
        configuration.proxy
        or getattr(configuration, "tls_server_name", None)
        or getattr(configuration, "assert_hostname", None)
    )


def raise_for_status(response: Response) -> None:
    """The library's exception for an answer outside 2xx (the same classes ``kubernetes.client.rest``
    raises)."""
    if 200 <= response.status <= 299:
        return
    by_status: dict[int, type[ApiException]] = {
        401: UnauthorizedException,
        403: ForbiddenException,
        404: NotFoundException,
    }
    if response.status in by_status:
        raise by_status[response.status](http_resp=response)
    if 500 <= response.status <= 599:
        raise ServiceException(http_resp=response)
    raise ApiException(http_resp=response)


class CurlTransport:
    """Requests to one API server over kept-alive connections: a pool of libcurl handles, each holding
    its connection, taken by one thread for one request (as urllib3 lends its connections), at most
    ``pool_size`` kept idle."""

    def __init__(self, configuration: client.Configuration, pool_size: int) -> None:
        self.host = str(configuration.host).rstrip("/")
        # No proxy from the environment (libcurl reads https_proxy, the library's client does not): the
        # same route to the API server whichever client sends.
        self._options: list[tuple[int, object]] = [(pycurl.NOSIGNAL, 1), (pycurl.PROXY, "")]
        # HTTP/1.1, as the library's client speaks: libcurl would take HTTP/2 over TLS, which measured no
        # cheaper per create here (300-380 us of CPU either way) and keeps more state per connection.
        self._options.append((pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1))
        if configuration.ssl_ca_cert:
            self._options.append((pycurl.CAINFO, configuration.ssl_ca_cert))
        if not configuration.verify_ssl:
            self._options += [(pycurl.SSL_VERIFYPEER, 0), (pycurl.SSL_VERIFYHOST, 0)]
        if configuration.cert_file:
            self._options.append((pycurl.SSLCERT, configuration.cert_file))
        if configuration.key_file:
            self._options.append((pycurl.SSLKEY, configuration.key_file))
        self._idle: queue.LifoQueue[pycurl.Curl] = queue.LifoQueue(maxsize=pool_size)

    @contextmanager
    def _handle(self) -> Iterator[pycurl.Curl]:
        try:
            handle = self._idle.get_nowait()
        except queue.Empty:
            handle = pycurl.Curl()
        try:
            yield handle
        except BaseException:
            handle.close()  # its connection may be half-way through an answer
            raise
        try:
            self._idle.put_nowait(handle)
        except queue.Full:
            handle.close()

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes | None,
        timeout: tuple[float, float],
    ) -> Response:
        """``method`` on ``path`` (from the server's root, query included); raises for no answer
        (``TransportError``, ``TransportTimeout``), never for an answer's status."""
        connect, read = timeout
        response = Response()
        chunks: list[bytes] = []
        with self._handle() as handle:
            # Options last only for the request that sets them: the connection stays (curl_easy_reset).
            handle.reset()
            for option, value in self._options:
                handle.setopt(option, value)
            handle.setopt(pycurl.URL, self.host + path)
            # An empty Expect: libcurl would otherwise wait for a "100 Continue" before a large body.
            lines = [f"{name}: {value}" for name, value in headers.items()] + ["Expect:"]
            handle.setopt(pycurl.HTTPHEADER, lines)
            handle.setopt(pycurl.CONNECTTIMEOUT_MS, max(1, int(connect * 1000)))
            # The longest silence while reading, as urllib3's read timeout: under 1 byte a second for
            # that many (whole) seconds.
            handle.setopt(pycurl.LOW_SPEED_LIMIT, 1)
            handle.setopt(pycurl.LOW_SPEED_TIME, max(1, math.ceil(read)))
            if body is not None:
                handle.setopt(pycurl.POSTFIELDS, body)
            if method != "POST" or body is None:
                handle.setopt(pycurl.CUSTOMREQUEST, method)
            handle.setopt(pycurl.WRITEFUNCTION, chunks.append)
            handle.setopt(pycurl.HEADERFUNCTION, response.header_line)
            try:
                handle.perform()
            except pycurl.error as exc:
                code, message = exc.args[0], exc.args[1] if len(exc.args) > 1 else ""
                if code == _TIMED_OUT:
                    raise TransportTimeout(f"{method} {path}: {message}") from exc
                raise TransportError(f"{method} {path}: libcurl error {code}: {message}") from exc
            response.status = int(handle.getinfo(pycurl.RESPONSE_CODE))
        response.data = b"".join(chunks)
        return response
