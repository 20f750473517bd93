"""What the benchmarks that run on the local stack share: the stack, up with every service, an API client
for the benchmark's own requests, and the wait for an operation to end."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client

from davit.api.objects import RawObject
from davit.kube import clients
from devstack.stack import Stack, StackState

#: Where the benchmarks create their ApplicationBackups and ApplicationRestores.
ADMIN = "kube-system"


@dataclass(frozen=True)
class BenchStack:
    stack: Stack
    state: StackState
    env: dict[str, str]
    api_client: client.ApiClient


def start(directory: Path) -> BenchStack:
    """The local stack in ``directory`` with every service (started if it is not up). The API client has
    no client-side rate limit: the benchmark's own requests (populating, the reference clients) go as fast
    as the API server lets them, and are not what is measured."""
    stack = Stack(directory)
    state = stack.up(clusters=1, with_services=True)
    env = stack.env(state)
    return BenchStack(stack, state, env, clients.api_client(env["KUBECONFIG"], qps=0))


def wait_final(
    custom: client.CustomObjectsApi, plural: str, name: str, started: float, timeout: float
) -> tuple[float, RawObject]:
    """Seconds from ``started`` until the operation ``name`` in ``ADMIN`` is Final, and its status."""
    deadline = started + timeout
    while time.perf_counter() < deadline:
        obj = custom.get_namespaced_custom_object("davit.dev", "v1alpha1", ADMIN, plural, name)
        status: RawObject = obj.get("status") or {}
        if status.get("stage") == "Final":
            return time.perf_counter() - started, status
        time.sleep(0.05)  # polling for the end state; the interval bounds the measurement's resolution
    raise SystemExit(f"{plural} {name} not Final after {timeout:.0f} s")
