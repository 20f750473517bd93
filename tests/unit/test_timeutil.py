"""RFC 3339 timestamps and the printer columns' elapsed-time display."""

from __future__ import annotations

import datetime

import pytest

from davit import timeutil

UTC = datetime.UTC


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(0, "0s", id="zero"),
        pytest.param(1, "1s", id="one"),
        pytest.param(59, "59s", id="59"),
        pytest.param(60, "1m0s", id="minute"),
        pytest.param(61, "1m1s", id="61"),
        pytest.param(3599, "59m59s", id="just-under-hour"),
        pytest.param(3600, "1h0m0s", id="hour"),
        pytest.param(3723, "1h2m3s", id="3723"),
        pytest.param(90061, "25h1m1s", id="days-shown-as-hours"),
        pytest.param(-1, "0s", id="negative"),
        pytest.param(-3723, "0s", id="large-negative"),
        pytest.param(0.4, "0s", id="rounds-down"),
        pytest.param(59.6, "1m0s", id="rounds-up-into-minutes"),
        pytest.param(61.2, "1m1s", id="fraction"),
    ],
)
def test_format_elapsed(seconds: float, text: str) -> None:
    assert timeutil.format_elapsed(seconds) == text


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        pytest.param(datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC), "2024-05-01T12:00:00Z", id="utc"),
        pytest.param(
            datetime.datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC), "1999-12-31T23:59:59Z", id="y2k-eve"
        ),
        pytest.param(
            datetime.datetime(2024, 5, 1, 14, 30, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
            "2024-05-01T12:30:00Z",
            id="converted-to-utc",
        ),
        pytest.param(
            datetime.datetime(2024, 5, 1, 12, 0, 0, 999999, tzinfo=UTC),
            "2024-05-01T12:00:00Z",
            id="drops-micros",
        ),
    ],
)
def test_format_time(moment: datetime.datetime, text: str) -> None:
    assert timeutil.format_time(moment) == text


@pytest.mark.parametrize(
    "moment",
    [
        pytest.param(datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC), id="noon"),
        pytest.param(datetime.datetime(2024, 2, 29, 0, 0, 1, tzinfo=UTC), id="leap-day"),
        pytest.param(datetime.datetime(1970, 1, 1, tzinfo=UTC), id="epoch"),
    ],
)
def test_format_parse_round_trip(moment: datetime.datetime) -> None:
    text = timeutil.format_time(moment)
    parsed = timeutil.parse_time(text)
    assert parsed == moment
    assert parsed is not None
    assert parsed.utcoffset() == datetime.timedelta(0)
    assert timeutil.format_time(parsed) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("2024-05-01T12:00:00Z", datetime.datetime(2024, 5, 1, 12, tzinfo=UTC), id="zulu"),
        pytest.param(
            "2024-05-01T12:00:00.123456Z",
            datetime.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC),
            id="micro-time-like-leases",
        ),
        pytest.param("2024-05-01T14:00:00+02:00", datetime.datetime(2024, 5, 1, 12, tzinfo=UTC), id="offset"),
        pytest.param(
            "2024-05-01T12:00:00", datetime.datetime(2024, 5, 1, 12, tzinfo=UTC), id="no-offset-is-utc"
        ),
    ],
)
def test_parse_time(text: str, expected: datetime.datetime) -> None:
    parsed = timeutil.parse_time(text)
    assert parsed == expected
    assert parsed is not None
    assert parsed.tzinfo is not None  # comparable with utcnow()
    assert (timeutil.utcnow() - parsed).total_seconds() > 0


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(None, id="none"),
        pytest.param("", id="empty"),
        pytest.param("garbage", id="garbage"),
        pytest.param("2024-13-01T00:00:00Z", id="month-13"),
        pytest.param("2024-05-01T25:00:00Z", id="hour-25"),
        pytest.param("yesterday", id="word"),
        pytest.param("12:00", id="time-only"),
    ],
)
def test_parse_garbage_is_none(text: str | None) -> None:
    assert timeutil.parse_time(text) is None


def test_utcnow_is_aware_utc() -> None:
    now = timeutil.utcnow()
    assert now.utcoffset() == datetime.timedelta(0)
    assert abs((now - datetime.datetime.now(UTC)).total_seconds()) < 5


def test_epoch_seconds() -> None:
    assert timeutil.epoch_seconds("2026-12-05T10:00:00Z") == 1796464800.0
    assert timeutil.epoch_seconds("2026-12-05T10:00:00") == 1796464800.0  # no offset: UTC
    assert timeutil.epoch_seconds(None) is None
    assert timeutil.epoch_seconds("yesterday") is None
