"""``davit policy`` and ``davit schedule`` without a cluster: the policy and schedule specs the flags make,
bad flags that stop (exit 2) before anything is created, the tables, and describe's next triggers."""

from __future__ import annotations

import copy
import datetime
import re
from typing import Any

import click
import pytest
from click.testing import CliRunner

from davit.api.types import ApplicationBackupScheduleSpec, PolicySpec
from davit_cli import backup, output, policy, schedule
from davit_cli.main import cli
from davit_cli.options import check_model

#: A Wednesday, 00:15:30 on Thursday in Berlin (UTC+2 in September).
NOW = datetime.datetime(2019, 9, 11, 22, 15, 30, tzinfo=datetime.UTC)


def policy_object(body: dict[str, Any], name: str = "nightly") -> dict[str, Any]:
    return {
        "apiVersion": "davit.dev/v1alpha1",
        "kind": "SchedulePolicy",
        "metadata": {"name": name, "uid": "5e7c-1111", "creationTimestamp": "2019-09-10T22:15:30Z"},
        "policy": body,
    }


def schedule_object(
    spec: dict[str, Any] | None = None, name: str = "shop-nightly", **status: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "davit.dev/v1alpha1",
        "kind": "ApplicationBackupSchedule",
        "metadata": {
            "name": name,
            "namespace": "shop",
            "uid": "7a1d-2222",
            "creationTimestamp": "2019-09-11T20:15:30Z",
        },
        "spec": spec
        or {
            "schedulePolicyName": "nightly",
            "suspend": False,
            "reclaimPolicy": "Retain",
            "template": {
                "spec": {"backupLocation": "loc", "namespaces": ["shop"], "selectors": {"app": "web"}}
            },
        },
        "status": status,
    }


EVERY_TYPE = {
    "timeZone": "Europe/Berlin",
    "interval": {"intervalMinutes": 30, "retain": 4},
    "daily": {"time": "10:14PM", "retain": 7, "expireAfter": "168h", "minRetain": 2},
    "weekly": {"day": "Sunday", "time": "10:14PM"},
    "monthly": {"date": 15, "time": "1:05AM"},
    "cron": {"schedule": "*/15 * * * *"},
}


def invoke(*args: str) -> Any:
    """Run the CLI with a kubeconfig that does not exist: reaching for the cluster would fail with exit 1,
    so exit 2 shows the flags were refused first."""
    return CliRunner().invoke(cli, ["--kubeconfig", "/nonexistent/kubeconfig", "-n", "shop", *args])


# --- policy flags --------------------------------------------------------------------------------


def test_every_policy_type_and_its_retention_become_the_policy() -> None:
    built = policy.build_policy(
        interval=30,
        daily="10:14pm",
        weekly="sunday@10:14PM",
        monthly="15@1:05am",
        cron="*/15  *  * * *",
        retain="4,daily=7,weekly=4",
        expire_after="daily=168h",
        min_retain="daily=2",
        time_zone="Europe/Berlin",
    )
    assert built == {
        "timeZone": "Europe/Berlin",
        "interval": {"intervalMinutes": 30, "retain": 4},
        "daily": {"time": "10:14PM", "retain": 7, "expireAfter": "168h", "minRetain": 2},
        "weekly": {"day": "Sunday", "time": "10:14PM", "retain": 4},
        "monthly": {"date": 15, "time": "1:05AM", "retain": 4},
        "cron": {"schedule": "*/15 * * * *", "retain": 4},
    }
    PolicySpec.model_validate(built)  # what the API server will be sent is what its schema takes


def test_retention_flags_apply_to_every_type_given_or_to_those_named() -> None:
    given = ["daily", "weekly"]
    assert policy.per_type("7", "--retain", given, policy.parse_count) == {"daily": 7, "weekly": 7}
    assert policy.per_type("weekly=4", "--retain", given, policy.parse_count) == {"weekly": 4}
    assert policy.per_type("7, weekly = 4", "--retain", given, policy.parse_count) == {
        "daily": 7,
        "weekly": 4,
    }
    assert policy.per_type(None, "--retain", given, policy.parse_count) == {}


def test_days_of_the_week_and_times_are_read_in_any_case() -> None:
    assert policy.parse_weekly("SUN@8:05am") == {"day": "Sun", "time": "8:05AM"}
    assert policy.parse_weekly(" friday @ 12:00PM") == {"day": "Friday", "time": "12:00PM"}
    assert policy.parse_monthly("31@11:59PM") == {"date": 31, "time": "11:59PM"}


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        ([], "give at least one of --interval, --daily, --weekly, --monthly, --cron"),
        (["--retain", "3"], "give at least one of"),
        (["--daily", "22:14"], "'22:14' is not a time of day such as 10:14PM"),
        (["--daily", "13:00PM"], "'13:00PM' is not a time of day"),
        (["--weekly", "Sunday"], "'Sunday' is not DAY@TIME"),
        (["--weekly", "Funday@10:14PM"], "'Funday' is not a day of the week"),
        (["--monthly", "0@10:14PM"], "'0' is not a day of the month (1 to 31)"),
        (["--monthly", "32@10:14PM"], "'32' is not a day of the month"),
        (
            ["--interval", "0"],
            "--interval: interval.intervalMinutes: Input should be greater than or equal to 1",
        ),
        (["--interval", "30m"], "'30m' is not a valid integer"),
        (["--cron", "*/15 * * *"], "has 4 fields; expected 5"),
        (["--cron", "61 * * * *"], "'61 * * * *' is not valid"),
        (["--cron", "0 0 30 2 *"], "'0 0 30 2 *' matches no date"),
        (
            ["--daily", "1:00AM", "--retain", "0"],
            "--retain: daily.retain: Input should be greater than or equal to 1",
        ),
        (["--daily", "1:00AM", "--retain", "-1"], "'-1' is not a whole number"),
        (["--daily", "1:00AM", "--retain", "weekly=3"], "'weekly' names no policy: add --weekly"),
        (["--daily", "1:00AM", "--retain", "hourly=3"], "'hourly' is not a policy type"),
        (["--daily", "1:00AM", "--retain", "3,4"], "more than one value for all types"),
        (["--daily", "1:00AM", "--expire-after", "7 days"], "'7 days' is not a duration"),
        (["--daily", "1:00AM", "--time-zone", "Europe/Atlantis"], "unknown time zone 'Europe/Atlantis'"),
    ],
)
def test_bad_policy_flags_are_usage_errors_before_the_cluster_is_reached(flags: list[str], says: str) -> None:
    result = invoke("policy", "create", "nightly", *flags)
    assert result.exit_code == 2, result.output
    assert says in " ".join(result.output.split()), result.output
    assert len(result.output.strip().splitlines()) == 1, "one line, no usage block"


# --- schedule flags ------------------------------------------------------------------------------


def test_a_schedule_backs_up_what_backup_create_would_and_carries_its_own_reclaim_policy() -> None:
    flags: dict[str, Any] = {
        "namespaces": "shop,web",
        "selector": "app=web",
        "resource_types": "ConfigMap,Deployment",
        "ttl": "72h",
    }
    spec = schedule.build_spec("shop", "nightly", "loc", reclaim_policy="Delete", suspend=True, **flags)
    assert spec == {
        "schedulePolicyName": "nightly",
        "suspend": True,
        "reclaimPolicy": "Delete",
        "template": {"spec": backup.build_spec("shop", "loc", **flags)},
    }
    assert spec["template"]["spec"]["namespaces"] == ["shop", "web"]
    assert "reclaimPolicy" not in spec["template"]["spec"], "the watcher sets the schedule's on each backup"
    ApplicationBackupScheduleSpec.model_validate(spec)
    # Without flags: the schedule's own namespace, not suspended, the backups' reclaim policy their default.
    assert schedule.build_spec("shop", "nightly", "loc") == {
        "schedulePolicyName": "nightly",
        "suspend": False,
        "template": {"spec": {"backupLocation": "loc", "namespaces": ["shop"]}},
    }


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--location", "loc"], "Missing option '--policy'"),
        (["--policy", "nightly"], "Missing option '--location'"),
        (
            ["--policy", "Nightly", "--location", "loc"],
            "--policy: schedulePolicyName: 'Nightly' is not a valid name",
        ),
        (
            ["--policy", "p", "--location", "loc", "--namespaces", "Shop"],
            "--namespaces: template.spec.namespaces.0",
        ),
        (["--policy", "p", "--location", "loc", "--selector", "app"], "'app' is not key=value"),
        (["--policy", "p", "--location", "loc", "--ttl", "3 days"], "'3 days' is not a duration"),
        (["--policy", "p", "--location", "loc", "--reclaim-policy", "Keep"], "'Keep' is not one of"),
    ],
)
def test_bad_schedule_flags_are_usage_errors_before_the_cluster_is_reached(
    flags: list[str], says: str
) -> None:
    result = invoke("schedule", "create", "shop-nightly", *flags)
    assert result.exit_code == 2, result.output
    assert says in " ".join(result.output.split()), result.output


def test_a_refused_field_names_its_flag_and_says_what_the_pattern_means() -> None:
    with pytest.raises(click.BadParameter) as refused:
        check_model(ApplicationBackupScheduleSpec, {"schedulePolicyName": "p", "template": {"spec": {
            "backupLocation": "loc", "ttl": "soon"}}}, {"ttl": "--ttl"})  # fmt: skip
    assert refused.value.param_hint == "--ttl"
    assert refused.value.message == "template.spec.ttl: 'soon' is not a duration such as 72h, 30d or 1h30m"


# --- tables --------------------------------------------------------------------------------------


def test_policy_table_lists_the_types_in_order_and_the_time_zone() -> None:
    objs = [policy_object(EVERY_TYPE), policy_object({"daily": {"time": "1:00AM"}}, name="plain")]
    lines = output.policy_table(objs, NOW, True).splitlines()
    assert lines[0].split() == ["NAME", "TYPES", "TIMEZONE", "AGE"], "cluster-scoped: no NAMESPACE with -A"
    assert lines[1].split() == ["nightly", "interval,daily,weekly,monthly,cron", "Europe/Berlin", "24h"]
    assert lines[2].split() == ["plain", "daily", "UTC", "24h"]


def test_schedule_table_shows_policy_suspension_and_last_success_as_ages() -> None:
    done = schedule_object(lastSuccessTime="2019-09-11T22:05:30Z")
    never = schedule_object(name="paused", spec={**done["spec"], "suspend": True})
    never["status"] = {}
    text = output.schedule_table([done, never], NOW, False)
    assert [re.split(r" {3,}", line) for line in text.splitlines()] == [
        ["NAME", "POLICY", "SUSPENDED", "LAST SUCCESS", "AGE"],
        ["shop-nightly", "nightly", "false", "10m", "120m"],
        ["paused", "nightly", "true", "<none>", "120m"],
    ]
    assert output.schedule_table([done], NOW, True).splitlines()[1].split()[:2] == ["shop", "shop-nightly"]


# --- describe ------------------------------------------------------------------------------------


def entry_rows(text: str, section: str) -> dict[str, list[str]]:
    """The rows of a describe section's table, by their first cell."""
    lines = text.splitlines()
    start = lines.index(f"{section}:") + 2
    rows: dict[str, list[str]] = {}
    for line in lines[start:]:
        if not line.startswith("  "):
            break
        cells = re.split(r" {3,}", line.strip())
        rows[cells[0]] = cells
    return rows


def test_policy_describe_shows_each_entry_with_its_next_trigger_on_the_policy_clock() -> None:
    text = output.describe_policy(policy_object(EVERY_TYPE), [], NOW)
    assert re.search(r"^Time Zone:\s+Europe/Berlin$", text, re.M), text
    assert "Namespace:" not in text, "a SchedulePolicy is cluster-scoped"
    rows = entry_rows(text, "Entries")
    assert rows == {
        "interval": ["interval", "every 30m", "4", "-", "-", "2019-09-12T00:30:00+02:00 (in 14m)"],
        "daily": ["daily", "every day at 10:14PM", "7", "168h", "2", "2019-09-12T22:14:00+02:00 (in 21h)"],
        "weekly": ["weekly", "Sunday at 10:14PM", "-", "-", "-", "2019-09-15T22:14:00+02:00 (in 3d21h)"],
        "monthly": ["monthly", "day 15 at 1:05AM", "-", "-", "-", "2019-09-15T01:05:00+02:00 (in 3d)"],
        "cron": ["cron", "*/15 * * * *", "-", "-", "-", "2019-09-12T00:30:00+02:00 (in 14m)"],
    }
    assert text.endswith("Events:  <none>")


def test_policy_describe_shows_an_entry_that_never_fires_and_the_others() -> None:
    body = {"daily": {"time": "1:00AM"}, "cron": {"schedule": "0 0 30 2 *"}}
    rows = entry_rows(output.describe_policy(policy_object(body), [], NOW), "Entries")
    assert rows["daily"][-1] == "2019-09-12T01:00:00+00:00 (in 164m)", "UTC without a time zone"
    assert rows["cron"][-1] == "never: cron schedule '0 0 30 2 *' matches no date"


SCHEDULED = {
    "daily": [
        {"name": "shop-nightly-daily-2019-09-10-201400", "status": "Successful",
         "creationTimestamp": "2019-09-10T20:14:00Z", "finishTimestamp": "2019-09-10T20:15:10Z"},
        {"name": "shop-nightly-daily-2019-09-11-201400", "status": "Failed",
         "creationTimestamp": "2019-09-11T20:14:00Z", "finishTimestamp": "2019-09-11T20:14:40Z"},
    ],
    "weekly": [{"name": "shop-nightly-weekly-2019-09-08-201400", "status": "InProgress",
                "creationTimestamp": "2019-09-08T20:14:00Z"}],
}  # fmt: skip


def test_schedule_describe_shows_each_policy_type_its_backups_and_next_trigger() -> None:
    obj = schedule_object(
        items=copy.deepcopy(SCHEDULED),
        lastSuccessfulBackup="shop-nightly-daily-2019-09-10-201400",
        lastSuccessTime="2019-09-10T20:15:10Z",
        lastSuccessDuration="1m10s",
        nextTrigger={"daily": "2019-09-12T20:14:00Z"},
        conditions=[{"type": "PolicyFound", "status": "True", "reason": "Found",
                     "message": "SchedulePolicy nightly", "lastTransitionTime": "2019-09-11T20:15:31Z"}],
    )  # fmt: skip
    body = {"timeZone": "Europe/Berlin", "daily": {"time": "10:14PM", "retain": 7}}
    text = output.describe_schedule(obj, policy_object(body), [], NOW)
    assert re.search(r"^  Schedule Policy Name:\s+nightly$", text, re.M), text
    assert re.search(r"^      Selectors:\s+app=web$", text, re.M), "the backups' spec, as the flags take it"
    assert re.search(r"^  Last Success Time:\s+10 Sep 19 20:15 UTC \(26h ago\)$", text, re.M), text
    assert "Next Trigger" not in text, "the watcher's copy is not shown beside the fresh one"
    types = entry_rows(text, "Policy Types")
    assert types["daily"] == ["daily", "every day at 10:14PM", "2", "10 Sep 19 20:15 UTC",
                              "2019-09-12T22:14:00+02:00 (in 21h)"]  # fmt: skip
    assert types["weekly"] == ["weekly", "not in the policy", "1", "<none>", "-"]
    backups = entry_rows(text, "Backups")
    # One row a backup (``entry_rows`` keeps the last of a type).
    assert backups["daily"][1:] == ["shop-nightly-daily-2019-09-11-201400", "Failed", "11 Sep 19 20:14 UTC",
                                    "11 Sep 19 20:14 UTC"]  # fmt: skip
    assert re.search(r"^  daily\s+shop-nightly-daily-2019-09-10-201400\s+Successful\s", text, re.M)
    assert backups["weekly"][1:] == [
        "shop-nightly-weekly-2019-09-08-201400",
        "InProgress",
        "08 Sep 19 20:14 UTC",
        "-",
    ]
    assert re.search(r"^  PolicyFound\s+True\s+Found", text, re.M)


def test_schedule_describe_of_a_suspended_schedule_names_no_trigger() -> None:
    obj = schedule_object()
    obj["spec"]["suspend"] = True
    body = {"daily": {"time": "10:14PM"}}
    types = entry_rows(output.describe_schedule(obj, policy_object(body), [], NOW), "Policy Types")
    assert types["daily"][-1] == "none (suspended)"


def test_schedule_describe_says_when_its_policy_does_not_exist() -> None:
    text = output.describe_schedule(schedule_object(), None, [], NOW)
    assert "Policy Types:\n  SchedulePolicy nightly not found: nothing is scheduled" in text
    assert "Backups:\n  <none>" in text
