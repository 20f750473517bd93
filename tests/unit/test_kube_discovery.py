"""Discovery in the Kubernetes layer (davit.kube.cluster.KubeCluster.discover), against a small HTTP
server that answers discovery as an API server does and counts what it is asked: a discovery is made
again unless the caller accepts one made since a moment, and this process made one since."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from davit.kube import clients
from davit.kube.cluster import KubeCluster
from davit.kube.operations import Operations
from tests.helpers import json_server

DOCUMENTS = {
    "/api/v1": {
        "resources": [{"name": "configmaps", "kind": "ConfigMap", "namespaced": True, "verbs": ["list"]}]
    },
    "/apis": {"groups": [{"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}]}]},
    "/apis/apps/v1": {"resources": [{"name": "deployments", "kind": "Deployment", "namespaced": True}]},
}


@pytest.fixture
def asked() -> list[str]:
    return []


@pytest.fixture
def cluster(asked: list[str]) -> Iterator[KubeCluster]:
    def answer(path: str) -> Any:
        asked.append(path)
        return DOCUMENTS[path.split("?", maxsplit=1)[0]]

    with json_server(answer) as url:
        configuration = client.Configuration()
        configuration.host = url
        yield KubeCluster(Operations(clients.BoundedApiClient(configuration)))


def test_a_discovery_is_reused_only_by_a_caller_that_accepts_one_made_since_it_was_made(
    cluster: KubeCluster, asked: list[str]
) -> None:
    before = time.time()
    found = cluster.discover()
    assert [r.plural for r in found] == ["configmaps", "deployments"]
    assert len(asked) == 3  # the core group, the group list, one group version

    assert cluster.discover(made_since=before) == found
    assert len(asked) == 3, "a discovery made since then was made again"

    assert cluster.discover(made_since=time.time() + 1) == found  # made before that moment: made again
    assert len(asked) == 6
    assert cluster.discover() == found  # without a moment: always made again
    assert len(asked) == 9


def test_a_reused_discovery_is_the_callers_own_copy(cluster: KubeCluster) -> None:
    before = time.time()
    cluster.discover().clear()
    assert len(cluster.discover(made_since=before)) == 2
