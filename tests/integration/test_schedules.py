"""Schedules end to end, in real time: a 1-minute interval schedule with ``retain: 2`` fires one backup
per minute, keeps the last two successful ones, keeps a failed one until a newer one succeeds; a watcher
killed around a trigger neither doubles nor loses a slot (a standby takes over); ``suspend`` stops it; a
schedule naming a missing policy says so. Also: an ad-hoc backup's ttl deletes it."""

from __future__ import annotations

import datetime
import itertools
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import StackEnv
from tests.helpers import wait_for
from tests.integration.conftest import Services
from tests.integration.test_backup_resources import apply, location_manifest

pytestmark = pytest.mark.integration

TICK = {"DAVIT_SCHEDULE_TICK_SECONDS": "1", "DAVIT_LEASE_DURATION_SECONDS": "4",
        "DAVIT_LEASE_RENEW_DEADLINE_SECONDS": "3", "DAVIT_LEASE_RETRY_SECONDS": "0.5"}  # fmt: skip


def schedule_manifest(namespace: str, name: str, policy: str, **spec: Any) -> dict[str, Any]:
    template = {"spec": {"backupLocation": "loc", "namespaces": [namespace]}}
    return {
        "apiVersion": "davit.dev/v1alpha1",
        "kind": "ApplicationBackupSchedule",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"schedulePolicyName": policy, "template": template, **spec},
    }


def backups_of(stack: StackEnv, namespace: str, schedule: str) -> list[dict[str, Any]]:
    out = stack.kubectl("-n", namespace, "get", "applicationbackups", "-l", f"davit.dev/schedule={schedule}",
                        "-o", "json").stdout  # fmt: skip
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return sorted(items, key=lambda b: b["metadata"]["name"])


def state(backup: dict[str, Any]) -> str:
    status = backup.get("status") or {}
    return str(status.get("status")) if status.get("stage") == "Final" else "Running"


def triggered(stack: StackEnv, namespace: str, schedule: str) -> list[str]:
    """The backups the schedule created, from its Triggered Events (they outlive retention's deletions)."""
    out = stack.kubectl("-n", namespace, "get", "events", "--field-selector",
                        f"involvedObject.name={schedule},reason=Triggered", "-o", "json").stdout  # fmt: skip
    names = []
    for event in json.loads(out)["items"]:
        names += [event["message"].split("backup ")[1].split(" ")[0]] * int(event.get("count") or 1)
    return sorted(names)


def minute_of(name: str) -> datetime.datetime:
    return datetime.datetime.strptime(name.rsplit("-interval-", 1)[1], "%Y-%m-%d-%H%M%S")


def wait_for_second(second: int) -> None:
    """Until the wall clock is at ``second`` past a minute (the slots are whole minutes in UTC)."""
    now = time.time()
    time.sleep((second - now % 60) % 60)  # a clock position, not a condition: nothing to poll


@pytest.mark.timeout(600)  # real minutes: five or six slots
def test_interval_schedule_keeps_two_and_survives_a_watcher_kill(
    stack: StackEnv, namespace: str, stack_services: Any, tmp_path: Path
) -> None:
    services: Services = stack_services(**TICK)
    services.start("watcher", name="watcher-standby", **TICK)
    location = location_manifest(stack, "local", namespace, tmp_path)
    apply(stack, location)
    policy = f"every-minute-{uuid.uuid4().hex[:6]}"
    apply(stack, {"apiVersion": "davit.dev/v1alpha1", "kind": "SchedulePolicy", "metadata": {"name": policy},
                  "policy": {"interval": {"intervalMinutes": 1, "retain": 2}}})  # fmt: skip
    apply(stack, schedule_manifest(namespace, "often", policy, reclaimPolicy="Delete"))
    try:
        # Two successes, then the location breaks: the next backup fails and is kept...
        wait_for("two successful backups", lambda: [state(b) for b in backups_of(stack, namespace, "often")]
                 .count("Successful") >= 2, timeout=200)  # fmt: skip
        broken = json.loads(json.dumps(location))
        broken["location"]["path"] = str(tmp_path / "missing")
        apply(stack, broken)
        failed = wait_for(
            "a failed scheduled backup",
            lambda: [
                b["metadata"]["name"] for b in backups_of(stack, namespace, "often") if state(b) == "Failed"
            ],
            timeout=120,
        )
        # ...while the schedule keeps at most 2 successful ones.
        assert [state(b) for b in backups_of(stack, namespace, "often")].count("Successful") <= 2
        apply(stack, location)

        # The leader dies 2 s before a slot; the standby fires that slot once.
        wait_for_second(58)
        services.kill("watcher")
        wait_for(
            "a success after the failure",
            lambda: any(state(b) == "Successful" and b["metadata"]["name"] > failed[0]
                        for b in backups_of(stack, namespace, "often")),
            timeout=150,
        )  # fmt: skip
        wait_for(
            "the failed backup to be deleted once superseded",
            lambda: failed[0] not in [b["metadata"]["name"] for b in backups_of(stack, namespace, "often")],
            timeout=60,
        )
        kept = backups_of(stack, namespace, "often")
        assert [state(b) for b in kept if state(b) != "Running"].count("Successful") <= 2, kept

        # Every minute fired exactly once, none skipped, across the kill.
        names = triggered(stack, namespace, "often")
        assert len(names) == len(set(names)), f"a slot fired twice: {names}"
        minutes = [minute_of(n) for n in names]
        assert all(b - a == datetime.timedelta(minutes=1) for a, b in itertools.pairwise(minutes)), names

        # Suspended: no new backup through the next slot.
        stack.kubectl("-n", namespace, "patch", "applicationbackupschedule", "often", "--type=merge",
                      "-p", '{"spec": {"suspend": true}}')  # fmt: skip
        before = triggered(stack, namespace, "often")
        wait_for_second(10)
        wait_for_second(10)  # a whole minute, so a slot passed while suspended
        assert triggered(stack, namespace, "often") == before
        status = json.loads(stack.kubectl("-n", namespace, "get", "applicationbackupschedule", "often", "-o",
                                          "json").stdout)["status"]  # fmt: skip
        assert "nextTrigger" not in status and status["items"]["interval"], status

        # Retention has run on what is left: exactly the 2 newest successful backups are kept.
        def kept_successes() -> list[str]:
            return [
                b["metadata"]["name"]
                for b in backups_of(stack, namespace, "often")
                if state(b) == "Successful"
            ]

        wait_for("retention to keep exactly 2", lambda: len(kept_successes()) == 2, timeout=90)
        # The newest slot (the location works again) is one of them; the failed one is gone.
        assert kept_successes()[-1] == sorted(names)[-1] and failed[0] not in kept_successes(), (
            kept_successes(),
            names,
        )
    except AssertionError:
        print(services.logs())
        raise
    finally:
        stack.kubectl("delete", "schedulepolicy", policy, "--wait=false", check=False)


def test_a_schedule_without_its_policy_says_so(stack: StackEnv, namespace: str, stack_services: Any) -> None:
    services: Services = stack_services(**TICK)
    apply(stack, schedule_manifest(namespace, "orphan", "testpolicy"))

    def condition() -> dict[str, Any] | None:
        out = stack.kubectl(
            "-n", namespace, "get", "applicationbackupschedule", "orphan", "-o", "json"
        ).stdout
        conditions = (json.loads(out).get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == "PolicyFound"), None)

    try:
        found = wait_for("the PolicyFound condition", condition, timeout=30)
    except AssertionError:
        print(services.logs())
        raise
    assert (found["status"], found["reason"]) == ("False", "PolicyMissing")
    assert "testpolicy" in found["message"]
    selector = "involvedObject.name=orphan"
    out = stack.kubectl("-n", namespace, "get", "events", "--field-selector", selector, "-o", "json").stdout
    events = json.loads(out)["items"]
    assert [e["reason"] for e in events] == ["PolicyMissing"], events
    assert backups_of(stack, namespace, "orphan") == []


def test_an_ad_hoc_backup_is_deleted_when_its_ttl_passes(
    stack: StackEnv, namespace: str, services: Services, tmp_path: Path
) -> None:
    apply(stack, location_manifest(stack, "local", namespace, tmp_path))
    apply(stack, {"apiVersion": "davit.dev/v1alpha1", "kind": "ApplicationBackup",
                  "metadata": {"name": "short-lived", "namespace": namespace},
                  "spec": {"backupLocation": "loc", "namespaces": [namespace], "ttl": "5s"}})  # fmt: skip
    try:
        wait_for(
            "the backup to expire and be deleted",
            lambda: (
                stack.kubectl(
                    "-n", namespace, "get", "applicationbackup", "short-lived", check=False
                ).returncode
                != 0
            ),
            timeout=60,
        )
    except AssertionError:
        print(services.logs())
        raise
    store = tmp_path / "store" / "backups" / namespace
    assert not list(store.rglob("manifest")), "reclaimPolicy Delete: its data goes with it"
