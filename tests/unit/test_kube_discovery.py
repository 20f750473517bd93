"""Discovery in the Kubernetes layer (davit.kube.cluster.KubeCluster.discover), against a small HTTP
server that answers discovery as an API server does and counts what it is asked: a discovery is made
again unless the caller accepts one made since a moment, and this process made one since."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kubernetes import client

from davit.kube import clients
from davit.kube.cluster import KubeCluster
from davit.kube.operations import Operations

DOCUMENTS = {
    "/api/v1": {
        "resources": [{"name": "configmaps", "kind": "ConfigMap", "namespaced": True, "verbs": ["list"]}]
    },
    "/apis": {"groups": [{"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}]}]},
    "/apis/apps/v1": {"resources": [{"name": "deployments", "kind": "Deployment", "namespaced": True}]},
}


class _Discovery(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    asked: list[str] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        _Discovery.asked.append(self.path)
        body = json.dumps(DOCUMENTS[self.path.split("?")[0]]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def cluster() -> Iterator[KubeCluster]:
    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), _Discovery)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    _Discovery.asked = []
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield KubeCluster(Operations(clients.BoundedApiClient(configuration)))
    finally:
        server.shutdown()
        server.server_close()


def test_a_discovery_is_reused_only_by_a_caller_that_accepts_one_made_since_it_was_made(
    cluster: KubeCluster,
) -> None:
    before = time.time()
    found = cluster.discover()
    assert [r.plural for r in found] == ["configmaps", "deployments"]
    assert len(_Discovery.asked) == 3  # the core group, the group list, one group version

    assert cluster.discover(made_since=before) == found
    assert len(_Discovery.asked) == 3, "a discovery made since then was made again"

    assert cluster.discover(made_since=time.time() + 1) == found  # made before that moment: made again
    assert len(_Discovery.asked) == 6
    assert cluster.discover() == found  # without a moment: always made again
    assert len(_Discovery.asked) == 9


def test_a_reused_discovery_is_the_callers_own_copy(cluster: KubeCluster) -> None:
    before = time.time()
    cluster.discover().clear()
    assert len(cluster.discover(made_since=before)) == 2
