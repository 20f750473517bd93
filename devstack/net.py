"""Loopback ports and readiness waits."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable


def free_port() -> int:
    """A port nothing listens on right now (the kernel's pick), on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class NotReady(RuntimeError):
    pass


def wait_until(
    what: str, check: Callable[[], bool], timeout: float, on_timeout: Callable[[], str] | None = None
) -> None:
    """Poll ``check`` until it returns True; raise NotReady naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        try:
            if check():
                return
        except Exception:  # noqa: S110 - anything short of success means "not yet"
            pass
        if time.monotonic() > deadline:
            detail = on_timeout() if on_timeout else ""
            raise NotReady(f"{what} not ready after {timeout:.0f}s\n{detail}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)
