"""Which backups retention deletes and why: retain counts, failures superseded by a newer success,
expireAfter with its minRetain floor, ttls, and backups still running."""

from __future__ import annotations

import datetime

import pytest

from davit.api.types import (
    MAX_DURATION_LENGTH,
    CronPolicy,
    DailyPolicy,
    IntervalPolicy,
    MonthlyPolicy,
    Status,
    WeeklyPolicy,
)
from davit.backup.schedules import PolicyEntry, PolicyType
from davit.retention.rules import (
    DEFAULT_RETAIN,
    MAX_DURATION,
    BackupRecord,
    Deletion,
    effective_retain,
    parse_duration,
    to_delete,
    ttl_expires_at,
)

NOW = datetime.datetime(2026, 3, 31, 12, 0, tzinfo=datetime.UTC)
OK = Status.SUCCESSFUL
PARTIAL = Status.PARTIAL_SUCCESS
FAILED = Status.FAILED
RUNNING = Status.IN_PROGRESS
PENDING = Status.PENDING


def days_ago(days: float) -> datetime.datetime:
    return NOW - datetime.timedelta(days=days)


def backup(
    name: str,
    status: Status,
    age_days: float,
    policy_type: PolicyType | None = "daily",
    *,
    run_minutes: float = 10,
    ttl_expires_in: datetime.timedelta | None = None,
) -> BackupRecord:
    """A backup created ``age_days`` ago that, unless still running, finished ``run_minutes`` later."""
    created = days_ago(age_days)
    finished = None if status in (RUNNING, PENDING) else created + datetime.timedelta(minutes=run_minutes)
    expires = None if ttl_expires_in is None else NOW + ttl_expires_in
    return BackupRecord(name, policy_type, status, created, finished, expires)


def daily(
    retain: int | None = None, expire_after: str | None = None, min_retain: int | None = None
) -> DailyPolicy:
    return DailyPolicy(time="3:00AM", retain=retain, expire_after=expire_after, min_retain=min_retain)


def weekly(retain: int | None = None) -> WeeklyPolicy:
    return WeeklyPolicy(day="Sunday", time="3:00AM", retain=retain)


# (backups, policy entries, names deleted in the order returned)
CASES = [
    pytest.param(
        [backup(f"d{i}", OK, 5 - i) for i in range(1, 5)],
        {"daily": daily(retain=2)},
        ["d1", "d2"],
        id="retain-2-of-4-successes",
    ),
    pytest.param(
        [backup("d1", OK, 3), backup("d2", OK, 2)],
        {"daily": daily(retain=2)},
        [],
        id="retain-exactly-met",
    ),
    pytest.param(
        [backup("d1", OK, 4), backup("d2", FAILED, 3), backup("d3", FAILED, 2), backup("d4", OK, 1)],
        {"daily": daily(retain=5)},
        ["d2", "d3"],
        id="failed-deleted-once-a-newer-one-succeeds",
    ),
    pytest.param(
        [backup("d1", OK, 4), backup("d2", OK, 3), backup("d3", FAILED, 2), backup("d4", FAILED, 1)],
        {"daily": daily(retain=5)},
        [],
        id="failed-kept-without-a-newer-success",
    ),
    pytest.param(
        [backup("d1", OK, 3), backup("d2", FAILED, 2), backup("d3", RUNNING, 1)],
        {"daily": daily(retain=1)},
        [],
        id="failed-kept-while-the-newer-one-runs",
    ),
    pytest.param(
        [backup("d1", OK, 3), backup("d2", FAILED, 2), backup("d3", PARTIAL, 1)],
        {"daily": daily(retain=1)},
        [],
        id="failed-kept-after-a-newer-partial-success",
    ),
    pytest.param(
        [backup("d1", OK, 4), backup("d2", PARTIAL, 3), backup("d3", PARTIAL, 2), backup("d4", PARTIAL, 1)],
        {"daily": daily(retain=2)},
        [],
        id="partial-successes-do-not-push-out-the-last-complete-backup",
    ),
    pytest.param(
        [backup("d1", OK, 4), backup("d2", OK, 3), backup("d3", PARTIAL, 2), backup("d4", OK, 1)],
        {"daily": daily(retain=2)},
        ["d1", "d3"],
        id="partial-success-deleted-once-a-newer-one-succeeds",
    ),
    pytest.param(
        [backup("d1", OK, 10), backup("d2", OK, 9), backup("d3", OK, 8), backup("d4", OK, 1)],
        {"daily": daily(expire_after="3d", min_retain=2)},
        ["d1", "d2"],
        id="expire-after-keeps-min-retain",
    ),
    pytest.param(
        [backup("d1", OK, 10), backup("d2", OK, 9), backup("d3", OK, 8)],
        {"daily": daily(expire_after="3d")},
        ["d1", "d2"],
        id="expire-after-min-retain-defaults-to-1",
    ),
    pytest.param(
        [backup("d1", OK, 10), backup("d2", OK, 9), backup("d3", OK, 8)],
        {"daily": daily(expire_after="3d", min_retain=0)},
        ["d1", "d2", "d3"],
        id="expire-after-min-retain-0-removes-all",
    ),
    pytest.param(
        [backup("d1", OK, 10), backup("d2", OK, 9), backup("d3", OK, 8)],
        {"daily": daily(expire_after="3d", min_retain=5)},
        [],
        id="expire-after-below-min-retain-keeps-all",
    ),
    pytest.param(
        [backup(f"d{i:02}", OK, 40 - i) for i in range(40)],
        {"daily": daily(expire_after="30d")},
        # Finished 10 minutes after creation: d09 is 31 days less 10 minutes old, d10 just under 30 days.
        [f"d{i:02}" for i in range(10)],
        id="expire-after-alone-has-no-count-limit",
    ),
    pytest.param(
        [backup(f"d{i}", OK, 6 - i) for i in range(6)],
        {"daily": daily(retain=3, expire_after="2d", min_retain=5)},
        ["d0", "d1", "d2"],
        id="min-retain-does-not-override-retain",
    ),
    pytest.param(
        # Finished exactly 3 days ago: not older than expireAfter 3d.
        [backup("d1", OK, 3, run_minutes=0), backup("d2", OK, 3.5), backup("d3", OK, 0.5)],
        {"daily": daily(expire_after="3d")},
        ["d2"],
        id="expire-after-boundary",
    ),
    pytest.param(
        # d3 is old, but a failure goes only once a newer backup succeeds.
        [backup("d1", OK, 10), backup("d2", OK, 9), backup("d3", FAILED, 8)],
        {"daily": daily(expire_after="3d")},
        ["d1"],
        id="expire-after-leaves-failures-to-their-own-rule",
    ),
    pytest.param(
        [
            backup("d1", OK, 10),
            backup("w1", OK, 9, "weekly"),
            backup("d2", OK, 8),
            backup("w2", OK, 7, "weekly"),
            backup("d3", FAILED, 6),
            backup("w3", OK, 5, "weekly"),
            backup("w4", FAILED, 4, "weekly"),
        ],
        # d3 stays: the success after it is weekly's, not daily's.
        {"daily": daily(retain=1), "weekly": weekly(retain=2)},
        ["d1", "w1"],
        id="policy-types-do-not-interfere",
    ),
    pytest.param(
        [backup(f"i{i:02}", OK, (12 - i) / 24, "interval") for i in range(12)],
        {"interval": IntervalPolicy(interval_minutes=60)},
        ["i00", "i01"],
        id="interval-default-retain-10",
    ),
    pytest.param(
        [backup(f"c{i:02}", OK, (12 - i) / 24, "cron") for i in range(12)],
        {"cron": CronPolicy(schedule="0 * * * *")},
        ["c00", "c01"],
        id="cron-default-retain-10",
    ),
    pytest.param(
        [backup("m1", OK, 90, "monthly"), backup("d1", OK, 2), backup("d2", OK, 1)],
        {"daily": daily(retain=1)},
        ["d1"],
        id="policy-type-no-longer-in-the-policy-is-left-alone",
    ),
    pytest.param(
        [
            backup("a1", OK, 5, None, ttl_expires_in=-datetime.timedelta(seconds=1)),
            backup("a2", OK, 4, None, ttl_expires_in=datetime.timedelta(hours=1)),
            backup("a3", OK, 300, None),
            backup("a4", FAILED, 3, None, ttl_expires_in=-datetime.timedelta(days=1)),
            backup("a5", OK, 2, None, ttl_expires_in=datetime.timedelta(0)),
        ],
        {},
        ["a1", "a4", "a5"],
        id="ad-hoc-ttl",
    ),
    pytest.param(
        [backup("a1", FAILED, 30, None), backup("a2", OK, 1, None)],
        {"daily": daily(retain=1)},
        [],
        id="ad-hoc-failure-without-ttl-is-kept",
    ),
    pytest.param(
        [backup("d1", OK, 3, ttl_expires_in=-datetime.timedelta(hours=1)), backup("d2", OK, 2)],
        {"daily": daily(retain=5)},
        ["d1"],
        id="ttl-applies-to-scheduled-backups-too",
    ),
    pytest.param(
        [
            backup("d1", RUNNING, 30),
            backup("d2", PENDING, 29),
            backup("d3", OK, 3),
            backup("d4", OK, 2),
            backup("d5", RUNNING, 1),
            BackupRecord("d6", "daily", RUNNING, days_ago(20), None, days_ago(10)),
        ],
        {"daily": daily(retain=1, expire_after="1d", min_retain=0)},
        ["d3", "d4"],
        id="unfinished-backups-are-untouched",
    ),
]


@pytest.mark.parametrize(("backups", "entries", "expected"), CASES)
def test_to_delete(
    backups: list[BackupRecord], entries: dict[PolicyType, PolicyEntry], expected: list[str]
) -> None:
    assert [deletion.name for deletion in to_delete(backups, entries, NOW)] == expected


@pytest.mark.parametrize(("backups", "entries", "expected"), CASES)
def test_to_delete_does_not_depend_on_input_order(
    backups: list[BackupRecord], entries: dict[PolicyType, PolicyEntry], expected: list[str]
) -> None:
    permuted = list(reversed(backups[::2])) + backups[1::2]
    assert to_delete(permuted, entries, NOW) == to_delete(backups, entries, NOW)


def test_reasons() -> None:
    backups = [
        backup("nightly-daily-2026-03-20-030000", OK, 11, ttl_expires_in=-datetime.timedelta(days=1)),
        backup("nightly-daily-2026-03-21-030000", OK, 10),
        backup("nightly-daily-2026-03-22-030000", FAILED, 9),
        backup("nightly-daily-2026-03-23-030000", OK, 8),
        backup("nightly-daily-2026-03-24-030000", PARTIAL, 7),
        backup("nightly-daily-2026-03-25-030000", OK, 6),
        backup("nightly-daily-2026-03-26-030000", OK, 5),
        backup("nightly-weekly-2026-03-01-030000", OK, 30, "weekly"),
        backup("nightly-weekly-2026-03-08-030000", OK, 23, "weekly"),
    ]
    entries: dict[PolicyType, PolicyEntry] = {
        "daily": daily(retain=3, expire_after="5d12h", min_retain=1),
        "weekly": weekly(retain=1),
    }
    assert to_delete(backups, entries, NOW) == [
        Deletion(
            "nightly-weekly-2026-03-01-030000", "retain 1 keeps only the 1 newest successful weekly backup"
        ),
        Deletion("nightly-daily-2026-03-20-030000", "its ttl expired at 2026-03-30T12:00:00Z"),
        Deletion(
            "nightly-daily-2026-03-21-030000", "retain 3 keeps only the 3 newest successful daily backups"
        ),
        Deletion(
            "nightly-daily-2026-03-22-030000",
            "failed, and the newer daily backup nightly-daily-2026-03-23-030000 succeeded",
        ),
        Deletion(
            "nightly-daily-2026-03-23-030000",
            "older than expireAfter 5d12h (finished 2026-03-23T12:10:00Z); "
            "minRetain 1 keeps the 1 newest successful daily backup",
        ),
        Deletion(
            "nightly-daily-2026-03-24-030000",
            "partially successful, and the newer daily backup nightly-daily-2026-03-25-030000 succeeded",
        ),
        Deletion(
            "nightly-daily-2026-03-25-030000",
            "older than expireAfter 5d12h (finished 2026-03-25T12:10:00Z); "
            "minRetain 1 keeps the 1 newest successful daily backup",
        ),
    ]


def test_deletions_unpack_as_name_and_reason() -> None:
    [(name, reason)] = to_delete([backup("d1", OK, 2), backup("d2", OK, 1)], {"daily": daily(retain=1)}, NOW)
    assert (name, reason) == ("d1", "retain 1 keeps only the 1 newest successful daily backup")


def test_same_creation_time_orders_by_name() -> None:
    created = days_ago(1)
    backups = [BackupRecord(name, "daily", OK, created, created) for name in ("b", "c", "a")]
    assert [d.name for d in to_delete(backups, {"daily": daily(retain=1)}, NOW)] == ["a", "b"]


def test_age_counts_from_the_finish() -> None:
    # Created 4 days ago, ran for 2 days: 2 days old by its finish, within expireAfter 3d.
    slow = backup("d1", OK, 4, run_minutes=2 * 24 * 60)
    assert to_delete([slow, backup("d2", OK, 1)], {"daily": daily(expire_after="3d")}, NOW) == []


def test_refuses_duplicate_names_and_naive_now() -> None:
    with pytest.raises(ValueError, match="unique"):
        to_delete([backup("d1", OK, 2), backup("d1", OK, 1)], {}, NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        to_delete([], {}, NOW.replace(tzinfo=None))


# --- durations, ttls, defaults -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("72h", datetime.timedelta(hours=72)),
        ("30d", datetime.timedelta(days=30)),
        ("1h30m", datetime.timedelta(hours=1, minutes=30)),
        ("2w", datetime.timedelta(weeks=2)),
        ("500ms", datetime.timedelta(milliseconds=500)),
        ("1d12h30m15s", datetime.timedelta(days=1, hours=12, minutes=30, seconds=15)),
        ("0s", datetime.timedelta(0)),
    ],
)
def test_parse_duration(text: str, expected: datetime.timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "h", "1y", "1.5h", "-1h", "1 h", "1H", "30"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration such as 72h, 30d or 1h30m"):
        parse_duration(text)


def test_ttl_counts_from_the_finish() -> None:
    finished = datetime.datetime(2026, 3, 1, 10, 0, tzinfo=datetime.UTC)
    assert ttl_expires_at("72h", finished) == datetime.datetime(2026, 3, 4, 10, 0, tzinfo=datetime.UTC)
    assert ttl_expires_at(None, finished) is None
    assert ttl_expires_at("72h", None) is None


@pytest.mark.parametrize(
    ("policy_type", "entry", "expected"),
    [
        ("interval", IntervalPolicy(interval_minutes=60), 10),
        ("daily", daily(), 30),
        ("weekly", weekly(), 7),
        ("monthly", MonthlyPolicy(date=14, time="8:05PM"), 12),
        ("cron", CronPolicy(schedule="@hourly"), 10),
        ("daily", daily(retain=5), 5),
        ("daily", daily(expire_after="30d"), None),
        ("daily", daily(retain=5, expire_after="30d"), 5),
    ],
)
def test_effective_retain(policy_type: PolicyType, entry: PolicyEntry, expected: int | None) -> None:
    assert effective_retain(policy_type, entry) == expected


def test_every_policy_type_has_a_default_retain() -> None:
    from davit.backup.schedules import POLICY_TYPES

    assert set(DEFAULT_RETAIN) == set(POLICY_TYPES)


@pytest.mark.parametrize("text", ["999999w", "36501d", "876001h", "99999999999999999999999999999ms"])
def test_a_duration_too_long_to_compute_with_is_refused_with_its_reason(text: str) -> None:
    # Each fits the CRD's pattern and length; "999999w" is 19,000 years, past the last datetime.
    assert len(text) <= MAX_DURATION_LENGTH
    with pytest.raises(ValueError, match=f"duration {text} is longer than 100 years"):
        parse_duration(text)


def test_the_longest_duration_is_accepted_and_a_long_text_is_refused() -> None:
    assert parse_duration("36500d") == MAX_DURATION
    assert parse_duration("5214w2d") == MAX_DURATION
    with pytest.raises(ValueError, match="at most 32 characters"):
        parse_duration("1s" * 17)


def test_a_ttl_past_the_last_date_is_refused_not_overflowed() -> None:
    late = datetime.datetime(9999, 6, 1, tzinfo=datetime.UTC)
    with pytest.raises(ValueError, match="ttl 365d from 9999-06-01T00:00:00Z ends past the last date"):
        ttl_expires_at("365d", late)
    with pytest.raises(ValueError, match="longer than 100 years"):
        ttl_expires_at("999999w", datetime.datetime(2026, 3, 1, tzinfo=datetime.UTC))


def test_to_delete_refuses_an_expire_after_it_cannot_compute_with() -> None:
    backups = [backup("old", OK, 400), backup("new", OK, 1)]
    with pytest.raises(ValueError, match="duration 999999w is longer than 100 years"):
        to_delete(backups, {"daily": daily(expire_after="999999w")}, NOW)
