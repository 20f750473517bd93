"""Builds Kubernetes API clients from a kubeconfig file or, inside a pod, the service account."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import structlog
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

import davit
from davit import jsonbytes
from davit.kube import transport as transport_module

log = structlog.get_logger(__name__)

T = TypeVar("T")

_IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")

#: Every API request's (connect, read) timeouts, in seconds, unless the call passes its own
#: ``_request_timeout`` (a watch does: its read waits as long as the watch lasts). The read timeout is the
#: longest silence between two bytes of an answer, so a hung API server call ends: a worker's threads are
#: not stopped by Celery's time limits. A minute is far above any answer a healthy API server gives.
DEFAULT_REQUEST_TIMEOUT: tuple[float, float] = (10.0, 60.0)


#: Requests per second a process sends, and the burst it may send at once, as client-go's QPS and Burst
#: (whose defaults, 5 and 10, are for controllers far smaller than a restore of thousands of objects).
#: The API server's priority and fairness still has the last word: it answers 429 with Retry-After.
DEFAULT_QPS = 50.0
DEFAULT_BURST = 100
#: A 429 (or a 503 with Retry-After) is tried again this often, after the wait the server asked for,
#: capped: a request that keeps being refused fails to its caller, whose own retries take over.
RETRY_AFTER_ATTEMPTS = 3
RETRY_AFTER_CAP_SECONDS = 30.0
#: Connections a client keeps open to the API server (urllib3's pool; the library's default is 4). Every
#: thread of a process shares them, and a restore worker creates 16 objects at a time in each of its 4
#: tasks: a request that finds none free opens a connection of its own (a TLS handshake, on both sides)
#: and closes it after, with a warning logged. With 32 kept, a restore of 10,000 objects cost its worker
#: 6.6 CPU-s; with 128, 5.6-5.8.
CONNECTION_POOL_SIZE = 128


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; ``take`` waits for one."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.clock = clock
        self._tokens = float(self.burst)
        self._updated = clock()
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take a token; the seconds to wait before using it (0 when one was there)."""
        with self._lock:
            now = self.clock()
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            self._tokens -= 1
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def take(self) -> None:
        if self.rate <= 0:
            return
        wait = self.reserve()
        if wait > 0:
            time.sleep(wait)


def retry_after(exc: ApiException) -> float | None:
    """The seconds the API server asked to wait, for a 429 or a 503 that says; None for anything else."""
    if exc.status not in (429, 503):
        return None
    raw = (exc.headers or {}).get("Retry-After")
    if raw is None:
        return 1.0 if exc.status == 429 else None
    try:
        seconds = float(raw)
    except ValueError:
        return 1.0
    return min(max(seconds, 0.0), RETRY_AFTER_CAP_SECONDS)


class BoundedApiClient(client.ApiClient):  # type: ignore[misc]  # the library has no type information
    """The library's ApiClient with a default ``_request_timeout`` on every request (the library's own
    default is none, and a connection the server stopped answering would hold its thread for ever), a
    client-side rate limit (``TokenBucket``, QPS and burst), and the API server's Retry-After honoured."""

    def __init__(
        self,
        configuration: client.Configuration,
        request_timeout: tuple[float, float] = DEFAULT_REQUEST_TIMEOUT,
        qps: float = DEFAULT_QPS,
        burst: int = DEFAULT_BURST,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(configuration)
        self.request_timeout = request_timeout
        self.limiter = TokenBucket(qps, burst)
        self.sleep = sleep
        self.transport = (
            transport_module.CurlTransport(configuration, CONNECTION_POOL_SIZE)
            if transport_module.supports(configuration)
            else None
        )

    def request(  # type: ignore[no-untyped-def]
        self, method, url, query_params=None, headers=None, post_params=None, body=None,
        _preload_content=True, _request_timeout=None,
    ):  # fmt: skip
        timeout = self.request_timeout if _request_timeout is None else _request_timeout
        return self._bounded(method, lambda: super(BoundedApiClient, self).request(
            method, url, query_params=query_params, headers=headers, post_params=post_params,
            body=body, _preload_content=_preload_content, _request_timeout=timeout,
        ))  # fmt: skip

    def send_over_transport(
        self, method: str, path: str, body: Any, content_type: str, query: list[tuple[str, Any]] | None
    ) -> bytes:
        """``method`` on ``path`` over libcurl (``davit.kube.transport``), ``body`` encoded as JSON, under
        the same rate limit, Retry-After, timeouts and credentials as ``request``: the answer's bytes."""
        transport = self.transport
        assert transport is not None, "the configuration keeps the library's client"
        headers = {**self.default_headers, "Accept": "application/json", "Content-Type": content_type}
        encoded = None if body is None else jsonbytes.dumps_compact(body)
        target = f"{path}?{urlencode(query)}" if query else path

        def send() -> transport_module.Response:
            self.update_params_for_auth(headers, [], ["BearerToken"])  # a token may be refreshed
            answer = transport.request(method, target, headers, encoded, self.request_timeout)
            transport_module.raise_for_status(answer)
            return answer

        return self._bounded(method, send).data

    def _bounded(self, method: str, send: Callable[[], T]) -> T:
        """``send`` within the rate limit, tried again after the Retry-After a 429 (or 503) asks for."""
        for attempt in range(RETRY_AFTER_ATTEMPTS + 1):
            self.limiter.take()
            try:
                return send()
            except ApiException as exc:
                wait = retry_after(exc)
                if wait is None or attempt == RETRY_AFTER_ATTEMPTS:
                    raise
                log.info("api.retry_after", status=exc.status, wait=wait, method=method)
                self.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover


def send_json(
    api: client.ApiClient,
    method: str,
    path: str,
    body: Any = None,
    content_type: str = "application/json",
    query: list[tuple[str, Any]] | None = None,
) -> Any:
    """``method`` on ``path`` with ``body`` as JSON, the answer parsed: the requests Davit makes by the
    thousand (single objects, discovery, list pages). Over libcurl where ``api`` has a transport, else
    through the library's client (bounded in ``BoundedApiClient.request``)."""
    if isinstance(api, BoundedApiClient) and api.transport is not None:
        data = api.send_over_transport(method, path, body, content_type, query)
    else:
        data = api.call_api(
            path, method, query_params=query or [], body=body,
            header_params={"Accept": "application/json", "Content-Type": content_type},
            auth_settings=["BearerToken"], _preload_content=False, _return_http_data_only=True,
        ).data  # fmt: skip
    return jsonbytes.loads_api(data) if data else None


def api_client(
    kubeconfig: str | None = None,
    context: str | None = None,
    request_timeout: tuple[float, float] = DEFAULT_REQUEST_TIMEOUT,
    qps: float = DEFAULT_QPS,
    burst: int = DEFAULT_BURST,
    component: str = "",
) -> client.ApiClient:
    """A client for the cluster named by ``kubeconfig`` (or $KUBECONFIG), else the in-cluster account;
    every request bounded by ``request_timeout`` (connect, read) unless it sets its own.

    A fresh ``Configuration`` is built for every call, never the library's global default, so that two
    clusters can be used side by side in one process (cross-cluster tests, the dev kubelet).
    """
    path = kubeconfig or os.environ.get("KUBECONFIG")
    configuration = client.Configuration()
    if path:
        config.load_kube_config(config_file=path, context=context, client_configuration=configuration)
    elif _IN_CLUSTER_TOKEN.exists():
        config.load_incluster_config(client_configuration=configuration)
    else:
        raise RuntimeError(
            "no kubeconfig found (--kubeconfig, $KUBECONFIG or ~/.kube/config) and not running in a pod"
        )
    configuration.connection_pool_maxsize = CONNECTION_POOL_SIZE
    api = BoundedApiClient(configuration, request_timeout, qps, burst)
    # The API server's audit log and its own metrics tell Davit's components apart by this.
    api.user_agent = f"davit-{component or 'client'}/{davit.__version__}"
    return api
