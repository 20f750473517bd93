"""Fixtures shared by every tier.

Integration tests run against the real local stack (SPEC §8): the session starts one (infrastructure
only: control plane, dev kubelet, Redis, S3 emulator, Azurite) in ``.dev-test/`` and stops it at the end.
Tests start the Davit services they exercise themselves, so they can kill and restart them. With
``CI=true`` a missing component fails the run; elsewhere its tests are skipped with the reason.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class StackEnv:
    """What a test needs to reach the stack."""

    env: dict[str, str]
    state_dir: Path

    @property
    def kubeconfig(self) -> str:
        return self.env["KUBECONFIG"]

    @property
    def kubectl_path(self) -> str:
        return self.env["KUBECTL"]

    @property
    def redis_url(self) -> str:
        return self.env["REDIS_URL"]

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl against the stack."""
        result = subprocess.run(
            [self.kubectl_path, f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result


@pytest.fixture(scope="session")
def stack() -> Iterator[StackEnv]:
    from devstack.stack import Stack

    state_dir = Path(os.environ.get("DAVIT_TEST_STACK_DIR", REPO_ROOT / ".dev-test"))
    # Under pytest-xdist each worker has a stack of its own: tests flush Redis, restart services and
    # kill processes, which must not reach another worker's tests.
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        state_dir = state_dir.with_name(f"{state_dir.name}-{worker}")
    test_stack = Stack(state_dir)
    # A kept stack may hold the second cluster of an earlier session: keep it rather than restart all.
    running = test_stack.running()
    clusters = len(running.clusters) if running is not None and not running.with_services else 1
    try:
        state = test_stack.up(clusters=clusters, with_services=False)
    except FileNotFoundError as exc:
        if IN_CI:
            raise
        pytest.skip(f"local stack component missing: {exc}")
    try:
        yield StackEnv(env=test_stack.env(state), state_dir=test_stack.dir)
    finally:
        if os.environ.get("DAVIT_KEEP_STACK") != "1":
            test_stack.down()


#: The variables that differ per cluster; the second cluster's carry the suffix ``_B`` in the stack's env.
CLUSTER_VARIABLES = ("KUBECONFIG", "REDIS_URL", "KUBELET_ROOT", "DEV_NODES")


@pytest.fixture(scope="session")
def second_cluster(stack: StackEnv) -> StackEnv:
    """Cluster "b" of the session's stack, on the same stores as cluster "a", started on first use
    without restarting "a". Its StackEnv looks like the first one's (``KUBECONFIG``, ``REDIS_URL``… name
    cluster b), so fixtures and helpers work on either; the session's ``down`` stops it with the rest."""
    from devstack.stack import Stack

    test_stack = Stack(stack.state_dir)
    state = test_stack.up(clusters=2, with_services=False)
    env = test_stack.env(state)
    for variable in CLUSTER_VARIABLES:
        env[variable] = env[f"{variable}_B"]
    return StackEnv(env=env, state_dir=test_stack.dir)


@pytest.fixture
def namespace(stack: StackEnv) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (without waiting)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    stack.kubectl("create", "namespace", name)
    yield name
    stack.kubectl("delete", "namespace", name, "--wait=false", check=False)
