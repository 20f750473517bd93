"""Which backups retention deletes, and why: a pure function of the backups, the policy and ``now``.

The retention service loads one schedule's backups (or the ad-hoc backups of a namespace), calls
``to_delete`` and deletes what it names, writing each reason into an Event. What happens to a deleted
backup's data in its location is the backup's ``reclaimPolicy``, applied by the deletion, not decided here.

The rules (docs/api.md, SchedulePolicy and ApplicationBackupSchedule, says the same for users):

- A backup that has not finished (``Pending``, ``InProgress``) is never deleted.
- ``ttl``: a finished backup whose ttl has run out is deleted, scheduled or ad hoc. The ttl counts from the
  backup's finish (``ttl_expires_at``), not from its creation as in Velero: a backup that takes long to
  run keeps its whole lifetime, and one whose ttl is shorter than its run is not deleted on finishing.
- Per policy type, only ``Successful`` backups count, as in Stork. A ``PartialSuccess`` backup lacks some
  volumes or resources, so it must not push a complete backup out of the ``retain`` window; it is kept
  like a failed one.
- ``retain``: the newest ``retain`` successful backups of the type are kept, older successful ones deleted.
  Unset, it defaults to Stork's per-type defaults (interval 10, daily 30, weekly 7, monthly 12; cron 10 like
  interval) unless ``expireAfter`` is set: then age alone limits the backups, as in StackState's 30 days.
- ``expireAfter``: a successful backup that finished longer ago than this is deleted, but the newest
  ``minRetain`` successful backups of the type are always kept, however old: a schedule that stopped
  producing backups (an application that is down) does not lose its last good ones. ``minRetain``
  defaults to 1; 0 lets age remove them all. It bounds only ``expireAfter``, never ``retain``.
- A ``Failed`` or ``PartialSuccess`` backup is kept until a newer backup of the same type succeeds, then
  deleted: until then it is the best record of what went wrong (and a partial one the latest data).
- Backups of a policy type the policy no longer has are left alone: no rule applies to them.

"Newer" and "newest" order backups by creation time, then name (scheduled names carry their slot), so the
result does not depend on the order the backups were listed in.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final, NamedTuple

from davit import constants
from davit.api.objects import RawObject
from davit.api.types import DURATION, MAX_DURATION_LENGTH, Status
from davit.backup.schedules import POLICY_TYPES, PolicyEntry, PolicyType
from davit.timeutil import format_time, parse_time

#: Stork's defaults for an unset ``retain`` (its ``Default*PolicyRetain``); cron, which Stork lacks, is
#: usually more frequent than daily, so it gets the interval's.
DEFAULT_RETAIN: Final[Mapping[PolicyType, int]] = {
    "interval": 10,
    "daily": 30,
    "weekly": 7,
    "monthly": 12,
    "cron": 10,
}
#: ``minRetain`` when ``expireAfter`` is set without it: age never removes the last successful backup.
DEFAULT_MIN_RETAIN: Final = 1
#: The label of a scheduled backup naming the policy type of the slot that made it.
POLICY_TYPE_LABEL: Final = f"{constants.ANNOTATION_PREFIX}policy-type"

_UNFINISHED: Final = frozenset({Status.PENDING, Status.IN_PROGRESS})
#: Kept until a newer backup of the same type succeeds.
_UNSUCCESSFUL: Final = {Status.FAILED: "failed", Status.PARTIAL_SUCCESS: "partially successful"}
_DURATION: Final = re.compile(DURATION)
_DURATION_PART: Final = re.compile(r"([0-9]+)(ms|s|m|h|d|w)")
#: Each unit in milliseconds: a duration is summed as an integer, which cannot overflow, and only then
#: compared with ``MAX_DURATION`` and made a timedelta.
_UNIT_MS: Final = {
    "ms": 1,
    "s": 1000,
    "m": 60 * 1000,
    "h": 60 * 60 * 1000,
    "d": 24 * 60 * 60 * 1000,
    "w": 7 * 24 * 60 * 60 * 1000,
}
#: The longest ``ttl`` or ``expireAfter`` Davit computes with. The CRD bounds how long the text may be,
#: but "999999w" fits that and is 19,000 years: past the last date a timestamp can hold. Longer durations
#: are refused with this reason instead of overflowing in the middle of a retention run.
MAX_DURATION: Final = datetime.timedelta(days=100 * 365)
_MAX_DURATION_TEXT: Final = "100 years (36500d)"
_MAX_MS: Final = MAX_DURATION // datetime.timedelta(milliseconds=1)


@dataclass(frozen=True)
class BackupRecord:
    """What retention needs to know about one ApplicationBackup."""

    name: str
    #: The policy type of the schedule slot that made it; None for an ad-hoc backup.
    policy_type: PolicyType | None
    #: The backup's status once it is ``Final``; ``Pending`` or ``InProgress`` before.
    status: Status
    created_at: datetime.datetime
    finished_at: datetime.datetime | None = None
    #: When its ``ttl`` runs out (``ttl_expires_at()``); None without a ttl or before it finished.
    ttl_expires_at: datetime.datetime | None = None


class Deletion(NamedTuple):
    """A backup to delete and why, in words fit for an Event."""

    name: str
    reason: str


def parse_duration(text: str) -> datetime.timedelta:
    """``72h``, ``30d``, ``1h30m``, ``2w``, ``500ms`` (the API's ``DURATION``) → a timedelta.

    ``ValueError``, with a message fit for a condition or an Event, for text that is not a duration and
    for a duration longer than ``MAX_DURATION``.
    """
    if len(text) > MAX_DURATION_LENGTH or not _DURATION.fullmatch(text):
        raise ValueError(
            f"{text[:MAX_DURATION_LENGTH]!r} is not a duration such as 72h, 30d or 1h30m "
            f"(at most {MAX_DURATION_LENGTH} characters)"
        )
    milliseconds = sum(int(count) * _UNIT_MS[unit] for count, unit in _DURATION_PART.findall(text))
    duration = datetime.timedelta(milliseconds=min(milliseconds, _MAX_MS + 1))
    if duration > MAX_DURATION:
        raise ValueError(f"duration {text} is longer than {_MAX_DURATION_TEXT}, the longest Davit keeps")
    return duration


def ttl_expires_at(ttl: str | None, finished_at: datetime.datetime | None) -> datetime.datetime | None:
    """When a backup with ``spec.ttl`` ``ttl`` that finished at ``finished_at`` expires: ttl counts from the
    finish. None without a ttl, or while the backup has not finished."""
    if ttl is None or finished_at is None:
        return None
    duration = parse_duration(ttl)
    try:
        return finished_at + duration
    except OverflowError:
        # Only a finish time near the year 9999 gets here (the duration is bounded).
        raise ValueError(f"ttl {ttl} from {format_time(finished_at)} ends past the last date") from None


def record_of(backup: RawObject, now: datetime.datetime) -> BackupRecord:
    """What retention needs of an ApplicationBackup: its type, outcome and times. One that has not
    reached ``Final`` counts as in progress (never deleted); a ttl too long to compute with never runs
    out; a backup without a creation time (never so from the API server) counts as made ``now``."""
    meta, status = backup["metadata"], backup.get("status") or {}
    finished = parse_time(status.get("finishTimestamp"))
    outcome = Status(status["status"]) if status.get("stage") == "Final" and status.get("status") else None
    policy_type = (meta.get("labels") or {}).get(POLICY_TYPE_LABEL)
    try:
        expires = ttl_expires_at((backup.get("spec") or {}).get("ttl"), finished)
    except ValueError:
        expires = None
    return BackupRecord(
        name=meta["name"],
        policy_type=policy_type if policy_type in POLICY_TYPES else None,
        status=outcome or Status.IN_PROGRESS,
        created_at=parse_time(meta.get("creationTimestamp")) or now,
        finished_at=finished,
        ttl_expires_at=expires,
    )


def effective_retain(policy_type: PolicyType, entry: PolicyEntry) -> int | None:
    """How many successful backups of the type are kept; None: no limit by count (age alone)."""
    if entry.retain is not None:
        return entry.retain
    if entry.expire_after is not None:
        return None
    return DEFAULT_RETAIN[policy_type]


def to_delete(
    backups: Iterable[BackupRecord],
    policy_entries: Mapping[PolicyType, PolicyEntry],
    now: datetime.datetime,
) -> list[Deletion]:
    """The backups to delete now, oldest first, each with one reason.

    ``backups`` are one schedule's (with ``policy_entries`` its policy's entries, ``schedules.entries``),
    or ad-hoc ones (with no entries: only ttls apply). A backup that more than one rule removes is named
    once, with the first reason: ttl, then retain, then expireAfter, then a newer success.
    """
    if now.tzinfo is None:
        raise ValueError(f"now must be timezone-aware, got {now!r}")
    ordered = sorted(backups, key=_age_order)
    names = [backup.name for backup in ordered]
    if len(set(names)) != len(names):
        raise ValueError("backup names must be unique")

    reasons: dict[str, str] = {}
    for backup in ordered:
        if backup.status in _UNFINISHED:
            continue
        if backup.ttl_expires_at is not None and backup.ttl_expires_at <= now:
            reasons[backup.name] = f"its ttl expired at {format_time(backup.ttl_expires_at)}"
    for policy_type, entry in policy_entries.items():
        of_type = [backup for backup in ordered if backup.policy_type == policy_type]
        for name, reason in _policy_deletions(policy_type, entry, of_type, now):
            reasons.setdefault(name, reason)
    return [Deletion(backup.name, reasons[backup.name]) for backup in ordered if backup.name in reasons]


def _age_order(backup: BackupRecord) -> tuple[datetime.datetime, str]:
    return backup.created_at, backup.name


def _policy_deletions(
    policy_type: PolicyType, entry: PolicyEntry, oldest_first: list[BackupRecord], now: datetime.datetime
) -> Iterator[Deletion]:
    successes_newest_first = [b for b in reversed(oldest_first) if b.status == Status.SUCCESSFUL]

    kept = successes_newest_first
    retain = effective_retain(policy_type, entry)
    if retain is not None:
        kept = successes_newest_first[:retain]
        for backup in successes_newest_first[retain:]:
            yield Deletion(
                backup.name,
                f"retain {retain} keeps only the {_count(retain, f'newest successful {policy_type} backup')}",
            )

    if entry.expire_after is not None:
        max_age = parse_duration(entry.expire_after)
        floor = entry.min_retain if entry.min_retain is not None else DEFAULT_MIN_RETAIN
        # The newest ``floor`` are kept whatever their age; deleting only older ones keeps at least that many.
        for backup in kept[floor:]:
            finished = backup.finished_at or backup.created_at
            if now - finished > max_age:
                yield Deletion(
                    backup.name,
                    f"older than expireAfter {entry.expire_after} (finished {format_time(finished)}); "
                    f"minRetain {floor} keeps the {_count(floor, f'newest successful {policy_type} backup')}",
                )

    for index, backup in enumerate(oldest_first):
        outcome = _UNSUCCESSFUL.get(backup.status)
        if outcome is None:
            continue
        newer_success = next((b for b in oldest_first[index + 1 :] if b.status == Status.SUCCESSFUL), None)
        if newer_success is not None:
            yield Deletion(
                backup.name, f"{outcome}, and the newer {policy_type} backup {newer_success.name} succeeded"
            )


def _count(number: int, noun: str) -> str:
    """``1 newer backup``, ``2 newer backups``."""
    return f"{number} {noun}{'' if number == 1 else 's'}"
