"""Fixtures of the integration tier: the Davit services as real processes against the test stack."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import StackEnv

SERVICES = ("watcher", "backup", "resources", "retention", "restore")


class Services:
    """The Davit services as real processes against the test stack."""

    def __init__(self, stack: StackEnv, log_dir: Path) -> None:
        self.stack = stack
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.lease = f"davit-watcher-{uuid.uuid4().hex[:8]}"
        #: Tests keep their local locations in their own ``tmp_path``; ``log_dir`` is one of them, so its
        #: grandparent is pytest's base temporary directory, which holds them all. Tests of the roots
        #: themselves pass their own DAVIT_LOCAL_LOCATION_ROOTS.
        self.local_roots = str(log_dir.parent.parent)

    def start(self, service: str, name: str = "", **env: str) -> None:
        name = name or service
        log = (self.log_dir / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", f"davit_services.{service}"],
            env={
                **os.environ,
                "DAVIT_KUBECONFIG": self.stack.kubeconfig,
                "DAVIT_REDIS_URL": self.stack.redis_url,
                "DAVIT_IDENTITY": f"test-{name}",
                "DAVIT_LEASE_NAME": self.lease,
                "DAVIT_RESYNC_SECONDS": "2",
                "DAVIT_REQUEUE_GRACE_SECONDS": "1",
                "DAVIT_STALL_SECONDS": "5",
                "DAVIT_LOCAL_LOCATION_ROOTS": self.local_roots,
                "DAVIT_HEARTBEAT_FILE": str(self.heartbeat(name)),
                **env,
            },
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def start_all(self, **env: str) -> Services:
        """Every service, and a node agent per dev node (reading the dev kubelet's directories)."""
        for service in SERVICES:
            self.start(service, **env)
        for node in self.stack.env["DEV_NODES"].split(","):
            self.start("uploader", name=f"uploader-{node}", DAVIT_NODE_NAME=node,
                       DAVIT_KUBELET_ROOT=self.stack.env["KUBELET_ROOT"], **env)  # fmt: skip
        return self

    def heartbeat(self, name: str) -> Path:
        """The heartbeat file of service ``name`` (``davit.health``), one per process."""
        return self.log_dir / f"{name}.heartbeat"

    def kill(self, service: str) -> None:
        proc = self.procs.pop(service)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-4000:] for p in sorted(self.log_dir.glob("*.log")))


@pytest.fixture
def stack_services(stack: StackEnv, tmp_path: Path) -> Iterator[Callable[..., Services]]:
    """Starts the services (with extra settings) on first call; stops them after the test."""
    import redis

    redis.Redis.from_url(stack.redis_url).flushdb()
    running = Services(stack, tmp_path / "logs")
    running.log_dir.mkdir()

    def start(**env: str) -> Services:
        return running.start_all(**env)

    yield start
    running.stop_all()
    stack.kubectl("-n", "kube-system", "delete", "lease", running.lease, "--ignore-not-found")


@pytest.fixture
def services(stack_services: Callable[..., Services]) -> Services:
    return stack_services()
