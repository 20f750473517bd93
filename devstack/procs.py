"""Starting and stopping the stack's processes by recorded process id.

Each process gets a pid file holding its pid and its start time as the kernel reports it, so that ``down``
never signals an unrelated process that happens to have been given a recycled pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


def _start_ticks(pid: int) -> int | None:
    """The process' start time in clock ticks since boot (field 22 of /proc/<pid>/stat), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after its closing one.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie has finished; it only waits to be reaped
        return None
    return int(fields[19])


@dataclass(frozen=True)
class Recorded:
    name: str
    pid: int
    start_ticks: int

    def alive(self) -> bool:
        return _start_ticks(self.pid) == self.start_ticks


class ProcessTable:
    """The pid files of one stack, in ``<state>/pids/``."""

    def __init__(self, state_dir: Path) -> None:
        self.pid_dir = state_dir / "pids"
        self.log_dir = state_dir / "logs"

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Recorded:
        """Start ``argv`` detached (own session, output to ``logs/<name>.log``) and record it."""
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
        log.close()
        ticks = _start_ticks(proc.pid)
        if ticks is None:
            raise RuntimeError(f"{name} exited at once; see {self.log_dir / f'{name}.log'}")
        record = Recorded(name, proc.pid, ticks)
        (self.pid_dir / f"{name}.pid").write_text(json.dumps({"pid": proc.pid, "start_ticks": ticks}))
        return record

    def get(self, name: str) -> Recorded | None:
        path = self.pid_dir / f"{name}.pid"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return Recorded(name, int(data["pid"]), int(data["start_ticks"]))

    def all(self) -> list[Recorded]:
        if not self.pid_dir.is_dir():
            return []
        records = [self.get(p.stem) for p in sorted(self.pid_dir.glob("*.pid"))]
        return [r for r in records if r is not None]

    def log_tail(self, name: str, lines: int = 30) -> str:
        try:
            return "\n".join((self.log_dir / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, name: str, timeout: float = 15.0) -> None:
        """SIGTERM the recorded process (and its process group), SIGKILL after ``timeout``."""
        record = self.get(name)
        if record is not None and record.alive():
            _terminate(record, timeout)
        (self.pid_dir / f"{name}.pid").unlink(missing_ok=True)

    def kill(self, name: str, timeout: float = 15.0) -> Recorded:
        """SIGKILL the recorded process itself, as a crash or the OOM killer ends one, and wait until it
        is gone. Its pid file stays: the stack sees it dead, and ``up`` starts it again."""
        record = self.get(name)
        if record is None or not record.alive():
            raise ProcessLookupError(f"{name} is not running")
        os.kill(record.pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while record.alive():
            _reap(record.pid)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} (pid {record.pid}) outlived SIGKILL for {timeout:.0f}s")
            time.sleep(0.02)
        _reap(record.pid)
        return record

    def stop_all(self, timeout: float = 15.0) -> list[str]:
        """Stop every recorded process, newest first; returns the names stopped."""
        records = self.all()
        records.sort(key=lambda r: r.start_ticks, reverse=True)
        stopped = []
        for record in records:
            if record.alive():
                _terminate(record, timeout)
                stopped.append(record.name)
            (self.pid_dir / f"{record.name}.pid").unlink(missing_ok=True)
        return stopped


def _signal_group(record: Recorded, sig: signal.Signals) -> None:
    # Each process leads its own session (start_new_session), so its pgid is its pid; signalling the
    # group also reaches children it started (npm's shim, for instance), and nothing outside it.
    try:
        os.killpg(record.pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(record.pid, sig)


def _terminate(record: Recorded, timeout: float) -> None:
    _signal_group(record, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not record.alive():
            _reap(record.pid)
            return
        _reap(record.pid)
        time.sleep(0.05)
    _signal_group(record, signal.SIGKILL)
    while record.alive():
        _reap(record.pid)
        time.sleep(0.05)


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our own child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
