"""The exec probes of the watcher, the workers and the node agent (``python -m davit.health``) against
the real services: each beats its heartbeat file while it runs; a frozen worker stops beating and its
probe fails; a stopped one removes the file."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import StackEnv
from tests.helpers import wait_for
from tests.integration.conftest import Services

pytestmark = pytest.mark.integration


def probe(path: Path, max_age: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "davit.health", str(path), "--max-age", str(max_age)],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip


def test_every_service_beats_and_a_frozen_worker_fails_its_probe(
    stack: StackEnv, stack_services: Callable[..., Services]
) -> None:
    services = stack_services()
    node = stack.env["DEV_NODES"].split(",")[0]
    names = ["watcher", "backup", "resources", "retention", "restore", f"uploader-{node}"]
    for name in names:
        path = services.heartbeat(name)
        wait_for(f"{name} beating", lambda p=path: probe(p, 10).returncode == 0, timeout=60)  # type: ignore[misc]

    def failing(path: Path, max_age: float) -> subprocess.CompletedProcess[str] | None:
        result = probe(path, max_age)
        return result if result.returncode else None

    frozen = services.procs["backup"]
    frozen.send_signal(signal.SIGSTOP)
    try:
        backup = services.heartbeat("backup")
        failed = wait_for("the frozen worker's probe to fail", lambda: failing(backup, 8), timeout=30)
        assert "last heartbeat" in failed.stderr
        # The others still beat.
        assert probe(services.heartbeat("restore"), 8).returncode == 0
    finally:
        frozen.send_signal(signal.SIGCONT)
    wait_for("the thawed worker beating again",
             lambda: probe(services.heartbeat("backup"), 8).returncode == 0, timeout=30)  # fmt: skip

    services.procs["restore"].terminate()
    services.procs["restore"].wait(timeout=30)
    result = probe(services.heartbeat("restore"), 3600)
    assert result.returncode == 1 and "no heartbeat" in result.stderr, "a stopped worker leaves no heartbeat"
