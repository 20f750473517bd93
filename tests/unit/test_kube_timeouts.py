"""Every Kubernetes API call is bounded by a client timeout (davit.kube.clients): a stalled API server
(the fault proxy in stall mode) ends the call with a timeout, which the workers retry."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3
from kubernetes import client

from davit.kube import clients, watching
from davit.operations.workers import is_retryable
from devstack.faults import Fault, FaultProxy, Mode
from tests.helpers import json_server, wait_for

#: What the API server behind the proxy answers to every GET.
EMPTY_LIST = {"kind": "NamespaceList", "apiVersion": "v1", "metadata": {}, "items": []}


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    with json_server(lambda path: EMPTY_LIST) as url, FaultProxy(url) as running:
        yield running


def bounded(url: str, timeout: tuple[float, float]) -> clients.BoundedApiClient:
    configuration = client.Configuration()
    configuration.host = url
    configuration.retries = False  # one attempt, so the test measures the timeout itself
    return clients.BoundedApiClient(configuration, timeout)


def test_every_request_gets_the_default_timeout_unless_it_sets_one(monkeypatch: pytest.MonkeyPatch) -> None:
    api = bounded("http://127.0.0.1:9", (3.0, 7.0))
    seen: list[Any] = []

    def request(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("_request_timeout"))
        raise RuntimeError("not sent")

    monkeypatch.setattr(api.rest_client, "GET", request)
    core: Any = client.CoreV1Api(api)
    with pytest.raises(RuntimeError):
        core.list_namespace()
    with pytest.raises(RuntimeError):
        core.list_namespace(_request_timeout=(1, 99))
    assert seen == [(3.0, 7.0), (1, 99)]


def test_the_default_is_set_for_every_client_the_library_builds(tmp_path: Any) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
        })
    )  # fmt: skip
    api = clients.api_client(str(kubeconfig))
    assert isinstance(api, clients.BoundedApiClient)
    assert api.request_timeout == clients.DEFAULT_REQUEST_TIMEOUT
    connect, read = clients.DEFAULT_REQUEST_TIMEOUT
    assert 0 < connect <= 30 and 0 < read <= 120


def test_a_stalled_api_call_ends_by_its_timeout_and_is_retryable(proxy: FaultProxy) -> None:
    api = client.CoreV1Api(bounded(proxy.url, (1.0, 0.5)))
    assert api.list_namespace().items == []
    proxy.set(Fault(Mode.STALL))
    started = time.monotonic()
    with pytest.raises(urllib3.exceptions.HTTPError) as timed_out:
        api.list_namespace()
    assert 0.5 <= time.monotonic() - started < 5
    assert is_retryable(timed_out.value)
    wait_for("the stalled call to be given up", lambda: proxy.stats_snapshot().stalls_abandoned >= 1, 5)
    proxy.clear()
    assert api.list_namespace().items == []


def test_a_watch_waits_longer_than_its_server_side_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    class Response:
        def close(self) -> None:
            pass

        def release_conn(self) -> None:
            pass

    def list_call(**kwargs: Any) -> Response:
        calls.append(kwargs)
        return Response()

    monkeypatch.setattr(watching, "iter_resp_lines", lambda response: iter(()))
    lw = watching.ListWatch("things", list_call, lambda items: None, lambda kind, obj: None)
    lw.watch_from("1", until=None, stop=threading.Event())
    (call,) = calls
    connect, read = call["_request_timeout"]
    assert read > call["timeout_seconds"] == watching.WATCH_TIMEOUT_SECONDS
    assert connect == watching.WATCH_CONNECT_TIMEOUT
