"""``make up`` on a stack where some processes died starts exactly those again, in dependency order, and
never tears the stack down (so never wipes etcd)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devstack import stack as stack_module
from devstack import stores
from devstack.cluster import ClusterConfig
from devstack.procs import _start_ticks
from devstack.stack import Stack, StackState

ALIVE_PID = os.getpid()


class FakeCluster:
    """Records which component restarts, instead of starting etcd and the API server."""

    COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
    started: list[str] = []

    def __init__(self, config: ClusterConfig, state_dir: Path, procs: Any) -> None:
        self.config = config
        self.procs = procs

    def restart(self, component: str) -> None:
        FakeCluster.started.append(f"{self.config.name}-{component}")

    def ready(self) -> bool:
        return True

    def proc_name(self, component: str) -> str:
        return f"{self.config.name}-{component}"


@pytest.fixture
def recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Stack, StackState, list[str]]:
    """A stack whose every recorded process is this test's own (alive); returns it and a start log."""
    stack = Stack(tmp_path / "stack")
    stack.dir.mkdir()
    stores.write_private(stack.redis_password_path(), "secret\n")
    config = ClusterConfig("a", 1, 2, 3, "t1", "t2", "t3")
    state = StackState(
        clusters=[config],
        stores=stores.StoresConfig(4, 5, 6),
        redis_ports={"a": 7},
        with_services=True,
        metrics_ports={"a": 8},
        service_settings={"DAVIT_STALL_SECONDS": "5"},
    )
    state.save(stack.state_file)
    stack.procs.pid_dir.mkdir(parents=True)
    for name in stack.expected_processes(state):
        _record(stack, name, ALIVE_PID, _start_ticks(ALIVE_PID) or 0)
    started: list[str] = []
    FakeCluster.started = started
    monkeypatch.setattr(stack_module, "Cluster", FakeCluster)
    monkeypatch.setattr(stores, "start_redis", lambda procs, name, *a: started.append(name))
    monkeypatch.setattr(stores, "start_s3", lambda procs, config: started.append("s3"))
    monkeypatch.setattr(stores, "start_azurite", lambda procs, config, d: started.append("azurite"))
    monkeypatch.setattr(
        Stack, "_start_kubelet", lambda self, cluster, kubeconfig: started.append(f"{cluster}-kubelet")
    )
    monkeypatch.setattr(Stack, "start_service", lambda self, state, name: started.append(name))
    monkeypatch.setattr(Stack, "apply_crds", lambda self, cluster, kubeconfig: None)
    monkeypatch.setattr(Stack, "write_env", lambda self, state: stack.env_path())

    def no_down(self: Stack) -> list[str]:
        raise AssertionError("up tore the stack down")

    monkeypatch.setattr(Stack, "down", no_down)
    return stack, state, started


def _record(stack: Stack, name: str, pid: int, ticks: int) -> None:
    (stack.procs.pid_dir / f"{name}.pid").write_text(json.dumps({"pid": pid, "start_ticks": ticks}))


def _dead_process() -> tuple[int, int]:
    """A pid that ran and has exited (reaped), with its start time."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    ticks = _start_ticks(proc.pid) or 1
    proc.wait()
    return proc.pid, ticks


def test_up_with_everything_alive_restarts_nothing(recorded: tuple[Stack, StackState, list[str]]) -> None:
    stack, _state, started = recorded
    stack.up(clusters=1, with_services=True)
    assert started == []
    assert stack.restarted == []


def test_up_restarts_exactly_the_dead_in_dependency_order(
    recorded: tuple[Stack, StackState, list[str]],
) -> None:
    stack, _state, started = recorded
    pid, ticks = _dead_process()
    dead = ["a-backup", "a-etcd", "a-uploader-davit-dev-node-2", "a-kube-apiserver"]
    for name in dead:
        _record(stack, name, pid, ticks)
    # A recycled pid (alive, but started at another time) is not ours: dead too.
    _record(stack, "a-kubelet", ALIVE_PID, (_start_ticks(ALIVE_PID) or 0) + 1)

    stack.up(clusters=1, with_services=True)

    order = ["a-etcd", "a-kube-apiserver", "a-kubelet", "a-backup", "a-uploader-davit-dev-node-2"]
    assert started == order
    assert stack.restarted == order
    assert StackState.load(stack.state_file).service_settings == {"DAVIT_STALL_SECONDS": "5"}


def test_other_service_settings_restart_the_services_only(
    recorded: tuple[Stack, StackState, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    stack, _state, started = recorded
    stopped: list[str] = []
    monkeypatch.setattr(stack.procs, "stop", lambda name, timeout=15.0: stopped.append(name))
    monkeypatch.setattr(Stack, "dead", lambda self, s: list(stopped))

    stack.up(clusters=1, with_services=True, service_settings={"DAVIT_STALL_SECONDS": "9"})

    services = stack.service_processes("a")
    assert stopped == services
    assert started == services
    assert StackState.load(stack.state_file).service_settings == {"DAVIT_STALL_SECONDS": "9"}
