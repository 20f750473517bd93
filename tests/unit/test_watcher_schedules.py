"""The watcher's schedule planner (pure): exactly one backup per slot, one catch-up after downtime,
nothing while suspended or without a policy, and the status a user reads."""

from __future__ import annotations

import datetime
import json
import re
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from davit import labels
from davit_services.watcher.schedules import (
    SchedulePlan,
    Scheduler,
    backup_for,
    describe_error,
    failure_plan,
    plan_schedule,
    template_problem,
)

UTC = datetime.UTC


def at(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=UTC)


def schedule(created: str = "2026-11-21T10:00:30Z", status: dict[str, Any] | None = None,
             suspend: bool = False, name: str = "nightly", **template: Any) -> dict[str, Any]:  # fmt: skip
    return {
        "metadata": {"name": name, "namespace": "shop", "uid": "u1", "creationTimestamp": created},
        "spec": {"schedulePolicyName": "every-minute", "suspend": suspend, "reclaimPolicy": "Delete",
                 "template": {"spec": {"backupLocation": "loc", "namespaces": ["shop"], **template}}},
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


LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def condition(plan: Any, kind: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in plan.status["conditions"] if c["type"] == kind)
    return found


def test_a_healthy_schedule_says_it_is_scheduling() -> None:
    plan = plan_schedule(schedule(), POLICY, [], at("2026-11-21T10:01:05"))
    assert (condition(plan, "Scheduling")["status"], condition(plan, "Scheduling")["reason"]) == (
        "True",
        "Scheduled",
    )


def test_a_253_character_schedule_labels_its_backups_with_a_short_value() -> None:
    long = "s" * 120 + "." + "t" * 132
    assert len(long) == 253
    plan = plan_schedule(schedule(name=long), POLICY, [], at("2026-11-21T10:01:05"))
    backup = backup_for(schedule(name=long), plan.fire[0])
    value = backup["metadata"]["labels"]["davit.dev/schedule"]
    assert value == labels.label_value(long) and len(value) <= 63 and LABEL_VALUE.match(value)
    assert len(backup["metadata"]["name"]) <= 253
    assert backup["metadata"]["name"].endswith("-interval-2026-11-21-100100")


@pytest.mark.parametrize(
    ("policy", "problem"),
    [
        ({"interval": {"intervalMinutes": 10**15}}, "interval.intervalMinutes: Input should be less than"),
        ({"interval": {"intervalMinutes": 1, "expireAfter": "999999w"}}, "interval.expireAfter: duration"),
        ({"interval": {"intervalMinutes": 1, "retain": 10**30}}, "interval.retain: Input should be less"),
    ],
)
def test_a_policy_with_values_it_cannot_compute_with_is_invalid_not_a_crash(
    policy: dict[str, Any], problem: str
) -> None:
    # What a policy stored before the CRD bounded these (or one the CRD's pattern lets through) holds.
    bad = {"metadata": {"name": "every-minute"}, "policy": policy}
    plan = plan_schedule(schedule(), bad, [], at("2026-11-21T10:05:00"))
    found = condition(plan, "PolicyFound")
    assert plan.fire == [] and (found["status"], found["reason"]) == ("False", "PolicyInvalid")
    assert problem in found["message"], found["message"]
    assert "\n" not in found["message"] and "errors.pydantic.dev" not in found["message"]
    assert plan.event is not None and plan.event[0] == "PolicyInvalid"


def test_a_template_ttl_it_cannot_compute_with_stops_only_this_schedule_with_one_warning() -> None:
    bad = schedule(ttl="999999w")
    assert template_problem(bad["spec"]) is not None
    assert template_problem(schedule(ttl="72h")["spec"]) is None
    plan = plan_schedule(bad, POLICY, [], at("2026-11-21T10:01:05"))
    found = condition(plan, "Scheduling")
    assert plan.fire == [] and (found["status"], found["reason"]) == ("False", "TemplateInvalid")
    assert "template.spec.ttl: duration 999999w is longer than 100 years" in found["message"]
    assert plan.event == ("TemplateInvalid", found["message"])
    assert condition(plan, "PolicyFound")["status"] == "True"
    later = plan_schedule(schedule(status=plan.status, ttl="999999w"), POLICY, [], at("2026-11-21T10:02:05"))
    assert later.event is None and later.fire == []
    fixed = plan_schedule(schedule(status=later.status, ttl="72h"), POLICY, [], at("2026-11-21T10:03:05"))
    assert [f.name for f in fixed.fire] == ["nightly-interval-2026-11-21-100300"]
    assert condition(fixed, "Scheduling")["status"] == "True"


def test_a_failure_while_firing_is_a_condition_and_one_warning() -> None:
    now = at("2026-11-21T10:01:05")
    first = failure_plan(schedule(), "the API server answered 403: exceeded quota", now)
    found = condition(first, "Scheduling")
    assert (found["status"], found["reason"]) == ("False", "SchedulingFailed")
    assert found["message"] == "the API server answered 403: exceeded quota"
    assert first.event == ("SchedulingFailed", "the API server answered 403: exceeded quota")
    again = failure_plan(schedule(status=first.status), "the API server answered 403: exceeded quota", now)
    assert again.event is None, "the warning is given once, when firing starts to fail"
    assert condition(again, "Scheduling")["lastTransitionTime"] == found["lastTransitionTime"]
    # Once firing works again, the condition says so.
    healed = plan_schedule(schedule(status=first.status), POLICY, [], now)
    assert condition(healed, "Scheduling")["status"] == "True" and healed.fire


def test_errors_are_described_by_what_the_api_server_said() -> None:
    refused = ApiException(status=403, reason="Forbidden")
    refused.body = json.dumps({"kind": "Status", "message": "exceeded quota: q, requested: count=1"})
    assert describe_error(refused) == "the API server answered 403: exceeded quota: q, requested: count=1"
    bare = ApiException(status=500, reason="Internal Server Error")
    assert describe_error(bare) == "the API server answered 500: Internal Server Error"
    assert (
        describe_error(OverflowError("date value out of range")) == "OverflowError: date value out of range"
    )
    assert len(describe_error(ValueError("x" * 5000))) == 512


def _finished(name: str, state: str, minute: int, **metadata: Any) -> dict[str, Any]:
    """An interval backup of ``nightly`` made at 10:``minute`` and finished ten seconds later."""
    made = f"2026-11-21T10:{minute:02d}"
    return {
        "metadata": {"name": name, "uid": f"uid-{name}", "creationTimestamp": f"{made}:00Z",
                     "labels": {"davit.dev/policy-type": "interval"}, **metadata},
        "status": {"stage": "Final", "status": state, "finishTimestamp": f"{made}:10Z"},
    }  # fmt: skip


def test_the_plan_names_what_retention_would_delete_now() -> None:
    two = [_finished("b1", "Successful", 1), _finished("b2", "Successful", 2)]
    now = at("2026-11-21T10:03:30")
    assert plan_schedule(schedule(), POLICY, two, now).retention_due == ()  # retain 2 keeps both

    three = [*two, _finished("b3", "Successful", 3)]
    assert plan_schedule(schedule(), POLICY, three, now).retention_due == ("b1",)
    # One already being deleted is not asked for again.
    three[0]["metadata"]["deletionTimestamp"] = "2026-11-21T10:03:20Z"
    assert plan_schedule(schedule(), POLICY, three, now).retention_due == ()
    # Without its policy nothing says what to keep: nothing is due.
    assert plan_schedule(schedule(), None, [*two, _finished("b3", "Successful", 3)], now).retention_due == ()


def test_an_expiry_is_due_from_the_instant_it_passes() -> None:
    entry = {"intervalMinutes": 1, "expireAfter": "1h", "minRetain": 1}
    policy = {"metadata": {"name": "every-minute"}, "policy": {"interval": entry}}
    backups = [_finished("b1", "Successful", 1), _finished("b2", "Successful", 2)]
    assert plan_schedule(schedule(), policy, backups, at("2026-11-21T11:01:10")).retention_due == ()
    assert plan_schedule(schedule(), policy, backups, at("2026-11-21T11:01:11")).retention_due == ("b1",)


class _Broker:
    """Stands in for the Celery app: records what would be queued."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def send_task(self, name: str, args: list[bytes], task_id: str, queue: str, routing_key: str) -> None:
        self.sent.append((queue, task_id))


def test_retention_is_asked_when_something_is_due_then_once_a_minute() -> None:
    broker = _Broker()
    scheduler = Scheduler(api=None, celery=broker, tick_seconds=1)
    nightly = schedule()
    due, later = SchedulePlan(retention_due=("b1",)), SchedulePlan(retention_due=("b1", "b2"))

    scheduler.ask_retention(nightly, SchedulePlan(), at("2026-11-21T10:03:01"))
    assert broker.sent == []  # nothing to delete, nothing asked
    for second in (2, 3, 4):
        scheduler.ask_retention(nightly, due, at(f"2026-11-21T10:03:0{second}"))
    assert broker.sent == [("davit.retention", "u1:Retain:202611211003")]
    scheduler.ask_retention(nightly, later, at("2026-11-21T10:03:05"))  # more is due: at once
    scheduler.ask_retention(nightly, later, at("2026-11-21T10:04:00"))  # still due a minute on
    assert [key for _, key in broker.sent] == ["u1:Retain:202611211003"] * 2 + ["u1:Retain:202611211004"]
