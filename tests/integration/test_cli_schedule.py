"""``davit policy`` and ``davit schedule`` against the real API server, without the Davit services: the
objects the flags make, usage errors that create nothing, suspend and resume, and describe with each
policy type's next trigger and the status the watcher writes (written here the way it writes it)."""

from __future__ import annotations

import datetime
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from davit.constants import API_GROUP, API_VERSION, PLURALS, Kind
from davit.kube import clients
from davit_cli.output import POLICY_COLUMNS, SCHEDULE_COLUMNS
from tests.conftest import StackEnv
from tests.integration.test_cli import davit, ok, one_line, table
from tests.unit.test_cli_schedule import entry_rows

pytestmark = pytest.mark.integration

NEXT_TRIGGER = re.compile(r"^(\S+) \(in [0-9a-z]+\)$")


@pytest.fixture
def policy_name(stack: StackEnv) -> Iterator[str]:
    """A SchedulePolicy name no other test uses (policies are cluster-scoped), deleted afterwards."""
    name = f"p-{uuid.uuid4().hex[:10]}"
    yield name
    stack.kubectl("delete", "schedulepolicy", name, "--ignore-not-found", "--wait=false", check=False)


def stored(stack: StackEnv, *resource: str) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads(stack.kubectl("get", *resource, "-o", "json").stdout)
    return obj


def absent(stack: StackEnv, *resource: str) -> bool:
    result = stack.kubectl("get", *resource, check=False)
    return result.returncode != 0 and "NotFound" in result.stderr


def trigger_time(cell: str) -> datetime.datetime:
    match = NEXT_TRIGGER.match(cell)
    assert match, f"not a next trigger: {cell!r}"
    return datetime.datetime.fromisoformat(match.group(1))


# --- policies ------------------------------------------------------------------------------------


def test_a_policy_of_every_type_is_created_listed_described_and_deleted(
    stack: StackEnv, policy_name: str
) -> None:
    created = ok(
        stack, "policy", "create", policy_name,
        "--interval", "45", "--daily", "10:14pm", "--weekly", "sunday@8:05AM", "--monthly", "31@11:30PM",
        "--cron", "*/15 * * * *", "--retain", "5,daily=7", "--expire-after", "daily=168h",
        "--min-retain", "daily=2", "--time-zone", "Europe/Berlin",
    )  # fmt: skip
    assert created.strip() == f"schedulepolicy {policy_name} created"

    obj = stored(stack, "schedulepolicy", policy_name)
    assert "namespace" not in obj["metadata"], "SchedulePolicies are cluster-scoped"
    assert obj["policy"] == {
        "timeZone": "Europe/Berlin",
        "interval": {"intervalMinutes": 45, "retain": 5},
        "daily": {"time": "10:14PM", "retain": 7, "expireAfter": "168h", "minRetain": 2},
        "weekly": {"day": "Sunday", "time": "8:05AM", "retain": 5},
        "monthly": {"date": 31, "time": "11:30PM", "retain": 5},
        "cron": {"schedule": "*/15 * * * *", "retain": 5},
    }

    header, rows = table(ok(stack, "policy", "get"))
    assert header == list(POLICY_COLUMNS)
    assert [policy_name, "interval,daily,weekly,monthly,cron", "Europe/Berlin"] in [r[:3] for r in rows]
    # -n names no namespace of a cluster-scoped object: it is found from anywhere.
    assert (
        json.loads(ok(stack, "-n", "kube-system", "policy", "get", policy_name, "-o", "json"))["policy"]
        == (obj["policy"])
    )

    before = datetime.datetime.now(datetime.UTC)
    described = ok(stack, "policy", "describe", policy_name)
    after = datetime.datetime.now(datetime.UTC)
    assert re.search(r"^Time Zone:\s+Europe/Berlin$", described, re.M), described
    entries = entry_rows(described, "Entries")
    assert list(entries) == ["interval", "daily", "weekly", "monthly", "cron"], described
    berlin = ZoneInfo("Europe/Berlin")
    for policy_type, row in entries.items():
        moment = trigger_time(row[-1])
        assert moment > before, f"{policy_type}: {row[-1]} is not in the future"
        assert moment.utcoffset() == moment.astimezone(berlin).utcoffset(), f"{policy_type}: Berlin's clock"
    daily = trigger_time(entries["daily"][-1])
    assert daily - after < datetime.timedelta(days=1), "a daily entry fires within a day"
    assert (daily.hour, daily.minute, daily.second) == (22, 14, 0), "10:14PM on the policy's clock"
    assert entries["daily"][1:5] == ["every day at 10:14PM", "7", "168h", "2"]
    weekly = trigger_time(entries["weekly"][-1])
    assert weekly.strftime("%A %H:%M") == "Sunday 08:05" and weekly - after <= datetime.timedelta(days=7)
    interval = trigger_time(entries["interval"][-1])
    assert interval - after <= datetime.timedelta(minutes=45) and interval.timestamp() % (45 * 60) == 0
    cron = trigger_time(entries["cron"][-1])
    assert cron - after <= datetime.timedelta(minutes=15) and cron.minute % 15 == 0

    gone = ok(stack, "policy", "delete", policy_name, "--wait", "--timeout", "30s")
    assert gone.strip() == f"schedulepolicy {policy_name} deleted"
    assert absent(stack, "schedulepolicy", policy_name)
    missing = davit(stack, "policy", "describe", policy_name)
    assert missing.exit_code == 1
    assert one_line(missing) == f"Error: schedulepolicy {policy_name} not found"


def test_policy_describe_shows_the_events_about_it(stack: StackEnv, policy_name: str) -> None:
    """Events about a cluster-scoped object are in some namespace (most recorders use default)."""
    ok(stack, "policy", "create", policy_name, "--daily", "1:00AM")
    uid = stored(stack, "schedulepolicy", policy_name)["metadata"]["uid"]
    from kubernetes import client

    client.CoreV1Api(clients.api_client(stack.kubeconfig)).create_namespaced_event("default", {
        "metadata": {"generateName": f"{policy_name}."},
        "involvedObject": {"apiVersion": "davit.dev/v1alpha1", "kind": "SchedulePolicy", "name": policy_name,
                           "uid": uid},
        "type": "Warning", "reason": "Unused", "message": "no schedule names this policy",
        "lastTimestamp": "2024-03-01T10:00:42Z", "source": {"component": "davit-watcher"},
    })  # fmt: skip
    described = ok(stack, "policy", "describe", policy_name)
    assert re.search(
        r"^  Warning\s+Unused\s+.*davit-watcher\s+no schedule names this policy$", described, re.M
    )


def test_bad_policy_flags_exit_2_and_create_nothing(stack: StackEnv, policy_name: str) -> None:
    for flags in (
        [],
        ["--daily", "22:14"],
        ["--weekly", "Funday@10:14PM"],
        ["--cron", "0 0 30 2 *"],
        ["--interval", "0"],
        ["--daily", "1:00AM", "--retain", "weekly=3"],
        ["--daily", "1:00AM", "--time-zone", "Europe/Atlantis"],
    ):
        result = davit(stack, "policy", "create", policy_name, *flags)
        assert result.exit_code == 2, (flags, result.output)
        assert "Error:" in one_line(result)
    assert absent(stack, "schedulepolicy", policy_name)


# --- schedules -----------------------------------------------------------------------------------


def write_status(stack: StackEnv, namespace: str, name: str, status: dict[str, Any]) -> None:
    """What the watcher does (kubectl 1.20 cannot patch the status subresource)."""
    from kubernetes import client

    client.CustomObjectsApi(clients.api_client(stack.kubeconfig)).patch_namespaced_custom_object_status(
        API_GROUP, API_VERSION, namespace, PLURALS[Kind.APPLICATION_BACKUP_SCHEDULE], name, {"status": status}
    )


def test_a_schedule_is_created_listed_suspended_resumed_and_deleted(
    stack: StackEnv, namespace: str, policy_name: str
) -> None:
    ok(stack, "policy", "create", policy_name, "--daily", "10:14PM", "--time-zone", "America/New_York")
    created = ok(
        stack, "-n", namespace, "schedule", "create", "nightly", "--policy", policy_name, "--location", "loc",
        "--namespaces", namespace, "--selector", "app=web,tier=db", "--resource-types", "ConfigMap,Secret",
        "--reclaim-policy", "Retain", "--ttl", "720h",
    )  # fmt: skip
    assert created.strip() == f"applicationbackupschedule {namespace}/nightly created"
    spec = stored(stack, "-n", namespace, "applicationbackupschedule", "nightly")["spec"]
    assert spec == {
        "schedulePolicyName": policy_name,
        "suspend": False,
        "reclaimPolicy": "Retain",
        "template": {
            "spec": {
                "backupLocation": "loc",
                "namespaces": [namespace],
                "selectors": {"app": "web", "tier": "db"},
                "resourceTypes": ["ConfigMap", "Secret"],
                "ttl": "720h",
            }
        },
    }

    header, rows = table(ok(stack, "-n", namespace, "schedule", "get"))
    assert header == [word for column in SCHEDULE_COLUMNS for word in column.split()]
    assert [r[:4] for r in rows] == [["nightly", policy_name, "false", "<none>"]]

    suspended = ok(stack, "-n", namespace, "schedule", "suspend", "nightly")
    assert suspended.strip() == f"applicationbackupschedule {namespace}/nightly suspended"
    assert stored(stack, "-n", namespace, "applicationbackupschedule", "nightly")["spec"]["suspend"] is True
    _header, rows = table(ok(stack, "schedule", "get", "-A"))
    assert [namespace, "nightly", policy_name, "true"] in [r[:4] for r in rows]
    described = ok(stack, "-n", namespace, "schedule", "describe", "nightly")
    assert entry_rows(described, "Policy Types")["daily"][-1] == "none (suspended)"

    resumed = json.loads(ok(stack, "-n", namespace, "schedule", "resume", "nightly", "-o", "json"))
    assert resumed["spec"]["suspend"] is False, "-o json prints the object as stored"
    stored_spec = stored(stack, "-n", namespace, "applicationbackupschedule", "nightly")["spec"]
    assert stored_spec["suspend"] is False
    assert stored_spec["template"] == spec["template"], "suspend and resume change nothing else"

    ok(stack, "-n", namespace, "schedule", "delete", "nightly", "--wait", "--timeout", "30s")
    assert absent(stack, "-n", namespace, "applicationbackupschedule", "nightly")
    for verb in ("suspend", "resume", "describe", "delete"):
        missing = davit(stack, "-n", namespace, "schedule", verb, "nightly")
        assert missing.exit_code == 1
        assert one_line(missing) == f"Error: applicationbackupschedule {namespace}/nightly not found"


def test_schedule_create_suspended_and_with_the_namespace_as_default(
    stack: StackEnv, namespace: str, policy_name: str
) -> None:
    ok(stack, "policy", "create", policy_name, "--interval", "60")
    ok(stack, "-n", namespace, "schedule", "create", "paused", "--policy", policy_name, "--location", "loc",
       "--suspend")  # fmt: skip
    spec = stored(stack, "-n", namespace, "applicationbackupschedule", "paused")["spec"]
    assert spec["suspend"] is True
    assert spec["template"]["spec"] == {"backupLocation": "loc", "namespaces": [namespace]}
    assert "reclaimPolicy" not in spec


def test_schedule_describe_shows_each_policy_type_with_its_backups_and_next_trigger(
    stack: StackEnv, namespace: str, policy_name: str
) -> None:
    ok(stack, "policy", "create", policy_name, "--daily", "10:14PM", "--weekly", "Mon@6:00AM",
       "--retain", "daily=7", "--time-zone", "Asia/Tokyo")  # fmt: skip
    ok(stack, "-n", namespace, "schedule", "create", "nightly", "--policy", policy_name, "--location", "loc")
    finished = "2024-03-01T13:15:10Z"
    write_status(stack, namespace, "nightly", {
        "items": {"daily": [
            {"name": "nightly-daily-2024-03-01-131400", "status": "Successful",
             "creationTimestamp": "2024-03-01T13:14:00Z", "finishTimestamp": finished},
            {"name": "nightly-daily-2024-03-02-131400", "status": "InProgress",
             "creationTimestamp": "2024-03-02T13:14:00Z"},
        ]},
        "lastSuccessfulBackup": "nightly-daily-2024-03-01-131400",
        "lastSuccessTime": finished,
        "lastSuccessDuration": "1m10s",
    })  # fmt: skip

    _header, rows = table(ok(stack, "-n", namespace, "schedule", "get"))
    assert rows[0][:3] == ["nightly", policy_name, "false"] and rows[0][3].endswith("d"), rows

    before = datetime.datetime.now(datetime.UTC)
    described = ok(stack, "-n", namespace, "schedule", "describe", "nightly")
    assert re.search(r"^  Last Successful Backup:\s+nightly-daily-2024-03-01-131400$", described, re.M)
    assert re.search(r"^  Last Success Time:\s+01 Mar 24 13:15 UTC \(\S+ ago\)$", described, re.M), described
    types = entry_rows(described, "Policy Types")
    assert types["daily"][:4] == ["daily", "every day at 10:14PM", "2", "01 Mar 24 13:15 UTC"]
    assert types["weekly"][:4] == ["weekly", "Mon at 6:00AM", "0", "<none>"]
    tokyo = ZoneInfo("Asia/Tokyo")
    daily = trigger_time(types["daily"][-1])
    assert before < daily <= before + datetime.timedelta(days=1)
    assert daily.utcoffset() == datetime.timedelta(hours=9) and (daily.hour, daily.minute) == (22, 14)
    weekly = trigger_time(types["weekly"][-1]).astimezone(tokyo)
    assert weekly.strftime("%a %H:%M") == "Mon 06:00"
    backups = entry_rows(described, "Backups")
    assert backups["daily"][1:3] == ["nightly-daily-2024-03-02-131400", "InProgress"]
    assert re.search(r"^  daily\s+nightly-daily-2024-03-01-131400\s+Successful\s", described, re.M)


def test_schedule_describe_of_a_schedule_whose_policy_is_missing_says_so(
    stack: StackEnv, namespace: str, policy_name: str
) -> None:
    result = davit(stack, "-n", namespace, "schedule", "create", "orphan", "--policy", policy_name,
                   "--location", "loc")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"Warning: SchedulePolicy {policy_name} does not exist (yet)" in result.stderr
    described = ok(stack, "-n", namespace, "schedule", "describe", "orphan")
    assert f"Policy Types:\n  SchedulePolicy {policy_name} not found: nothing is scheduled" in described


def test_bad_schedule_flags_exit_2_and_create_nothing(
    stack: StackEnv, namespace: str, policy_name: str
) -> None:
    base = ["-n", namespace, "schedule", "create", "nightly"]
    bad: list[list[str]] = [
        ["--location", "loc"],
        ["--policy", "Nightly", "--location", "loc"],
        ["--policy", policy_name, "--location", "loc", "--namespaces", "Not_A_Namespace"],
        ["--policy", policy_name, "--location", "loc", "--selector", "app"],
        ["--policy", policy_name, "--location", "loc", "--ttl", "forever"],
        ["--policy", policy_name, "--location", "loc", "--reclaim-policy", "Keep"],
    ]
    for flags in bad:
        result = davit(stack, *base, *flags)
        assert result.exit_code == 2, (flags, result.output)
        assert "Error:" in one_line(result)
    assert absent(stack, "-n", namespace, "applicationbackupschedule", "nightly")
