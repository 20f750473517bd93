""" "Now" for the decisions that depend on the time of day: which schedule slot is due and which backup
has expired (``ttl``, ``expireAfter``).

Production reads the system clock (``SYSTEM``). The local stack and the integration tests can shift it,
so that a daily, weekly or monthly slot, or a backup's expiry, comes due without waiting for it: with
the setting ``dev_clock_file`` (``DAVIT_DEV_CLOCK_FILE``), "now" is the real time plus the number of
seconds the file holds, read again every time (``OffsetFileClock``). A test writes ``86400`` to be a day
ahead, and time goes on running from there.

Only these decisions take the shifted clock. The times Davit writes as it works (``lastUpdateTimestamp``,
``finishTimestamp``), leader election and stall detection keep the real one: they are compared with the
API server's timestamps and with the other processes, which a shifted clock would make look stalled.

Why a tenant cannot turn it on: the setting comes only from the service process' environment or command
line, which only whoever deploys Davit controls (the manifests in ``deploy/`` never set it; a unit test
holds them to that). No Davit resource, bucket content or Redis value reaches it. The file it names is
refused unless it is a regular file owned by the process' own user and writable by nobody else, so a
directory shared with tenants (a local location's) cannot be used to plant one.
"""

from __future__ import annotations

import datetime
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

import structlog

from davit import timeutil
from davit.settings import Settings

log = structlog.get_logger(__name__)

#: The largest shift honoured, either way: a century covers any schedule or expiry a test moves into the
#: present, and keeps "now" well inside the dates ``datetime`` can hold.
MAX_OFFSET: Final = datetime.timedelta(days=100 * 365)


class Clock(Protocol):
    """Where a service reads the current instant (timezone-aware, UTC)."""

    def now(self) -> datetime.datetime: ...


class SystemClock:
    """The real time: what every deployment runs on."""

    def now(self) -> datetime.datetime:
        return timeutil.utcnow()


SYSTEM: Final = SystemClock()


class ClockFileError(ValueError):
    """The dev clock file cannot be trusted or read as an offset; the message says why."""


@dataclass(frozen=True)
class OffsetFileClock:
    """Development and tests only: the real time shifted by the seconds written in ``path``.

    The file holds one decimal number (``86400``, ``-3600``, ``90.5``); a missing file is no shift, so
    the setting can be in place before a test writes its first offset. Any other problem raises
    ``ClockFileError``: the schedule tick or retention task that asked fails and is logged, rather than
    run on a time nobody chose.
    """

    path: Path

    def now(self) -> datetime.datetime:
        return timeutil.utcnow() + self.offset()

    def offset(self) -> datetime.timedelta:
        try:
            # Not following a symlink: its target could lie anywhere, writable by anyone.
            info = os.lstat(self.path)
        except FileNotFoundError:
            return datetime.timedelta(0)
        if not stat.S_ISREG(info.st_mode):
            raise ClockFileError(f"dev clock file {self.path} is not a regular file")
        if info.st_uid != os.geteuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise ClockFileError(
                f"dev clock file {self.path} must be owned by this process' user and writable by no other"
            )
        text = self.path.read_text(encoding="ascii", errors="replace").strip()
        try:
            seconds = float(text)
        except ValueError:
            raise ClockFileError(f"dev clock file {self.path} holds {text[:40]!r}, not seconds") from None
        if not math.isfinite(seconds) or abs(seconds) > MAX_OFFSET.total_seconds():
            raise ClockFileError(f"dev clock file {self.path}: offset {text[:40]} is beyond ±100 years")
        return datetime.timedelta(seconds=seconds)


def from_settings(settings: Settings, component: str) -> Clock:
    """The system clock, unless ``dev_clock_file`` is set (development and tests only, logged loudly)."""
    if not settings.dev_clock_file:
        return SYSTEM
    log.warning(
        "clock.shifted",
        component=component,
        file=settings.dev_clock_file,
        why="DAVIT_DEV_CLOCK_FILE is set: schedules and expiry run on a shifted clock (development only)",
    )
    return OffsetFileClock(Path(settings.dev_clock_file))
