"""The clock schedules and expiry read (``davit.clocks``): the real one unless the dev clock file is set,
whose offset is read on every call and refused unless only this process' user can have written it."""

from __future__ import annotations

import datetime
import os
import threading
from pathlib import Path

import pytest

from davit import clocks, timeutil
from davit.settings import Settings
from davit_services.watcher.schedules import Scheduler

TOLERANCE = datetime.timedelta(seconds=5)


def shift(clock: clocks.Clock) -> datetime.timedelta:
    """How far ``clock`` is from the real time, to within the time this call takes."""
    return clock.now() - timeutil.utcnow()


def near(actual: datetime.timedelta, expected: datetime.timedelta) -> bool:
    return abs(actual - expected) < TOLERANCE


def clock_file(tmp_path: Path, text: str, mode: int = 0o644) -> Path:
    path = tmp_path / "clock"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_the_settings_choose_the_clock(tmp_path: Path) -> None:
    assert clocks.from_settings(Settings(), "watcher") is clocks.SYSTEM
    assert near(shift(clocks.SYSTEM), datetime.timedelta(0))
    path = tmp_path / "clock"
    chosen = clocks.from_settings(Settings.from_env({"DAVIT_DEV_CLOCK_FILE": str(path)}), "watcher")
    assert chosen == clocks.OffsetFileClock(path)


@pytest.mark.parametrize(
    ("text", "offset"),
    [
        ("86400", datetime.timedelta(days=1)),
        ("-3600.5\n", datetime.timedelta(hours=-1, milliseconds=-500)),
        (" 0 ", datetime.timedelta(0)),
    ],
)
def test_the_file_holds_seconds_ahead(tmp_path: Path, text: str, offset: datetime.timedelta) -> None:
    clock = clocks.OffsetFileClock(clock_file(tmp_path, text))
    assert clock.offset() == offset
    assert near(shift(clock), offset)


def test_the_offset_is_read_again_on_every_call(tmp_path: Path) -> None:
    path = tmp_path / "clock"
    clock = clocks.OffsetFileClock(path)
    assert clock.offset() == datetime.timedelta(0)  # no file yet: no shift
    clock_file(tmp_path, "60")
    assert clock.offset() == datetime.timedelta(minutes=1)
    clock_file(tmp_path, "7200")
    assert clock.offset() == datetime.timedelta(hours=2)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("tomorrow", "not seconds"),
        ("", "not seconds"),
        ("nan", "beyond"),
        ("inf", "beyond"),
        (str(101 * 365 * 86400), "beyond"),
    ],
)
def test_a_file_that_is_not_an_offset_fails_loudly(tmp_path: Path, text: str, complaint: str) -> None:
    clock = clocks.OffsetFileClock(clock_file(tmp_path, text))
    with pytest.raises(clocks.ClockFileError, match=complaint):
        clock.now()


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666])
def test_a_file_others_may_write_is_refused(tmp_path: Path, mode: int) -> None:
    clock = clocks.OffsetFileClock(clock_file(tmp_path, "86400", mode))
    with pytest.raises(clocks.ClockFileError, match="writable by no other"):
        clock.now()


def test_a_file_of_another_user_is_refused(tmp_path: Path) -> None:
    path = clock_file(tmp_path, "86400")
    if os.geteuid() != 0:
        pytest.skip("only root can give a file to another user")
    os.chown(path, 65534, 65534)
    with pytest.raises(clocks.ClockFileError, match="owned by this process' user"):
        clocks.OffsetFileClock(path).now()


def test_a_symlink_or_a_directory_is_refused(tmp_path: Path) -> None:
    target = clock_file(tmp_path, "86400")
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(clocks.ClockFileError, match="not a regular file"):
        clocks.OffsetFileClock(link).now()
    with pytest.raises(clocks.ClockFileError, match="not a regular file"):
        clocks.OffsetFileClock(tmp_path).now()


class _FixedClock:
    def __init__(self, moment: datetime.datetime) -> None:
        self.moment = moment

    def now(self) -> datetime.datetime:
        return self.moment


class _RecordingScheduler(Scheduler):
    """The loop as it runs, its tick replaced by a record of the instant it was given."""

    def __init__(self, clock: clocks.Clock, lost: threading.Event) -> None:
        super().__init__(api=None, celery=None, tick_seconds=0, clock=clock)
        self.lost = lost
        self.ticks: list[datetime.datetime] = []

    def tick(self, now: datetime.datetime) -> None:
        self.ticks.append(now)
        self.lost.set()


def test_the_schedule_loop_ticks_on_its_clock() -> None:
    moment = datetime.datetime(2027, 3, 1, 21, 14, tzinfo=datetime.UTC)
    lost = threading.Event()
    scheduler = _RecordingScheduler(_FixedClock(moment), lost)
    scheduler.run(lost)
    assert scheduler.ticks == [moment]
