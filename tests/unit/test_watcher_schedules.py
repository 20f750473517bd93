"""The watcher's schedule planner (pure): exactly one backup per slot, one catch-up after downtime,
nothing while suspended or without a policy, and the status a user reads."""

from __future__ import annotations

import datetime
from typing import Any

from davit_services.watcher.schedules import backup_for, plan_schedule

UTC = datetime.UTC


def at(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=UTC)


def schedule(created: str = "2026-11-21T10:00:30Z", status: dict[str, Any] | None = None,
             suspend: bool = False) -> dict[str, Any]:  # fmt: skip
    return {
        "metadata": {"name": "nightly", "namespace": "shop", "uid": "u1", "creationTimestamp": created},
        "spec": {"schedulePolicyName": "every-minute", "suspend": suspend, "reclaimPolicy": "Delete",
                 "template": {"spec": {"backupLocation": "loc", "namespaces": ["shop"]}}},
        "status": status or {},
    }  # fmt: skip


POLICY = {"metadata": {"name": "every-minute"}, "policy": {"interval": {"intervalMinutes": 1, "retain": 2}}}


def test_a_due_slot_fires_once_named_after_the_slot() -> None:
    plan = plan_schedule(schedule(), POLICY, [], at("2026-11-21T10:01:05"))
    assert [(f.policy_type, f.name) for f in plan.fire] == [
        ("interval", "nightly-interval-2026-11-21-100100")
    ]
    assert plan.status["lastTriggered"] == {"interval": "2026-11-21T10:01:00Z"}
    assert plan.status["nextTrigger"] == {"interval": "2026-11-21T10:02:00Z"}
    assert plan.status["conditions"][0]["status"] == "True"

    again = plan_schedule(schedule(status=plan.status), POLICY, [], at("2026-11-21T10:01:50"))
    assert again.fire == []


def test_after_downtime_only_the_latest_slot_fires() -> None:
    status = {"lastTriggered": {"interval": "2026-11-21T10:01:00Z"}}
    plan = plan_schedule(schedule(status=status), POLICY, [], at("2026-11-21T10:07:20"))
    assert [f.name for f in plan.fire] == ["nightly-interval-2026-11-21-100700"]


def test_no_slot_from_before_the_schedule_existed_and_none_while_suspended() -> None:
    assert (
        plan_schedule(schedule(created="2026-11-21T10:00:30Z"), POLICY, [], at("2026-11-21T10:00:50")).fire
        == []
    )
    suspended = plan_schedule(schedule(suspend=True), POLICY, [], at("2026-11-21T10:03:05"))
    assert suspended.fire == [] and suspended.status["nextTrigger"] is None


def test_a_missing_policy_is_a_condition_and_one_warning() -> None:
    plan = plan_schedule(schedule(), None, [], at("2026-11-21T10:05:00"))
    assert plan.fire == []
    condition = plan.status["conditions"][0]
    assert (condition["status"], condition["reason"]) == ("False", "PolicyMissing")
    assert "every-minute" in condition["message"]
    assert plan.event is not None and plan.event[0] == "PolicyMissing"
    later = plan_schedule(schedule(status=plan.status), None, [], at("2026-11-21T10:06:00"))
    assert later.event is None, "the warning is given once, when the policy goes missing"
    assert later.status["conditions"][0]["lastTransitionTime"] == condition["lastTransitionTime"]


def test_an_unparsable_policy_says_why() -> None:
    bad = {"metadata": {"name": "every-minute"}, "policy": {"daily": {"time": "25:00PM"}}}
    plan = plan_schedule(schedule(), bad, [], at("2026-11-21T10:05:00"))
    assert plan.fire == [] and plan.status["conditions"][0]["reason"] == "PolicyInvalid"


def test_status_lists_backups_per_type_and_the_last_success() -> None:
    def backup(name: str, state: str, created: str, finished: str | None) -> dict[str, Any]:
        status = {"status": state, "triggerTimestamp": created}
        if finished:
            status["finishTimestamp"] = finished
        return {"metadata": {"name": name, "creationTimestamp": created,
                             "labels": {"davit.dev/policy-type": "interval"}}, "status": status}  # fmt: skip

    backups = [
        backup("b2", "Failed", "2026-11-21T10:02:00Z", "2026-11-21T10:02:09Z"),
        backup("b1", "Successful", "2026-11-21T10:01:00Z", "2026-11-21T10:01:12Z"),
    ]
    plan = plan_schedule(schedule(), POLICY, backups, at("2026-11-21T10:02:30"))
    assert [i["name"] for i in plan.status["items"]["interval"]] == ["b1", "b2"]
    assert plan.status["lastSuccessfulBackup"] == "b1"
    assert plan.status["lastSuccessTime"] == "2026-11-21T10:01:12Z"
    assert plan.status["lastSuccessDuration"] == "12s"


def test_the_backup_a_slot_fires() -> None:
    plan = plan_schedule(schedule(), POLICY, [], at("2026-11-21T10:01:05"))
    backup = backup_for(schedule(), plan.fire[0])
    assert backup["metadata"]["labels"] == {
        "davit.dev/schedule": "nightly",
        "davit.dev/policy-type": "interval",
    }
    assert backup["spec"] == {"backupLocation": "loc", "namespaces": ["shop"], "reclaimPolicy": "Delete"}
