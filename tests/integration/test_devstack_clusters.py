"""A second cluster joins the running stack: cluster a keeps running, cluster b gets its own control
plane, kubelet and Redis, and both see the same stores."""

from __future__ import annotations

import json

import pytest

from devstack.stack import Stack
from tests.conftest import StackEnv

pytestmark = pytest.mark.integration


def test_second_cluster_joins_without_restarting_the_first(
    stack: StackEnv, request: pytest.FixtureRequest
) -> None:
    test_stack = Stack(stack.state_dir)
    before = {r.name: r.pid for r in test_stack.procs.all() if not r.name.startswith("b-")}
    stack.kubectl("create", "configmap", "survives-cluster-b", "-n", "default")
    try:
        second: StackEnv = request.getfixturevalue("second_cluster")

        after = {r.name: r.pid for r in test_stack.procs.all()}
        assert {name: after.get(name) for name in before} == before, "cluster a was restarted"
        state = test_stack.running()
        assert state is not None and [c.name for c in state.clusters] == ["a", "b"]
        for component in (
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "redis",
            "kubelet",
        ):
            assert f"b-{component}" in after, component
        assert stack.kubectl("get", "configmap", "survives-cluster-b", "-n", "default").returncode == 0

        assert second.kubeconfig != stack.kubeconfig and second.redis_url != stack.redis_url
        assert second.env["S3_ENDPOINT"] == stack.env["S3_ENDPOINT"]
        assert second.env["S3_BUCKET"] == stack.env["S3_BUCKET"]
        assert second.env["AZURE_STORAGE_CONNECTION_STRING"] == stack.env["AZURE_STORAGE_CONNECTION_STRING"]
        nodes = json.loads(second.kubectl("get", "nodes", "-o", "json").stdout)["items"]
        assert sorted(n["metadata"]["name"] for n in nodes) == sorted(second.env["DEV_NODES"].split(","))
        assert (
            second.kubectl("get", "configmap", "survives-cluster-b", "-n", "default", check=False).returncode
            != 0
        )
        assert second.kubectl("get", "crd", "backuplocations.davit.dev").returncode == 0

        # Asking again changes nothing.
        assert test_stack.up(clusters=2, with_services=False) == state
        assert {r.name: r.pid for r in test_stack.procs.all()} == after
    finally:
        stack.kubectl("delete", "configmap", "survives-cluster-b", "-n", "default", check=False)
