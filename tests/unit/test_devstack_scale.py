"""``Stack.scale``: extra worker processes of one Davit service, named ``<cluster>-<service>-<n>``, each
under an identity of its own, kept in the state so that ``up`` starts a dead one again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from devstack import stores
from devstack.cluster import ClusterConfig
from devstack.procs import Recorded, _start_ticks
from devstack.stack import Stack, StackState, replica_of

ALIVE_PID = os.getpid()


@pytest.fixture
def stack(tmp_path: Path) -> tuple[Stack, StackState]:
    """A recorded one-cluster stack whose every process is this test's own (alive)."""
    stack = Stack(tmp_path / "stack")
    stack.dir.mkdir()
    stores.write_private(stack.redis_password_path(), "secret\n")
    state = StackState(
        clusters=[ClusterConfig("a", 1, 2, 3, "t1", "t2", "t3")],
        stores=stores.StoresConfig(4, 5, 6),
        redis_ports={"a": 7},
        with_services=True,
        metrics_ports={"a": 8},
    )
    state.save(stack.state_file)
    stack.procs.pid_dir.mkdir(parents=True)
    for name in stack.expected_processes(state):
        _record(stack, name, ALIVE_PID, _start_ticks(ALIVE_PID) or 0)
    return stack, state


def _record(stack: Stack, name: str, pid: int, ticks: int) -> None:
    (stack.procs.pid_dir / f"{name}.pid").write_text(json.dumps({"pid": pid, "start_ticks": ticks}))


def _record_dead(stack: Stack, name: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    ticks = _start_ticks(proc.pid) or 1
    proc.wait()
    _record(stack, name, proc.pid, ticks)


def test_replica_names() -> None:
    assert replica_of("resources") == ("resources", 1)
    assert replica_of("resources-2") == ("resources", 2)
    assert replica_of("uploader-davit-dev-node-2") == ("uploader-davit-dev-node-2", 1)


def test_scale_up_starts_the_missing_replicas_and_records_them(
    stack: tuple[Stack, StackState], monkeypatch: pytest.MonkeyPatch
) -> None:
    s, state = stack
    started: list[str] = []
    monkeypatch.setattr(Stack, "start_service", lambda self, st, name: started.append(name))

    assert s.scale(state, "resources", 3) == ["a-resources-2", "a-resources-3"]

    assert started == ["a-resources-2", "a-resources-3"]
    kept = StackState.load(s.state_file)
    assert kept.service_replicas == {"resources": 3}
    names = s.expected_processes(kept)
    assert names.index("a-resources") + 1 == names.index("a-resources-2")
    assert names.index("a-resources-3") + 1 == names.index("a-retention")
    # Not running yet (start_service was replaced): what `up` would start again.
    assert s.dead(kept) == ["a-resources-2", "a-resources-3"]


def test_a_dead_replica_is_what_up_starts_again(stack: tuple[Stack, StackState]) -> None:
    s, state = stack
    state.service_replicas = {"restore": 2}
    _record_dead(s, "a-restore-2")
    assert s.dead(state) == ["a-restore-2"]


def test_scale_down_stops_the_replicas_beyond(
    stack: tuple[Stack, StackState], monkeypatch: pytest.MonkeyPatch
) -> None:
    s, state = stack
    state.service_replicas = {"resources": 3}
    stopped: list[str] = []
    monkeypatch.setattr(s.procs, "stop", lambda name, timeout=15.0: stopped.append(name))

    assert s.scale(state, "resources", 1) == []

    assert stopped == ["a-resources-2", "a-resources-3"]
    assert StackState.load(s.state_file).service_replicas == {}


def test_scale_refuses_what_is_not_a_service(stack: tuple[Stack, StackState]) -> None:
    s, state = stack
    with pytest.raises(ValueError, match="no service"):
        s.scale(state, "uploader", 2)
    with pytest.raises(ValueError, match="at least one"):
        s.scale(state, "resources", 0)


def test_a_replica_runs_the_service_under_its_own_identity(
    stack: tuple[Stack, StackState], monkeypatch: pytest.MonkeyPatch
) -> None:
    s, state = stack
    calls: list[tuple[str, list[str], dict[str, str]]] = []

    def start(name: str, argv: Sequence[str], env: Mapping[str, str] | None = None, **_: Any) -> Recorded:
        calls.append((name, list(argv), dict(env or {})))
        return Recorded(name, ALIVE_PID, 0)

    monkeypatch.setattr(s.procs, "start", start)
    s.start_service(state, "a-resources")
    s.start_service(state, "a-resources-2")

    (first, first_argv, first_env), (second, second_argv, second_env) = calls
    assert first_argv[-1] == second_argv[-1] == "davit_services.resources"
    assert first_env["DAVIT_IDENTITY"] == "dev-a"
    assert second_env["DAVIT_IDENTITY"] == "dev-a-2"
    assert (first, second) == ("a-resources", "a-resources-2")
