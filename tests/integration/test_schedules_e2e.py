"""Schedules and retention over days and months, on the real watcher and workers, without waiting for
them: the services run on the dev clock (``davit.clocks``, ``DAVIT_DEV_CLOCK_FILE``), which each test sets
to just before the instant it wants to see, and real time carries it across.

- ``daily``, ``weekly``, ``monthly`` and ``cron`` entries, each in a zone other than UTC, fire at their
  zone's wall time: two slots each, exactly one backup per slot, none before it (the backup is created
  once the clock has passed the slot, and no other backup appears meanwhile);
- ``expireAfter`` deletes a backup once the clock passes its expiry, with its data, and ``minRetain``
  keeps the newest ones even when they are older still;
- ``allowedNamespaces`` on a location in the admin namespace: a schedule in a namespace it does not list
  makes backups that are refused, saying why, and write nothing to the location; one it lists works.

Slots and expiries expected are computed here with ``zoneinfo`` from the objects' own timestamps, not
with Davit's code, and everything is checked by listing the cluster and the location's directory.
"""

from __future__ import annotations

import datetime
import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import StackEnv
from tests.helpers import wait_for
from tests.integration.conftest import Services
from tests.integration.test_backup_resources import apply, location_manifest
from tests.integration.test_schedules import schedule_manifest

pytestmark = pytest.mark.integration

UTC = datetime.UTC
HOUR = datetime.timedelta(hours=1)
DAY = datetime.timedelta(days=1)
SECOND = datetime.timedelta(seconds=1)
#: How long before a slot the clock is set: several ticks see the slot not yet due.
LEAD = datetime.timedelta(seconds=2)
#: A slot's backup must appear within this much (dev clock) time after the slot.
PROMPT = datetime.timedelta(seconds=30)
TICK_SECONDS = "0.5"
SCHEDULE_LABEL = "davit.dev/schedule"
SLOT_ANNOTATION = "davit.dev/schedule-slot"
POLICY_TYPE_LABEL = "davit.dev/policy-type"


def real_now() -> datetime.datetime:
    return datetime.datetime.now(UTC)


def parse(stamp: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def stamp(moment: datetime.datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class DevClock:
    """The services' clock file: ``set`` makes their "now" read ``moment``, and run on from there."""

    path: Path
    offset: datetime.timedelta = field(default=datetime.timedelta(0))

    def set(self, moment: datetime.datetime) -> None:
        self._write(moment - real_now())

    def reset(self) -> None:
        self._write(datetime.timedelta(0))

    def at(self, real: datetime.datetime) -> datetime.datetime:
        """What the services' clock read at the real instant ``real`` (with the current offset)."""
        return real + self.offset

    def _write(self, offset: datetime.timedelta) -> None:
        # Replaced in one step, so a service never reads half a number; 0644 and ours, as it requires.
        fresh = self.path.with_suffix(".new")
        fresh.write_text(f"{offset.total_seconds():.6f}\n")
        fresh.chmod(0o644)
        os.replace(fresh, self.path)
        self.offset = offset


@dataclass(frozen=True)
class Shifted:
    services: Services
    clock: DevClock


@pytest.fixture(scope="module")
def shifted(stack: StackEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shifted]:
    """The services of this file, started once, on a dev clock the tests set."""
    import redis

    redis.Redis.from_url(stack.redis_url).flushdb()
    base = tmp_path_factory.mktemp("shifted")
    clock = DevClock(base / "clock")
    running = Services(stack, base / "logs")
    running.log_dir.mkdir()
    running.start_all(DAVIT_DEV_CLOCK_FILE=str(clock.path), DAVIT_SCHEDULE_TICK_SECONDS=TICK_SECONDS)
    try:
        # The schedule loop runs once the watcher leads: a test's first slot must not wait for that.
        wait_for("the watcher to lead", lambda: leader(stack, running.lease) == "test-watcher", timeout=90)
        yield Shifted(running, clock)
    except BaseException:
        print(running.logs())
        raise
    finally:
        running.stop_all()
        stack.kubectl("-n", "kube-system", "delete", "lease", running.lease, "--ignore-not-found")


def leader(stack: StackEnv, lease: str) -> str | None:
    out = stack.kubectl("-n", "kube-system", "get", "lease", lease, "-o", "json", check=False).stdout
    return str(json.loads(out)["spec"].get("holderIdentity")) if out else None


@pytest.fixture
def clock(shifted: Shifted) -> Iterator[DevClock]:
    """The dev clock, at the real time when a test starts; the services' logs shown when it fails."""
    shifted.clock.reset()
    try:
        yield shifted.clock
    except BaseException:
        print(shifted.services.logs())
        raise


# --- reading the cluster and the location ----------------------------------------------------------


def get(stack: StackEnv, namespace: str, kind: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(
        stack.kubectl("-n", namespace, "get", kind, name, "-o", "json").stdout
    )
    return result


def backups(stack: StackEnv, namespace: str) -> dict[str, dict[str, Any]]:
    """Every ApplicationBackup in the namespace, by name."""
    out = stack.kubectl("-n", namespace, "get", "applicationbackups", "-o", "json").stdout
    return {b["metadata"]["name"]: b for b in json.loads(out)["items"]}


def named(stack: StackEnv, namespace: str, name: str) -> Callable[[], dict[str, Any] | None]:
    """A check for ``wait_for``: the backup ``name`` once it exists."""
    return lambda: backups(stack, namespace).get(name)


def final(backup: dict[str, Any]) -> str | None:
    status = backup.get("status") or {}
    return str(status.get("status")) if status.get("stage") == "Final" else None


def events(stack: StackEnv, namespace: str, involved: str, reason: str) -> list[dict[str, Any]]:
    selector = f"involvedObject.name={involved},reason={reason}"
    out = stack.kubectl("-n", namespace, "get", "events", "--field-selector", selector, "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def manifests(store: Path, namespace: str) -> set[str]:
    """The backups of ``namespace`` whose manifest is in a local location (``docs/format.md``)."""
    return {p.parent.parent.name for p in (store / "backups" / namespace).glob("*/*/manifest")}


def policy_manifest(name: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "davit.dev/v1alpha1", "kind": "SchedulePolicy", "metadata": {"name": name},
            "policy": body}  # fmt: skip


def policy(stack: StackEnv, name: str, body: dict[str, Any]) -> None:
    apply(stack, policy_manifest(name, body))


def suspend(stack: StackEnv, namespace: str, schedule: str) -> None:
    stack.kubectl("-n", namespace, "patch", "applicationbackupschedule", schedule, "--type=merge",
                  "-p", '{"spec": {"suspend": true}}')  # fmt: skip


def created_at(stack: StackEnv, namespace: str, kind: str, name: str) -> datetime.datetime:
    return parse(get(stack, namespace, kind, name)["metadata"]["creationTimestamp"])


def backup_name(schedule: str, policy_type: str, slot: datetime.datetime) -> str:
    return f"{schedule}-{policy_type}-{slot.astimezone(UTC):%Y-%m-%d-%H%M%S}"


def next_hour(moment: datetime.datetime) -> datetime.datetime:
    """The first whole hour at or after ``moment`` (an hourly interval's slot)."""
    floor = moment.replace(minute=0, second=0, microsecond=0)
    return floor if floor == moment else floor + HOUR


# --- when a wall-clock entry fires, worked out here with zoneinfo ----------------------------------


@dataclass(frozen=True)
class Calendar:
    """A wall-clock policy entry, and when it fires worked out by hand: on the days ``day_fires`` takes,
    at ``wall`` in ``zone``."""

    policy_type: str
    entry: dict[str, Any]
    zone: str
    wall: datetime.time
    day_fires: Callable[[datetime.date], bool]


def wall_slots(calendar: Calendar, after: datetime.datetime) -> list[datetime.datetime]:
    """The entry's first two slots at or after ``after``, in UTC (no wall time used here falls in a
    daylight-saving gap or fold, so each maps to one instant)."""
    tz = ZoneInfo(calendar.zone)
    day = after.astimezone(tz).date()
    found: list[datetime.datetime] = []
    while len(found) < 2:
        if calendar.day_fires(day):
            instant = datetime.datetime.combine(day, calendar.wall, tzinfo=tz).astimezone(UTC)
            if instant >= after:
                found.append(instant)
        day += DAY
    return found


def every_day(_day: datetime.date) -> bool:
    return True


def sundays(day: datetime.date) -> bool:
    return day.weekday() == 6


def firsts(day: datetime.date) -> bool:
    return day.day == 1


def weekdays(day: datetime.date) -> bool:
    return day.weekday() < 5


CALENDARS = (
    # 10:14PM in Berlin is 21:14 UTC in winter, 20:14 in summer.
    Calendar("daily", {"time": "10:14PM"}, "Europe/Berlin", datetime.time(22, 14), every_day),
    Calendar("weekly", {"day": "Sunday", "time": "8:05AM"}, "America/New_York", datetime.time(8, 5), sundays),
    # Midnight on the 1st in Berlin is still the last day of the month before in UTC.
    Calendar("monthly", {"date": 1, "time": "12:00AM"}, "Europe/Berlin", datetime.time(0, 0), firsts),
    # Weekdays in Tokyo: Saturday's and Sunday's 06:30 (21:30 UTC on Friday and Saturday) do not fire.
    Calendar("cron", {"schedule": "30 6 * * 1-5"}, "Asia/Tokyo", datetime.time(6, 30), weekdays),
)


def test_calendar_entries_fire_once_at_each_slot_on_their_zones_wall_clock(
    stack: StackEnv, namespace: str, clock: DevClock, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:6]
    objects = [location_manifest(stack, "local", namespace, tmp_path)]
    for calendar in CALENDARS:  # each schedule named after its policy's one entry type
        name = f"{calendar.policy_type}-{suffix}"
        body = {"timeZone": calendar.zone, calendar.policy_type: calendar.entry}
        objects += [policy_manifest(name, body), schedule_manifest(namespace, calendar.policy_type, name)]
    try:
        apply(stack, {"apiVersion": "v1", "kind": "List", "items": objects})
        out = stack.kubectl("-n", namespace, "get", "applicationbackupschedules", "-o", "json").stdout
        created = {s["metadata"]["name"]: parse(s["metadata"]["creationTimestamp"])
                   for s in json.loads(out)["items"]}  # fmt: skip
        firsts_and_seconds = {c.policy_type: wall_slots(c, created[c.policy_type]) for c in CALENDARS}
        timeline = sorted((slot, kind) for kind, slots in firsts_and_seconds.items() for slot in slots)

        # On the real clock each schedule has been looked at, fired nothing, and shows its first slot.
        def next_triggers() -> dict[str, str] | None:
            out = stack.kubectl("-n", namespace, "get", "applicationbackupschedules", "-o", "json").stdout
            shown: dict[str, str] = {}
            for schedule in json.loads(out)["items"]:
                kind = schedule["metadata"]["name"]
                shown[kind] = ((schedule.get("status") or {}).get("nextTrigger") or {}).get(kind, "")
            return shown if all(shown.values()) else None

        shown = wait_for("every schedule's nextTrigger", next_triggers, timeout=30, interval=0.25)
        assert shown == {kind: stamp(slots[0]) for kind, slots in firsts_and_seconds.items()}
        assert backups(stack, namespace) == {}

        expected: set[str] = set()
        fired: dict[str, int] = {}
        for slot, schedule in timeline:
            clock.set(slot - LEAD)
            name = backup_name(schedule, schedule, slot)
            backup = wait_for(f"backup {name}", named(stack, namespace, name), timeout=30, interval=0.25)
            # Created once the services' clock had passed the slot (the timestamp is cut to the second),
            # and promptly.
            made = clock.at(parse(backup["metadata"]["creationTimestamp"]))
            assert slot - SECOND < made < slot + PROMPT, (name, made)
            assert backup["metadata"]["annotations"][SLOT_ANNOTATION] == stamp(slot)
            assert backup["metadata"]["labels"][SCHEDULE_LABEL] == schedule
            assert backup["metadata"]["labels"][POLICY_TYPE_LABEL] == schedule
            expected.add(name)
            # No other slot fired meanwhile: neither early, nor twice, nor another schedule's.
            assert set(backups(stack, namespace)) == expected
            fired[schedule] = fired.get(schedule, 0) + 1
            if fired[schedule] == 2:  # its second slot: the clock goes on past its third
                suspend(stack, namespace, schedule)
        assert set(backups(stack, namespace)) == expected and len(expected) == 2 * len(CALENDARS)
    finally:
        stack.kubectl("-n", namespace, "delete", "applicationbackupschedules", "--all", "--wait=false")
        for calendar in CALENDARS:
            policy_name = f"{calendar.policy_type}-{suffix}"
            stack.kubectl("delete", "schedulepolicy", policy_name, "--wait=false", check=False)


def test_expire_after_deletes_at_expiry_and_min_retain_keeps_the_newest(
    stack: StackEnv, namespace: str, clock: DevClock, tmp_path: Path
) -> None:
    """Hourly backups kept a day, but never fewer than the newest two; and a daily one kept two days and
    not at all after that. The daily one is the witness: retention deletes it in the same pass (the
    oldest first) that finds the two newest hourly ones expired too and must keep them."""
    apply(stack, location_manifest(stack, "local", namespace, tmp_path))
    store = tmp_path / "store"
    name = f"expiring-{uuid.uuid4().hex[:6]}"
    # The schedule first: the daily entry's time is set from when it was created (between the third and
    # a fourth hourly slot), so that no slot of one type comes due while the clock is set to the other's.
    apply(stack, schedule_manifest(namespace, "expiring", name, reclaimPolicy="Delete"))
    created = created_at(stack, namespace, "applicationbackupschedule", "expiring")
    hours = [next_hour(created) + k * HOUR for k in range(3)]
    daily = hours[-1] + datetime.timedelta(minutes=30)
    policy(stack, name, {
        "interval": {"intervalMinutes": 60, "expireAfter": "1d", "minRetain": 2},
        "daily": {"time": f"{daily.hour % 12 or 12}:{daily.minute:02d}{'AM' if daily.hour < 12 else 'PM'}",
                  "expireAfter": "2d", "minRetain": 0},
    })  # fmt: skip
    try:
        slots = [("interval", hour) for hour in hours] + [("daily", daily)]
        names = [backup_name("expiring", policy_type, slot) for policy_type, slot in slots]
        for (_, slot), backup in zip(slots, names, strict=True):
            clock.set(slot + SECOND)
            wait_for(f"backup {backup}", named(stack, namespace, backup), timeout=30, interval=0.25)
        assert set(backups(stack, namespace)) == set(names)

        def all_finished() -> dict[str, dict[str, Any]] | None:
            found = backups(stack, namespace)
            return found if all(final(b) for b in found.values()) else None

        done = wait_for("the four backups to finish", all_finished, timeout=90, interval=0.5)
        assert {n: final(b) for n, b in done.items()} == dict.fromkeys(names, "Successful")
        assert manifests(store, namespace) == set(names)
        suspend(stack, namespace, "expiring")  # no more slots while the clock runs days ahead
        finished = {n: parse(b["status"]["finishTimestamp"]) for n, b in done.items()}
        oldest, second, newest, witness = names

        # The oldest hourly backup goes once the clock passes its expiry, not before.
        expiry = finished[oldest] + DAY
        clock.set(expiry - LEAD)
        deleted = wait_for(
            f"{oldest} deleted by expireAfter",
            lambda: events(stack, namespace, "expiring", "RetentionDeleted"),
            timeout=30,
            interval=0.25,
        )
        assert [e["message"].split(":")[0] for e in deleted] == [f"deleted {oldest}"], deleted
        assert "older than expireAfter 1d" in deleted[0]["message"]
        when = clock.at(parse(deleted[0]["firstTimestamp"]))
        assert expiry - SECOND < when < expiry + PROMPT, when

        # Days later every hourly backup is past its day, but minRetain keeps the newest two; the witness,
        # with no floor, goes in that same pass, after them: by then any wrong deletion of theirs is seen.
        clock.set(finished[witness] + 2 * DAY + SECOND)
        assert all(clock.at(real_now()) - finished[n] > DAY for n in (second, newest))

        def deletions_once_witness_went() -> dict[str, str] | None:
            """The backups retention deleted, with its reasons (its Events on the schedule), once the
            witness is one of them."""
            found = dict(
                e["message"].removeprefix("deleted ").split(": ", 1)
                for e in events(stack, namespace, "expiring", "RetentionDeleted")
            )
            return found if witness in found else None

        reasons = wait_for(f"{witness} deleted by expireAfter", deletions_once_witness_went, interval=0.25)
        assert set(reasons) == {oldest, witness}, reasons
        assert reasons[witness].startswith("older than expireAfter 2d"), reasons
        live = {n for n, b in backups(stack, namespace).items() if not b["metadata"].get("deletionTimestamp")}
        assert live == {second, newest}
        # reclaimPolicy Delete: the deleted ones go with their data; the kept ones' data stays.
        wait_for("the deleted backups and their data to go",
                 lambda: set(backups(stack, namespace)) == manifests(store, namespace) == {second, newest},
                 timeout=30, interval=0.25)  # fmt: skip
    finally:
        stack.kubectl("-n", namespace, "delete", "applicationbackupschedules", "--all", "--wait=false")
        stack.kubectl("delete", "schedulepolicy", name, "--wait=false", check=False)


def test_a_shared_location_serves_only_the_namespaces_it_allows(
    stack: StackEnv, namespace: str, clock: DevClock, tmp_path: Path
) -> None:
    """A location in the admin namespace listing ``namespace`` in ``allowedNamespaces``: the schedule
    there backs up into it; the same schedule in another tenant's namespace is refused, with the reason
    in its backup's status, and leaves nothing in the location."""
    admin = "kube-system"
    outsider = f"t-{uuid.uuid4().hex[:10]}"
    stack.kubectl("create", "namespace", outsider)
    suffix = uuid.uuid4().hex[:6]
    location_name, policy_name = f"shared-{suffix}", f"hourly-{suffix}"
    shared = location_manifest(stack, "local", admin, tmp_path, allowedNamespaces=[namespace])
    shared["metadata"]["name"] = location_name
    store = tmp_path / "store"
    try:
        objects = [shared, policy_manifest(policy_name, {"interval": {"intervalMinutes": 60}})]
        for tenant in (namespace, outsider):
            schedule = schedule_manifest(tenant, "hourly", policy_name)
            schedule["spec"]["template"]["spec"]["backupLocation"] = location_name
            objects.append(schedule)
        apply(stack, {"apiVersion": "v1", "kind": "List", "items": objects})
        created = created_at(stack, outsider, "applicationbackupschedule", "hourly")
        slot = next_hour(created)
        clock.set(slot + SECOND)
        name = backup_name("hourly", "interval", slot)

        def finished(tenant: str) -> Callable[[], dict[str, Any] | None]:
            return lambda: next((b for b in backups(stack, tenant).values() if final(b)), None)

        allowed = wait_for("the allowed tenant's backup", finished(namespace), timeout=60, interval=0.5)
        refused = wait_for("the other tenant's backup", finished(outsider), timeout=60, interval=0.5)
        assert (allowed["metadata"]["name"], final(allowed)) == (name, "Successful")
        assert (refused["metadata"]["name"], final(refused)) == (name, "Failed")
        assert refused["status"]["reason"] == (
            f"spec.backupLocation: BackupLocation {outsider}/{location_name} not found, nor one named "
            f"{location_name} in the admin namespace {admin} that lists {outsider} in allowedNamespaces"
        )
        assert [e["type"] for e in events(stack, outsider, name, "ValidationFailed")] == ["Warning"]

        def listed_by_schedule() -> list[tuple[str, str]]:
            status = get(stack, outsider, "applicationbackupschedule", "hourly").get("status") or {}
            return [(i["name"], i["status"]) for i in (status.get("items") or {}).get("interval", [])]

        wait_for("the refused schedule to list its failed backup",
                 lambda: listed_by_schedule() == [(name, "Failed")], interval=0.25)  # fmt: skip
        assert set(backups(stack, outsider)) == {name}
        # In the location: the allowed tenant's backup, and nothing of the other's.
        assert manifests(store, namespace) == {name}
        assert not [p for p in store.rglob("*") if outsider in p.parts], "written for a refused namespace"
    finally:
        for tenant in (namespace, outsider):
            stack.kubectl("-n", tenant, "delete", "applicationbackupschedules", "--all", "--wait=false")
        stack.kubectl("delete", "namespace", outsider, "--wait=false", check=False)
        stack.kubectl("delete", "schedulepolicy", policy_name, "--wait=false", check=False)
        stack.kubectl("-n", admin, "delete", "backuplocation", location_name, "--wait=false", check=False)
