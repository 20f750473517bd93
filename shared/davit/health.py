"""Liveness and readiness of the watcher and the workers: a heartbeat file and the probe that reads it.

The watcher's leader-election loop (standby or leading) and every worker's consumer touch
``Settings.heartbeat_file`` every few seconds (``Heartbeat``); a worker removes it when its consumer
stops (a lost broker connection, shutdown). The pods' exec probes run ``python -m davit.health <file>
--max-age <seconds>``, which fails when the file is missing or older than that: readiness with a short
age, liveness with a long one, so a Redis outage makes workers unready at once and restarts them only if
it lasts. The exporter is probed over HTTP on its /metrics instead.

Importing this module costs nothing beyond the standard library: a probe runs it every few seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

#: How often a heartbeat is written; probes allow several missed beats.
BEAT_SECONDS = 5.0


class Heartbeat:
    """Touches ``path`` (at most every ``BEAT_SECONDS / 2``), or removes it; never raises: a probe file
    that cannot be written makes the pod unready, which is the truth."""

    def __init__(self, path: str) -> None:
        self.path = Path(path) if path else None
        self._last = 0.0

    def beat(self) -> None:
        if self.path is None:
            return
        now = time.monotonic()
        if now - self._last < BEAT_SECONDS / 2:
            return
        try:
            self.path.touch()  # an existing file gets the current mtime
        except OSError:
            return
        self._last = now

    def stop(self) -> None:
        self._last = 0.0
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def age(path: str, now: float | None = None) -> float | None:
    """Seconds since ``path`` was last touched; None when it does not exist."""
    try:
        mtime = Path(path).stat().st_mtime
    except OSError:
        return None
    return max(0.0, (time.time() if now is None else now) - mtime)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m davit.health", description=__doc__.splitlines()[0])
    parser.add_argument("file", help="the heartbeat file (the service's DAVIT_HEARTBEAT_FILE)")
    parser.add_argument("--max-age", type=float, default=30.0, help="seconds a beat stays good")
    args = parser.parse_args(argv)
    seconds = age(args.file)
    if seconds is None:
        print(f"unhealthy: no heartbeat at {args.file}", file=sys.stderr)
        return 1
    if seconds > args.max_age:
        print(
            f"unhealthy: last heartbeat {seconds:.0f}s ago (more than {args.max_age:.0f}s)", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
