"""When SchedulePolicy entries fire (across daylight-saving changes, month ends, leap years and year ends),
which slot is due, and what the scheduled backups are called."""

from __future__ import annotations

import datetime
import itertools
import re
from typing import TypeVar
from zoneinfo import ZoneInfo

import pytest
from _pytest.mark import ParameterSet

from davit.api.types import (
    DNS1123_SUBDOMAIN,
    MAX_INTERVAL_MINUTES,
    CronPolicy,
    DailyPolicy,
    IntervalPolicy,
    MonthlyPolicy,
    PolicySpec,
    WeeklyPolicy,
)
from davit.backup import schedules
from davit.backup.schedules import PolicyEntry, PolicyType

EntryT = TypeVar("EntryT", bound=PolicyEntry)

UTC = datetime.UTC
NY = "America/New_York"
BERLIN = "Europe/Berlin"
MICROSECOND = datetime.timedelta(microseconds=1)


def at(text: str) -> datetime.datetime:
    """An instant written in UTC, ``2026-03-08T07:00`` (seconds optional)."""
    return datetime.datetime.fromisoformat(text).replace(tzinfo=UTC)


#: The SchedulePolicy of Stork's documentation (seeds/000), in UTC as it has no timeZone.
SEED = PolicySpec.model_validate(
    {
        "interval": {"intervalMinutes": 60, "retain": 5},
        "daily": {"time": "10:14PM", "retain": 5},
        "weekly": {"day": "Thursday", "time": "10:13PM", "retain": 5},
        "monthly": {"date": 14, "time": "8:05PM", "retain": 5},
    }
)


def present(entry: EntryT | None) -> EntryT:
    assert entry is not None
    return entry


SEED_INTERVAL = present(SEED.interval)
SEED_DAILY = present(SEED.daily)
SEED_WEEKLY = present(SEED.weekly)
SEED_MONTHLY = present(SEED.monthly)


def daily(time: str) -> DailyPolicy:
    return DailyPolicy(time=time)


def weekly(day: str, time: str) -> WeeklyPolicy:
    return WeeklyPolicy.model_validate({"day": day, "time": time})


def monthly(date: int, time: str) -> MonthlyPolicy:
    return MonthlyPolicy(date=date, time=time)


def cron(schedule: str) -> CronPolicy:
    return CronPolicy(schedule=schedule)


def interval(minutes: int) -> IntervalPolicy:
    return IntervalPolicy(interval_minutes=minutes)


def policy_type_of(entry: PolicyEntry) -> PolicyType:
    names: dict[type[PolicyEntry], PolicyType] = {
        IntervalPolicy: "interval",
        DailyPolicy: "daily",
        WeeklyPolicy: "weekly",
        MonthlyPolicy: "monthly",
        CronPolicy: "cron",
    }
    return names[type(entry)]


def case(case_id: str, entry: PolicyEntry, time_zone: str | None, given: str, expected: str) -> ParameterSet:
    """One row of a table: the entry, its zone, an instant and the instant expected, both UTC."""
    return pytest.param(policy_type_of(entry), entry, time_zone, at(given), at(expected), id=case_id)


# (id, entry, time zone, after, the first trigger strictly after it)
NEXT_TRIGGER_CASES = [
    # --- the seed's policy (UTC) ---
    case("seed-interval", SEED_INTERVAL, None, "2026-03-05T10:14", "2026-03-05T11:00"),
    case("seed-interval-on-slot", SEED_INTERVAL, None, "2026-03-05T11:00", "2026-03-05T12:00"),
    case("seed-daily", SEED_DAILY, None, "2026-03-05T22:13:59", "2026-03-05T22:14"),
    case("seed-daily-on-slot", SEED_DAILY, None, "2026-03-05T22:14", "2026-03-06T22:14"),
    case("seed-weekly-thursday", SEED_WEEKLY, None, "2026-03-01T00:00", "2026-03-05T22:13"),
    case("seed-weekly-on-slot", SEED_WEEKLY, None, "2026-03-05T22:13", "2026-03-12T22:13"),
    case("seed-monthly", SEED_MONTHLY, None, "2026-03-14T20:04", "2026-03-14T20:05"),
    case("seed-monthly-on-slot", SEED_MONTHLY, None, "2026-03-14T20:05", "2026-04-14T20:05"),
    # --- 12-hour clock edges ---
    case("midnight", daily("12:00AM"), None, "2026-05-01T12:00", "2026-05-02T00:00"),
    case("noon", daily("12:00PM"), None, "2026-05-01T00:00", "2026-05-01T12:00"),
    case("1-05am", daily("1:05AM"), None, "2026-05-01T00:00", "2026-05-01T01:05"),
    case("12-59pm", daily("12:59PM"), None, "2026-05-01T12:00", "2026-05-01T12:59"),
    case("11-59pm", daily("11:59PM"), None, "2026-05-01T23:59", "2026-05-02T23:59"),
    case("weekday-abbreviation", weekly("Thu", "10:13PM"), None, "2026-03-06T00:00", "2026-03-12T22:13"),
    # --- month ends and leap years ---
    case("31-to-feb-28", monthly(31, "11:00PM"), None, "2026-01-31T23:00", "2026-02-28T23:00"),
    case("31-to-feb-29-leap", monthly(31, "11:00PM"), None, "2028-01-31T23:00", "2028-02-29T23:00"),
    case("30-to-feb-29-leap", monthly(30, "11:00PM"), None, "2028-01-31T23:00", "2028-02-29T23:00"),
    case("29-to-feb-28", monthly(29, "11:00PM"), None, "2027-01-31T23:00", "2027-02-28T23:00"),
    case("29-on-feb-29-leap", monthly(29, "11:00PM"), None, "2028-01-31T23:00", "2028-02-29T23:00"),
    case("back-to-31-after-february", monthly(31, "11:00PM"), None, "2026-02-28T23:00", "2026-03-31T23:00"),
    case("31-to-april-30", monthly(31, "11:00PM"), None, "2026-03-31T23:00", "2026-04-30T23:00"),
    case("first-of-month", monthly(1, "12:00AM"), None, "2026-04-30T23:59", "2026-05-01T00:00"),
    case("daily-onto-feb-29", daily("6:00AM"), None, "2028-02-28T06:00", "2028-02-29T06:00"),
    case("daily-past-feb-28", daily("6:00AM"), None, "2027-02-28T06:00", "2027-03-01T06:00"),
    case("cron-feb-29", cron("0 12 29 2 *"), None, "2026-03-01T00:00", "2028-02-29T12:00"),
    # --- year end ---
    case("daily-year-end", SEED_DAILY, None, "2026-12-31T22:14", "2027-01-01T22:14"),
    case("weekly-year-end", SEED_WEEKLY, None, "2026-12-31T22:13", "2027-01-07T22:13"),
    case("monthly-year-end", monthly(31, "11:00PM"), None, "2026-12-31T23:00", "2027-01-31T23:00"),
    case("cron-yearly", cron("@yearly"), None, "2026-06-01T00:00", "2027-01-01T00:00"),
    case("daily-year-end-new-york", daily("12:30AM"), NY, "2026-12-31T05:30", "2027-01-01T05:30"),
    # --- America/New_York springs forward 2026-03-08 at 02:00 EST (07:00 UTC) to 03:00 EDT ---
    case("ny-gap-fires-at-gap-end", daily("2:30AM"), NY, "2026-03-08T05:00", "2026-03-08T07:00"),
    case("ny-gap-start", daily("2:00AM"), NY, "2026-03-08T05:00", "2026-03-08T07:00"),
    case("ny-after-gap-next-day-edt", daily("2:30AM"), NY, "2026-03-08T07:00", "2026-03-09T06:30"),
    case("ny-first-time-after-gap", daily("3:00AM"), NY, "2026-03-08T05:00", "2026-03-08T07:00"),
    case("ny-before-gap", daily("1:59AM"), NY, "2026-03-08T05:00", "2026-03-08T06:59"),
    case("ny-10-14pm-est-then-edt", SEED_DAILY, NY, "2026-03-08T03:14", "2026-03-09T02:14"),
    case("ny-midnight-after-change", daily("12:00AM"), NY, "2026-03-08T05:00", "2026-03-09T04:00"),
    case("ny-weekly-in-gap", weekly("Sunday", "2:15AM"), NY, "2026-03-02T00:00", "2026-03-08T07:00"),
    case("ny-monthly-in-gap", monthly(8, "2:30AM"), NY, "2026-03-01T00:00", "2026-03-08T07:00"),
    # --- America/New_York falls back 2026-11-01 at 02:00 EDT (06:00 UTC) to 01:00 EST ---
    case("ny-repeated-first-occurrence", daily("1:30AM"), NY, "2026-11-01T04:00", "2026-11-01T05:30"),
    case("ny-repeated-fires-once", daily("1:30AM"), NY, "2026-11-01T05:30", "2026-11-02T06:30"),
    case("ny-inside-second-occurrence", daily("1:30AM"), NY, "2026-11-01T06:15", "2026-11-02T06:30"),
    case("ny-repeated-hour-start", daily("1:00AM"), NY, "2026-11-01T05:00", "2026-11-02T06:00"),
    case("ny-first-time-after-repeat", daily("2:00AM"), NY, "2026-11-01T05:59", "2026-11-01T07:00"),
    # --- Europe/Berlin: forward 2026-03-29 02:00 CET (01:00 UTC), back 2026-10-25 03:00 CEST (01:00 UTC) ---
    case("berlin-gap", daily("2:30AM"), BERLIN, "2026-03-29T00:00", "2026-03-29T01:00"),
    case("berlin-after-gap", daily("2:30AM"), BERLIN, "2026-03-29T01:00", "2026-03-30T00:30"),
    case("berlin-repeated-first", daily("2:30AM"), BERLIN, "2026-10-24T23:00", "2026-10-25T00:30"),
    case("berlin-repeated-once", daily("2:30AM"), BERLIN, "2026-10-25T00:30", "2026-10-26T01:30"),
    case("berlin-weekly-after-fall", weekly("Sun", "3:00AM"), BERLIN, "2026-10-24T00:00", "2026-10-25T02:00"),
    case("berlin-monthly-summer", monthly(31, "2:30AM"), BERLIN, "2026-02-28T01:30", "2026-03-31T00:30"),
    # --- interval: a fixed UTC grid, whatever the zone ---
    case("interval-across-spring", interval(60), NY, "2026-03-08T06:30", "2026-03-08T07:00"),
    case("interval-across-fall", interval(60), NY, "2026-11-01T05:59:59", "2026-11-01T06:00"),
    case("interval-90-grid", interval(90), BERLIN, "2026-03-29T00:45", "2026-03-29T01:30"),
    case("interval-day-is-utc-midnight", interval(1440), NY, "2026-03-08T12:00", "2026-03-09T00:00"),
    case("interval-epoch-anchor", interval(7), None, "1970-01-01T00:00", "1970-01-01T00:07"),
    case("interval-microsecond-before", interval(60), None, "2026-03-05T10:59:59.999999", "2026-03-05T11:00"),
    # --- cron, on the zone's wall clock ---
    case("cron-ny-gap", cron("30 2 * * *"), NY, "2026-03-08T05:00", "2026-03-08T07:00"),
    case("cron-ny-gap-collapses", cron("*/15 * * * *"), NY, "2026-03-08T06:50", "2026-03-08T07:00"),
    case("cron-ny-after-gap", cron("*/15 * * * *"), NY, "2026-03-08T07:00", "2026-03-08T07:15"),
    case("cron-ny-repeated-once", cron("30 1 * * *"), NY, "2026-11-01T05:30", "2026-11-02T06:30"),
    case("cron-ny-repeated-hour-skipped", cron("*/15 * * * *"), NY, "2026-11-01T05:50", "2026-11-01T07:00"),
    case("cron-berlin-3am-after-repeat", cron("0 3 * * *"), BERLIN, "2026-10-25T00:00", "2026-10-25T02:00"),
    case("cron-berlin-3am-on-spring-day", cron("0 3 * * *"), BERLIN, "2026-03-28T02:00", "2026-03-29T01:00"),
    case("cron-daily-macro", cron("@daily"), None, "2026-05-01T00:00", "2026-05-02T00:00"),
    case("cron-midnight-new-york", cron("@midnight"), NY, "2026-05-01T00:00", "2026-05-01T04:00"),
    case("cron-year-end", cron("0 0 1 * *"), None, "2026-12-15T00:00", "2027-01-01T00:00"),
    case("cron-dom-or-dow", cron("0 0 13 * 5"), None, "2026-01-01T00:00", "2026-01-02T00:00"),
    case("cron-weekdays", cron("0 4 * * 1-5"), None, "2026-01-02T04:00", "2026-01-05T04:00"),
]  # fmt: skip


@pytest.mark.parametrize(("policy_type", "entry", "time_zone", "after", "expected"), NEXT_TRIGGER_CASES)
def test_next_trigger(
    policy_type: PolicyType,
    entry: PolicyEntry,
    time_zone: str | None,
    after: datetime.datetime,
    expected: datetime.datetime,
) -> None:
    trigger = schedules.next_trigger(policy_type, entry, time_zone, after)
    assert trigger == expected
    assert trigger.tzinfo == UTC
    # The trigger is a slot, and the latest one just before it is at or before ``after``: nothing in between.
    assert schedules.latest_slot(policy_type, entry, time_zone, trigger) == trigger
    before = schedules.latest_slot(policy_type, entry, time_zone, trigger - MICROSECOND)
    assert before is not None and before <= after


# (id, entry, time zone, now, the latest trigger at or before it)
LATEST_SLOT_CASES = [
    case("seed-interval", SEED_INTERVAL, None, "2026-03-05T10:14", "2026-03-05T10:00"),
    case("interval-on-slot", SEED_INTERVAL, None, "2026-03-05T10:00", "2026-03-05T10:00"),
    case("daily-on-slot", SEED_DAILY, None, "2026-03-05T22:14", "2026-03-05T22:14"),
    case("daily-just-before", SEED_DAILY, None, "2026-03-05T22:13:59", "2026-03-04T22:14"),
    case("weekly", SEED_WEEKLY, None, "2026-03-12T22:12", "2026-03-05T22:13"),
    case("monthly-short-february", monthly(31, "11:00PM"), None, "2026-03-15T00:00", "2026-02-28T23:00"),
    case("monthly-april", monthly(31, "11:00PM"), None, "2026-05-01T00:00", "2026-04-30T23:00"),
    case("monthly-previous-year", SEED_MONTHLY, None, "2027-01-02T00:00", "2026-12-14T20:05"),
    case("ny-gap-at-gap-end", daily("2:30AM"), NY, "2026-03-08T07:00", "2026-03-08T07:00"),
    case("ny-gap-just-before", daily("2:30AM"), NY, "2026-03-08T06:59:59", "2026-03-07T07:30"),
    case("ny-inside-repeated-hour", daily("1:30AM"), NY, "2026-11-01T06:45", "2026-11-01T05:30"),
    case("ny-repeated-hour-later-wall", daily("1:50AM"), NY, "2026-11-01T06:45", "2026-11-01T05:50"),
    case("ny-after-repeated-hour-not-yet", daily("2:15AM"), NY, "2026-11-01T06:45", "2026-10-31T06:15"),
    case("cron-ny-repeated-hour", cron("*/15 * * * *"), NY, "2026-11-01T06:50", "2026-11-01T05:45"),
    case("cron-ny-gap", cron("*/15 * * * *"), NY, "2026-03-08T07:10", "2026-03-08T07:00"),
    case("cron-previous-leap-day", cron("0 12 29 2 *"), None, "2028-02-28T00:00", "2024-02-29T12:00"),
    case("berlin-second-occurrence-now", daily("2:30AM"), BERLIN, "2026-10-25T01:45", "2026-10-25T00:30"),
]  # fmt: skip


@pytest.mark.parametrize(("policy_type", "entry", "time_zone", "now", "expected"), LATEST_SLOT_CASES)
def test_latest_slot(
    policy_type: PolicyType,
    entry: PolicyEntry,
    time_zone: str | None,
    now: datetime.datetime,
    expected: datetime.datetime,
) -> None:
    slot = schedules.latest_slot(policy_type, entry, time_zone, now)
    assert slot == expected
    assert schedules.next_trigger(policy_type, entry, time_zone, expected) > now


def test_latest_slot_of_a_cron_that_never_matches_is_none() -> None:
    assert schedules.latest_slot("cron", cron("0 0 30 2 *"), None, at("2026-01-01T00:00")) is None


def test_results_are_utc_for_input_in_any_offset() -> None:
    tokyo = datetime.datetime(2026, 3, 6, 7, 0, tzinfo=ZoneInfo("Asia/Tokyo"))  # 2026-03-05T22:00Z
    trigger = schedules.next_trigger("daily", SEED_DAILY, None, tokyo)
    assert trigger == at("2026-03-05T22:14")
    assert trigger.tzinfo == UTC


# --- an independent oracle for daylight-saving changes ---------------------------------------------------


def first_instant_at_or_past(wall: datetime.datetime, time_zone: str) -> datetime.datetime:
    """The documented rule restated by brute force: the first whole minute whose wall clock reads ``wall``
    or later. That is the wall time's first occurrence, or the end of the gap it falls into."""
    tz = ZoneInfo(time_zone)
    moment = wall.replace(tzinfo=UTC) - datetime.timedelta(hours=15)  # offsets are within ±14 h
    while moment.astimezone(tz).replace(tzinfo=None) < wall:
        moment += datetime.timedelta(minutes=1)
    return moment


def kitchen(hour: int, minute: int) -> str:
    return f"{hour % 12 or 12}:{minute:02d}{'AM' if hour < 12 else 'PM'}"


@pytest.mark.parametrize(
    ("time_zone", "day"),
    [
        pytest.param(NY, datetime.date(2026, 3, 8), id="new-york-spring"),
        pytest.param(NY, datetime.date(2026, 11, 1), id="new-york-fall"),
        pytest.param(BERLIN, datetime.date(2026, 3, 29), id="berlin-spring"),
        pytest.param(BERLIN, datetime.date(2026, 10, 25), id="berlin-fall"),
        # Half-hour changes.
        pytest.param("Australia/Lord_Howe", datetime.date(2026, 4, 5), id="lord-howe-back-30-min"),
        pytest.param("Australia/Lord_Howe", datetime.date(2026, 10, 4), id="lord-howe-forward-30-min"),
        # Samoa skipped 30 December 2011 entirely: every wall time of that day fires when the 31st begins.
        pytest.param("Pacific/Apia", datetime.date(2011, 12, 30), id="apia-skipped-day"),
        pytest.param("Asia/Kolkata", datetime.date(2026, 6, 1), id="no-change"),
    ],
)
def test_daily_matches_brute_force_around_offset_changes(time_zone: str, day: datetime.date) -> None:
    for hour in range(24):
        for minute in (0, 1, 15, 29, 30, 45, 59):
            entry = daily(kitchen(hour, minute))
            wall = datetime.datetime.combine(day, datetime.time(hour, minute))
            expected = first_instant_at_or_past(wall, time_zone)
            got = schedules.next_trigger("daily", entry, time_zone, expected - MICROSECOND)
            assert got == expected, (entry.time, time_zone)
            assert schedules.latest_slot("daily", entry, time_zone, expected) == expected
            # Fires once: the next trigger is on a later calendar day.
            following = schedules.next_trigger("daily", entry, time_zone, expected)
            assert following.astimezone(ZoneInfo(time_zone)).date() > day


@pytest.mark.parametrize(
    ("time_zone", "weekly_count", "hourly_count"),
    [
        # 2026 begins and ends on a Thursday.
        pytest.param(None, 53, 365 * 24 - 1, id="utc"),
        # Thursday 10:13PM in New York is Friday in UTC: 31 December's falls in 2027. One hour collapses.
        pytest.param(NY, 52, 365 * 24 - 2, id="new-york"),
        pytest.param(BERLIN, 53, 365 * 24 - 2, id="berlin"),
    ],
)
def test_a_year_of_triggers(time_zone: str | None, weekly_count: int, hourly_count: int) -> None:
    """Walking the UTC year 2026 trigger by trigger: each wall-clock slot fires once, none is lost or
    doubled by the two daylight-saving changes, and the interval grid is indifferent to them."""
    start, end = at("2026-01-01T00:00"), at("2027-01-01T00:00")

    def walk(policy_type: PolicyType, entry: PolicyEntry) -> list[datetime.datetime]:
        found, moment = [], start
        while (moment := schedules.next_trigger(policy_type, entry, time_zone, moment)) < end:
            found.append(moment)
        assert found == sorted(set(found))
        return found

    # The walk starts strictly after 00:00, so the first hour of the year is not counted.
    assert len(walk("interval", interval(60))) == 365 * 24 - 1
    days = walk("daily", SEED_DAILY)
    assert len(days) == 365
    assert len({moment.astimezone(schedules.zone(time_zone)).date() for moment in days}) == 365
    assert len(walk("weekly", SEED_WEEKLY)) == weekly_count
    assert len(walk("monthly", monthly(31, "11:00PM"))) == 12
    # 02:00 on the spring-forward day does not exist: it fires at 03:00, with 03:00's own slot.
    assert len(walk("cron", cron("0 * * * *"))) == hourly_count


def test_a_new_york_year_of_hourly_cron_counts_exactly() -> None:
    start, end = at("2026-01-01T05:00"), at("2027-01-01T05:00")  # New York's 2026, midnight to midnight
    found, moment = [start], start
    while (moment := schedules.next_trigger("cron", cron("0 * * * *"), NY, moment)) < end:
        found.append(moment)
    # 8760 wall hours; 02:00 on 8 March does not exist and fires with 03:00 at the same instant.
    assert len(found) == 365 * 24 - 1
    gaps = {b - a for a, b in itertools.pairwise(found)}
    # Hourly, except across 1 November's repeated hour (01:00 EDT, then 02:00 EST two hours later).
    assert gaps == {datetime.timedelta(hours=1), datetime.timedelta(hours=2)}


# --- due slots: exactly once, one catch-up ---------------------------------------------------------------


def test_due_slot_fires_each_slot_once() -> None:
    created = at("2026-03-05T09:30")
    fired: list[datetime.datetime] = []
    last: datetime.datetime | None = None
    moment = created
    while moment < at("2026-03-05T13:30"):  # the watcher looks every 7 minutes
        slot = schedules.due_slot("interval", SEED_INTERVAL, None, moment, last, created)
        if slot is not None:
            fired.append(slot)
            last = slot
        moment += datetime.timedelta(minutes=7)
    assert fired == [
        at("2026-03-05T10:00"),
        at("2026-03-05T11:00"),
        at("2026-03-05T12:00"),
        at("2026-03-05T13:00"),
    ]


def test_due_slot_catches_up_once_after_downtime() -> None:
    created = at("2026-03-01T00:00")
    last = at("2026-03-02T22:14")
    # Down for three days: only the latest missed slot is due, once.
    slot = schedules.due_slot("daily", SEED_DAILY, None, at("2026-03-05T23:00"), last, created)
    assert slot == at("2026-03-05T22:14")
    assert schedules.due_slot("daily", SEED_DAILY, None, at("2026-03-05T23:01"), slot, created) is None


def test_due_slot_skips_slots_before_the_schedule_existed() -> None:
    created = at("2026-03-05T22:20")
    assert schedules.due_slot("daily", SEED_DAILY, None, at("2026-03-05T22:30"), None, created) is None
    assert schedules.due_slot("daily", SEED_DAILY, None, at("2026-03-06T22:14"), None, created) == at(
        "2026-03-06T22:14"
    )
    # A schedule created exactly at a slot fires it.
    assert schedules.due_slot(
        "daily", SEED_DAILY, None, at("2026-03-06T22:15"), None, at("2026-03-06T22:14")
    ) == at("2026-03-06T22:14")


# --- the 12-hour clock ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10:14PM", (22, 14)),
        ("8:05PM", (20, 5)),
        ("1:05AM", (1, 5)),
        ("01:05AM", (1, 5)),
        ("12:00AM", (0, 0)),
        ("12:30AM", (0, 30)),
        ("12:00PM", (12, 0)),
        ("12:59PM", (12, 59)),
        ("11:59PM", (23, 59)),
    ],
)
def test_parse_kitchen_time(text: str, expected: tuple[int, int]) -> None:
    assert schedules.parse_kitchen_time(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "22:14",
        "13:00PM",
        "0:30AM",
        "10:14",
        "10:4PM",
        "10:60PM",
        "10:14 PM",
        "10:14pm",
        " 10:14PM",
        "ten",
    ],
)
def test_parse_kitchen_time_refuses(text: str) -> None:
    with pytest.raises(schedules.ScheduleError, match=r"12-hour clock time such as 10:14PM"):
        schedules.parse_kitchen_time(text)


# --- backup names --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "policy_type", "slot", "expected"),
    [
        ("backup", "interval", at("2026-03-05T11:00"), "backup-interval-2026-03-05-110000"),
        ("backup", "daily", at("2026-03-05T22:14"), "backup-daily-2026-03-05-221400"),
        ("mysql.nightly", "cron", at("2027-01-01T00:00:07"), "mysql.nightly-cron-2027-01-01-000007"),
        (
            "backup",
            "daily",
            datetime.datetime(2026, 3, 8, 3, 0, tzinfo=ZoneInfo(NY)),
            "backup-daily-2026-03-08-070000",
        ),
    ],
)
def test_backup_name(schedule: str, policy_type: PolicyType, slot: datetime.datetime, expected: str) -> None:
    assert schedules.backup_name(schedule, policy_type, slot) == expected


def test_backup_name_lowercases_the_policy_type() -> None:
    name = schedules.backup_name("backup", "Weekly", at("2026-03-05T22:13"))  # type: ignore[arg-type]
    assert name == "backup-weekly-2026-03-05-221300"


@pytest.mark.parametrize("policy_type", schedules.POLICY_TYPES)
def test_backup_name_at_the_limit_is_kept(policy_type: PolicyType) -> None:
    suffix_length = len(f"-{policy_type}-2026-03-05-221300")
    schedule = "s" * (schedules.MAX_NAME - suffix_length)
    name = schedules.backup_name(schedule, policy_type, at("2026-03-05T22:13"))
    assert name == f"{schedule}-{policy_type}-2026-03-05-221300"
    assert len(name) == schedules.MAX_NAME


@pytest.mark.parametrize(
    "schedule",
    [
        "a" * 253,
        "a" * 230,
        # Cuts that would end on "-" or "." are trimmed back to a letter or digit.
        "a" * 215 + "-" * 30,
        "a" * 214 + "." + "b" * 38,
        ".".join(["abc"] * 63),
    ],
)
def test_long_schedule_names_are_shortened_with_a_hash(schedule: str) -> None:
    slot = at("2026-03-05T22:13")
    name = schedules.backup_name(schedule, "monthly", slot)
    assert len(name) <= schedules.MAX_NAME
    assert re.fullmatch(DNS1123_SUBDOMAIN, name), name
    assert name.endswith("-monthly-2026-03-05-221300")
    # Deterministic, and schedules sharing the kept prefix still get different names.
    assert schedules.backup_name(schedule, "monthly", slot) == name
    assert schedules.backup_name(schedule + "x", "monthly", slot) != name


# --- entries and validation ----------------------------------------------------------------------------


def test_entries_in_policy_type_order() -> None:
    assert list(schedules.entries(SEED)) == ["interval", "daily", "weekly", "monthly"]
    assert schedules.entries(PolicySpec(cron=cron("@hourly"))) == {"cron": cron("@hourly")}
    assert schedules.entries(PolicySpec()) == {}


@pytest.mark.parametrize("policy_type", ["interval", "daily", "weekly", "monthly"])
def test_seed_policy_validates(policy_type: PolicyType) -> None:
    schedules.validate(policy_type, schedules.entries(SEED)[policy_type], None)


@pytest.mark.parametrize(
    ("policy_type", "entry", "time_zone", "message"),
    [
        ("daily", daily("10:14PM"), "Mars/Olympus_Mons", r"unknown time zone 'Mars/Olympus_Mons'"),
        ("daily", daily("10:14PM"), "../../etc/passwd", r"unknown time zone"),
        ("interval", interval(60), "Nowhere/Land", r"unknown time zone 'Nowhere/Land'"),
        ("cron", cron("0 0 30 2 *"), None, r"matches no date"),
        ("cron", cron("61 * * * *"), None, r"cron schedule '61 \* \* \* \*' is not valid"),
        ("cron", CronPolicy.model_construct(schedule="0 0 * * * *"), None, r"has 6 fields; expected 5"),
        ("cron", CronPolicy.model_construct(schedule="0 0 * * * * 2030"), None, r"has 7 fields; expected 5"),
        ("cron", CronPolicy.model_construct(schedule="@reboot"), None, r"cron macro '@reboot' is not one of"),
        ("cron", CronPolicy.model_construct(schedule="* * * *"), None, r"has 4 fields"),
        (
            "daily",
            DailyPolicy.model_construct(time="25:00"),
            None,
            r"time '25:00' is not a 12-hour clock time",
        ),
        (
            "weekly",
            WeeklyPolicy.model_construct(day="Funday", time="1:00AM"),  # type: ignore[arg-type]
            None,
            r"day 'Funday'",
        ),
    ],
)
def test_validate_refuses(
    policy_type: PolicyType, entry: PolicyEntry, time_zone: str | None, message: str
) -> None:
    with pytest.raises(schedules.ScheduleError, match=message):
        schedules.validate(policy_type, entry, time_zone)


def test_naive_instants_are_refused() -> None:
    with pytest.raises(ValueError, match="after must be timezone-aware"):
        schedules.next_trigger("daily", SEED_DAILY, None, datetime.datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        schedules.latest_slot("daily", SEED_DAILY, None, datetime.datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="slot must be timezone-aware"):
        schedules.backup_name("backup", "daily", datetime.datetime(2026, 1, 1))


def test_entry_must_match_its_policy_type() -> None:
    with pytest.raises(TypeError, match="a weekly entry must be a WeeklyPolicy, got DailyPolicy"):
        schedules.next_trigger("weekly", SEED_DAILY, None, at("2026-01-01T00:00"))
    with pytest.raises(ValueError, match="unknown policy type 'hourly'"):
        schedules.next_trigger("hourly", SEED_DAILY, None, at("2026-01-01T00:00"))  # type: ignore[arg-type]


@pytest.mark.parametrize("minutes", [0, MAX_INTERVAL_MINUTES + 1, 10**15, 10**30])
def test_an_interval_it_cannot_compute_with_is_a_schedule_error(minutes: int) -> None:
    # The CRD bounds intervalMinutes; a policy stored before it did reaches this code unbounded.
    entry = IntervalPolicy.model_construct(interval_minutes=minutes)
    now = at("2026-01-01T00:00")
    with pytest.raises(schedules.ScheduleError, match=f"intervalMinutes {minutes} is outside 1-527040"):
        schedules.next_trigger("interval", entry, None, now)
    with pytest.raises(schedules.ScheduleError, match=f"intervalMinutes {minutes} is outside"):
        schedules.latest_slot("interval", entry, None, now)


def test_the_longest_interval_fires_and_one_past_the_last_date_is_a_schedule_error() -> None:
    year = interval(MAX_INTERVAL_MINUTES)
    assert schedules.next_trigger("interval", year, None, at("2026-01-01T00:00")) > at("2026-01-01T00:00")
    late = datetime.datetime(9999, 12, 1, tzinfo=datetime.UTC)
    with pytest.raises(schedules.ScheduleError, match="past the last date"):
        schedules.next_trigger("interval", year, None, late)


def test_backup_names_of_the_longest_schedule_names_are_object_names() -> None:
    slot = at("2026-11-21T10:01:00")
    for name in ("a" * 253, "a" * 232 + "." + "b" * 20, "a" * 231 + "-" + "b" * 21, "n" * 200):
        made = schedules.backup_name(name, "interval", slot)
        assert len(made) <= 253 and re.fullmatch(DNS1123_SUBDOMAIN, made), made
        assert made.endswith("-interval-2026-11-21-100100")
    assert schedules.backup_name("a" * 253, "daily", slot) != schedules.backup_name("a" * 252, "daily", slot)
