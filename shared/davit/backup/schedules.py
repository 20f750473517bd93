"""When a SchedulePolicy fires, and what the backups it makes are called.

Pure functions of the policy and an instant the caller passes in (``after``, ``now``): nothing here reads
the clock, so the watcher, the CLI and the tests get the same answers for the same inputs.

Every instant going in and coming out is timezone-aware; results are in UTC. A policy entry is one of the
five types of ``policy:`` (``interval``, ``daily``, ``weekly``, ``monthly``, ``cron``), and each type fires on
its own: a policy with a daily and a weekly entry makes a daily and a weekly backup on a Thursday evening.

How each type fires (docs/api.md, SchedulePolicy and ApplicationBackupSchedule, says the same for users):

- ``interval``: at every multiple of ``intervalMinutes`` since the Unix epoch, in UTC (a fixed grid). Stork
  counts the interval from the last backup instead; a grid gives every slot an identity that does not
  depend on when the last backup ran, so a restarted watcher finds the same slots, fires each at most
  once, and the backup name (which carries the slot) is the same whoever computes it. ``timeZone`` does not
  apply: the grid is the same everywhere, including across daylight-saving changes.
- ``daily``, ``weekly``, ``monthly``: at ``time`` (Stork's 12-hour clock, "10:14PM") on the wall clock of
  ``timeZone`` (default UTC). ``monthly.date`` past the month's end fires on the month's last day.
- ``cron``: a five-field expression (or an ``@`` macro) evaluated on the wall clock of ``timeZone`` by
  ``croniter``; day of month and day of week, when both are restricted, match when either does (as cron).

Daylight-saving changes, for every type that uses the wall clock: a wall time that does not exist (the
hour skipped when clocks go forward) fires at the first instant after the gap (02:30 on the day New York
springs forward fires at 03:00 EDT); a wall time that happens twice (the hour repeated when clocks go back)
fires once, at its first occurrence.
"""

from __future__ import annotations

import calendar
import datetime
import hashlib
import re
from collections.abc import Callable, Iterator
from typing import Final, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from davit import errors
from davit.api.types import (
    KITCHEN_TIME,
    MAX_INTERVAL_MINUTES,
    CronPolicy,
    DailyPolicy,
    IntervalPolicy,
    MonthlyPolicy,
    PolicySpec,
    WeeklyPolicy,
)

#: The entry types of ``policy:``, in the order they are listed and reported.
PolicyType = Literal["interval", "daily", "weekly", "monthly", "cron"]
POLICY_TYPES: Final[tuple[PolicyType, ...]] = get_args(PolicyType)

PolicyEntry = IntervalPolicy | DailyPolicy | WeeklyPolicy | MonthlyPolicy | CronPolicy

_ENTRY_TYPES: Final[dict[PolicyType, type[PolicyEntry]]] = {
    "interval": IntervalPolicy,
    "daily": DailyPolicy,
    "weekly": WeeklyPolicy,
    "monthly": MonthlyPolicy,
    "cron": CronPolicy,
}

#: ``datetime.weekday()`` of each spelling the API accepts (``Weekday``).
_WEEKDAYS: Final[dict[str, int]] = {
    **{name: number for number, name in enumerate(calendar.day_name)},
    **{name: number for number, name in enumerate(calendar.day_abbr)},
}
_CRON_MACROS: Final = frozenset(
    {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
)
_CRON_FIELDS: Final = 5
_KITCHEN: Final = re.compile(KITCHEN_TIME)
_EPOCH: Final = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_MICROSECOND: Final = datetime.timedelta(microseconds=1)
#: Kubernetes' limit on an object's name.
MAX_NAME: Final = 253
#: Hex digits of the hash that ends a shortened schedule name: 40 bits, so two schedules whose names are
#: cut to the same prefix still make differently named backups.
_DIGEST_CHARS: Final = 10
#: Any instant works for checking that an expression fires at all; a fixed one keeps ``validate`` pure.
_VALIDATION_REFERENCE: Final = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)


class ScheduleError(errors.Invalid, ValueError):
    """A policy entry that cannot be evaluated: a bad time, time zone or cron expression, or one that never
    fires. The message names the offending value and is fit for a condition or an Event."""


class NeverFiresError(ScheduleError):
    """A cron expression that is valid but matches no date (``0 0 30 2 *``)."""


def entries(policy: PolicySpec) -> dict[PolicyType, PolicyEntry]:
    """The entries a policy has, by type, in ``POLICY_TYPES`` order."""
    found: dict[PolicyType, PolicyEntry | None] = {
        "interval": policy.interval,
        "daily": policy.daily,
        "weekly": policy.weekly,
        "monthly": policy.monthly,
        "cron": policy.cron,
    }
    return {policy_type: entry for policy_type, entry in found.items() if entry is not None}


def parse_kitchen_time(text: str) -> tuple[int, int]:
    """``"10:14PM"`` → ``(22, 14)``; ``"12:00AM"`` is midnight ``(0, 0)``, ``"12:00PM"`` noon ``(12, 0)``.

    The format is Go's ``time.Kitchen``, which Stork's policies use, and exactly what the CRD accepts
    (``KITCHEN_TIME``): hours 1-12 without a leading zero required, two-digit minutes, AM or PM.
    """
    match = _KITCHEN.fullmatch(text)
    if match is None:
        raise ScheduleError(
            f"time {text!r} is not a 12-hour clock time such as 10:14PM or 8:05AM "
            "(hour 1-12, two-digit minutes, then AM or PM)"
        )
    hour_text, minute_text = text[:-2].split(":")
    hour = int(hour_text) % 12 + (12 if text.endswith("PM") else 0)
    return hour, int(minute_text)


def zone(time_zone: str | None) -> ZoneInfo:
    """The IANA zone named by a policy's ``timeZone``; UTC when it is unset."""
    name = time_zone or "UTC"
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ScheduleError(
            f"unknown time zone {name!r} (expected an IANA name such as Europe/Berlin)"
        ) from error


def next_trigger(
    policy_type: PolicyType, entry: PolicyEntry, time_zone: str | None, after: datetime.datetime
) -> datetime.datetime:
    """The first instant strictly after ``after`` at which the entry fires, in UTC."""
    _check_aware(after, "after")
    _check_entry(policy_type, entry)
    if isinstance(entry, IntervalPolicy):
        return _grid_next(entry, after)
    tz = zone(time_zone)
    # Walls at or before ``after``'s own wall time map to instants at or before ``after`` (the mapping is
    # monotonic and a wall maps to its first occurrence), so the search can start there.
    start = after.astimezone(tz).replace(tzinfo=None)
    for wall in _walls_after(entry, start):
        instant = _instant(wall, tz)
        if instant > after:
            return instant
    raise AssertionError("wall-time iterators never end")  # pragma: no cover


def latest_slot(
    policy_type: PolicyType, entry: PolicyEntry, time_zone: str | None, now: datetime.datetime
) -> datetime.datetime | None:
    """The most recent instant at or before ``now`` at which the entry fires, in UTC; None only for a cron
    expression that has never matched.

    A schedule is due when this is later than the slot it last fired for (``due_slot``): each slot fires at
    most once, however often the watcher looks, and after downtime the latest missed slot fires once and
    the older missed ones are skipped.
    """
    _check_aware(now, "now")
    _check_entry(policy_type, entry)
    if isinstance(entry, IntervalPolicy):
        return _grid_floor(entry, now)
    tz = zone(time_zone)
    local = now.astimezone(tz)
    # In the repeated hour after clocks go back (fold=1), walls up to the end of that hour have their first
    # occurrence before ``now``: start the backward search that much later.
    repeat = _fold_length(local.replace(tzinfo=None), tz) if local.fold else datetime.timedelta(0)
    try:
        for wall in _walls_at_or_before(entry, local.replace(tzinfo=None) + repeat):
            instant = _instant(wall, tz)
            if instant <= now:
                return instant
    except NeverFiresError:
        return None
    raise AssertionError("wall-time iterators never end")  # pragma: no cover


def due_slot(
    policy_type: PolicyType,
    entry: PolicyEntry,
    time_zone: str | None,
    now: datetime.datetime,
    last_fired: datetime.datetime | None,
    not_before: datetime.datetime,
) -> datetime.datetime | None:
    """The slot to fire now, or None.

    ``last_fired`` is the slot the schedule last fired for (None: never); ``not_before`` is when the
    schedule came into being (or was last resumed), so that creating a schedule does not fire the slot
    that passed just before it.
    """
    slot = latest_slot(policy_type, entry, time_zone, now)
    if slot is None or slot < not_before:
        return None
    if last_fired is not None and slot <= last_fired:
        return None
    return slot


def validate(policy_type: PolicyType, entry: PolicyEntry, time_zone: str | None) -> None:
    """Raise ``ScheduleError`` if the entry cannot fire: bad time, zone or cron expression, or a cron
    expression that matches no date (``0 0 30 2 *``)."""
    zone(time_zone)  # checked for every type: an interval ignores the zone, but the policy names it
    next_trigger(policy_type, entry, time_zone, _VALIDATION_REFERENCE)


def backup_name(schedule_name: str, policy_type: PolicyType, slot: datetime.datetime) -> str:
    """``<schedule>-<policytype>-<yyyy-mm-dd-hhmmss>``, the slot written in UTC whatever the policy's zone.

    Deterministic, so two watchers computing the name of one slot agree and the API server refuses the
    second create. A DNS-1123 subdomain of at most 253 characters: a schedule name too long for that is cut
    and ends with a hash of the whole name.
    """
    _check_aware(slot, "slot")
    suffix = f"-{policy_type.lower()}-{slot.astimezone(datetime.UTC):%Y-%m-%d-%H%M%S}"
    if len(schedule_name) + len(suffix) <= MAX_NAME:
        return schedule_name + suffix
    digest = hashlib.sha256(schedule_name.encode()).hexdigest()[:_DIGEST_CHARS]
    # A label of a subdomain may not end with "-" or "."; the cut could leave either.
    head = schedule_name[: MAX_NAME - len(suffix) - _DIGEST_CHARS - 1].rstrip(".-")
    return f"{head}-{digest}{suffix}"


# --- internals -------------------------------------------------------------------------------------


def _check_aware(moment: datetime.datetime, what: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got {moment!r}")


def _check_entry(policy_type: PolicyType, entry: PolicyEntry) -> None:
    expected = _ENTRY_TYPES.get(policy_type)
    if expected is None:
        raise ValueError(f"unknown policy type {policy_type!r}; expected one of {', '.join(POLICY_TYPES)}")
    if not isinstance(entry, expected):
        raise TypeError(f"a {policy_type} entry must be a {expected.__name__}, got {type(entry).__name__}")


def _step(entry: IntervalPolicy) -> datetime.timedelta:
    # The CRD bounds intervalMinutes; a policy stored before it did (or built in code) may not be, and a
    # huge one would overflow timedelta instead of saying what is wrong.
    minutes = entry.interval_minutes
    if not 1 <= minutes <= MAX_INTERVAL_MINUTES:
        raise ScheduleError(
            f"intervalMinutes {minutes} is outside 1-{MAX_INTERVAL_MINUTES} (one minute to one year)"
        )
    return datetime.timedelta(minutes=minutes)


def _grid_floor(entry: IntervalPolicy, moment: datetime.datetime) -> datetime.datetime:
    """The latest grid point at or before ``moment``; integer arithmetic, so no float rounding at slots."""
    step = _step(entry)
    return _EPOCH + ((moment - _EPOCH) // step) * step


def _grid_next(entry: IntervalPolicy, moment: datetime.datetime) -> datetime.datetime:
    try:
        return _grid_floor(entry, moment) + _step(entry)
    except OverflowError:
        raise ScheduleError(
            f"intervalMinutes {entry.interval_minutes} after {moment:%Y-%m-%d} is past the last date"
        ) from None


def _instant(wall: datetime.datetime, tz: ZoneInfo) -> datetime.datetime:
    """The instant (UTC) at which the naive wall time ``wall`` in ``tz`` fires.

    An existing wall time maps to its first occurrence (``fold=0``); one in a gap to the instant the gap
    ends. The mapping never goes backwards as the wall time advances, which the searches rely on.
    """
    first = wall.replace(tzinfo=tz, fold=0).astimezone(datetime.UTC)
    if first.astimezone(tz).replace(tzinfo=None) == wall:
        return first
    # In a gap, fold=0 reads the wall time with the offset from before the change (an instant after it)
    # and fold=1 with the offset from after it (an instant before it): the change lies between the two.
    before = wall.replace(tzinfo=tz, fold=1).astimezone(datetime.UTC)
    return _offset_change(before, first, tz)


def _offset_change(before: datetime.datetime, after: datetime.datetime, tz: ZoneInfo) -> datetime.datetime:
    """The first instant in ``(before, after]`` whose UTC offset in ``tz`` differs from ``before``'s.

    Offsets change on whole seconds, so a bisection over seconds finds it exactly.
    """
    old_offset = before.astimezone(tz).utcoffset()
    low, high = int(before.timestamp()), int(after.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.datetime.fromtimestamp(middle, tz).utcoffset() == old_offset:
            low = middle
        else:
            high = middle
    return datetime.datetime.fromtimestamp(high, datetime.UTC)


def _fold_length(wall: datetime.datetime, tz: ZoneInfo) -> datetime.timedelta:
    """How far the clocks went back, for a wall time that happens twice (zero for any other)."""
    first = wall.replace(tzinfo=tz, fold=0).utcoffset() or datetime.timedelta(0)
    second = wall.replace(tzinfo=tz, fold=1).utcoffset() or datetime.timedelta(0)
    return max(first - second, datetime.timedelta(0))


def _walls_after(entry: PolicyEntry, start: datetime.datetime) -> Iterator[datetime.datetime]:
    """The naive wall times at which the entry fires, strictly after ``start``, ascending, endless."""
    if isinstance(entry, CronPolicy):
        schedule = _cron(entry, start)
        while True:
            yield _cron_step(schedule.get_next, entry)
        return
    fires_on, at = _calendar_rule(entry)
    day = start.date()
    while True:
        if fires_on(day):
            wall = datetime.datetime.combine(day, at)
            if wall > start:
                yield wall
        day += datetime.timedelta(days=1)


def _walls_at_or_before(entry: PolicyEntry, start: datetime.datetime) -> Iterator[datetime.datetime]:
    """The naive wall times at which the entry fires, at or before ``start``, descending, endless."""
    if isinstance(entry, CronPolicy):
        # croniter's get_prev is strictly before its start; a microsecond later includes ``start`` itself.
        schedule = _cron(entry, start + _MICROSECOND)
        while True:
            yield _cron_step(schedule.get_prev, entry)
        return
    fires_on, at = _calendar_rule(entry)
    day = start.date()
    while True:
        if fires_on(day):
            wall = datetime.datetime.combine(day, at)
            if wall <= start:
                yield wall
        day -= datetime.timedelta(days=1)


def _calendar_rule(entry: PolicyEntry) -> tuple[Callable[[datetime.date], bool], datetime.time]:
    """For daily, weekly and monthly entries: on which days they fire, and at what wall time."""
    if isinstance(entry, DailyPolicy):
        return (lambda day: True), datetime.time(*parse_kitchen_time(entry.time))
    if isinstance(entry, WeeklyPolicy):
        weekday = _WEEKDAYS.get(entry.day)
        if weekday is None:
            raise ScheduleError(f"day {entry.day!r} is not a day of the week such as Thursday or Thu")
        return (lambda day: day.weekday() == weekday), datetime.time(*parse_kitchen_time(entry.time))
    if isinstance(entry, MonthlyPolicy):
        date = entry.date

        def fires_on(day: datetime.date) -> bool:
            # A date past the month's end (31 in April, 29-31 in February) fires on the month's last day.
            return day.day == min(date, calendar.monthrange(day.year, day.month)[1])

        return fires_on, datetime.time(*parse_kitchen_time(entry.time))
    raise TypeError(f"{type(entry).__name__} has no calendar rule")


def _cron(entry: CronPolicy, start: datetime.datetime) -> croniter[datetime.datetime]:
    expression = entry.schedule.strip()
    fields = expression.split()
    if expression.startswith("@"):
        if expression not in _CRON_MACROS:
            raise ScheduleError(f"cron macro {expression!r} is not one of {', '.join(sorted(_CRON_MACROS))}")
    elif len(fields) != _CRON_FIELDS:
        # croniter also takes a sixth (seconds) and seventh (year) field; the API promises five.
        raise ScheduleError(
            f"cron schedule {expression!r} has {len(fields)} fields; expected 5 "
            "(minute hour day-of-month month day-of-week)"
        )
    try:
        # Naive wall times: croniter then does plain calendar arithmetic, and ``_instant`` alone decides
        # what a wall time means on a day the clocks change.
        return croniter(expression, start, ret_type=datetime.datetime)
    except CroniterError as error:
        raise ScheduleError(f"cron schedule {expression!r} is not valid: {error}") from error


def _cron_step(step: Callable[[], datetime.datetime], entry: CronPolicy) -> datetime.datetime:
    try:
        return step()
    except CroniterError as error:
        raise NeverFiresError(f"cron schedule {entry.schedule!r} matches no date") from error
