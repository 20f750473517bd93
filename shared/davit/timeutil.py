"""RFC 3339 timestamps as Kubernetes writes them, and the elapsed-time display of the printer columns."""

from __future__ import annotations

import datetime


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def format_time(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    # Without an offset, read it as UTC: callers subtract it from aware datetimes, and a naive one raises.
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=datetime.UTC)


def epoch_seconds(text: str | None) -> float | None:
    """``text`` (as ``parse_time`` reads it) as Unix time; None when it is missing or unreadable."""
    moment = parse_time(text)
    return moment.timestamp() if moment is not None else None


def format_elapsed(seconds: float) -> str:
    """``1h2m3s`` style, like Go's time.Duration rounded to seconds (what storkctl shows)."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"
