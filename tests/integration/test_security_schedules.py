"""A tenant's bad schedules cannot stop another tenant's schedules.

The watcher fires every schedule of the cluster in one loop. A tenant who may only write Davit resources
in its own namespace tries to break that loop for everyone: a schedule with a 253-character name (which
went into a 63-character label value), a schedule whose backup ``ttl`` is the right shape but too long
for any date, one naming a policy whose ``expireAfter`` is the same, and one whose backups the API server
refuses (a quota). Each bad schedule gets its own condition and Warning Event, the long name works, and
another tenant's schedule in another namespace keeps firing, all checked by listing the cluster.
"""

from __future__ import annotations

import functools
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from davit import labels
from davit.api.types import DNS1123_SUBDOMAIN
from tests.conftest import StackEnv
from tests.helpers import wait_for
from tests.integration.conftest import Services
from tests.integration.test_backup_resources import apply, location_manifest

pytestmark = pytest.mark.integration

TICK = {"DAVIT_SCHEDULE_TICK_SECONDS": "1"}
SCHEDULE_LABEL = "davit.dev/schedule"
#: A schedule name as long as the API server takes: a DNS-1123 subdomain of 253 characters.
LONG_NAME = "nightly-" + "x" * 120 + "." + "y" * 124


def tenant_role(stack: StackEnv, namespace: str, user: str) -> None:
    """``user`` may write Davit's namespaced resources and read Events in ``namespace``, nothing else."""
    rules = [
        {
            "apiGroups": ["davit.dev"],
            "verbs": ["*"],
            "resources": ["applicationbackupschedules", "applicationbackups", "backuplocations"],
        },
        {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list"]},
    ]
    apply(
        stack,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "davit-tenant", "namespace": namespace},
            "rules": rules,
        },
    )
    apply(
        stack,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "davit-tenant", "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "davit-tenant"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        },
    )


def as_tenant(stack: StackEnv, user: str, *args: str, stdin: str | None = None, check: bool = True) -> Any:
    return stack.kubectl(f"--as={user}", *args, stdin=stdin, check=check)


def schedule_manifest(namespace: str, name: str, policy: str, **template: Any) -> dict[str, Any]:
    return {
        "apiVersion": "davit.dev/v1alpha1",
        "kind": "ApplicationBackupSchedule",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "schedulePolicyName": policy,
            "template": {"spec": {"backupLocation": "loc", "namespaces": [namespace], **template}},
        },
    }


def get_json(stack: StackEnv, user: str, namespace: str, *what: str) -> Any:
    return json.loads(as_tenant(stack, user, "-n", namespace, "get", *what, "-o", "json").stdout)


def condition(stack: StackEnv, user: str, namespace: str, name: str, kind: str) -> dict[str, Any] | None:
    schedule = get_json(stack, user, namespace, "applicationbackupschedule", name)
    conditions = (schedule.get("status") or {}).get("conditions") or []
    found: dict[str, Any] | None = next((c for c in conditions if c["type"] == kind), None)
    return found


def warnings(stack: StackEnv, user: str, namespace: str, name: str) -> list[dict[str, Any]]:
    selector = f"involvedObject.name={name},type=Warning"
    items: list[dict[str, Any]] = get_json(stack, user, namespace, "events", "--field-selector", selector)[
        "items"
    ]
    return items


def all_backups(stack: StackEnv) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(
        stack.kubectl("get", "applicationbackups", "--all-namespaces", "-o", "json").stdout
    )["items"]
    return items


@pytest.fixture
def attacker_namespaces(stack: StackEnv) -> Iterator[tuple[str, str]]:
    """Two namespaces of the attacking tenant, named to come before ``namespace`` (``t-…``) in the
    watcher's list: the loop meets the bad schedules before the healthy one."""
    suffix = uuid.uuid4().hex[:8]
    names = (f"a-{suffix}", f"b-{suffix}")
    for name in names:
        stack.kubectl("create", "namespace", name)
    yield names
    for name in names:
        stack.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_the_api_server_refuses_numbers_and_durations_out_of_bounds(stack: StackEnv, namespace: str) -> None:
    tenant_role(stack, namespace, "tenant-bounds")
    policy = {"apiVersion": "davit.dev/v1alpha1", "kind": "SchedulePolicy", "metadata": {"name": "p"}}
    cases = [
        (
            {**policy, "policy": {"interval": {"intervalMinutes": 10**15}}},
            "policy.interval.intervalMinutes: Invalid value",
            "less than or equal to 527040",
        ),
        (
            {**policy, "policy": {"interval": {"intervalMinutes": 1, "retain": 10**9}}},
            "policy.interval.retain: Invalid value",
            "less than or equal to 10000",
        ),
        (
            {**policy, "policy": {"daily": {"time": "1:00AM", "minRetain": 10**9}}},
            "policy.daily.minRetain: Invalid value",
            "less than or equal to 10000",
        ),
        (
            {**policy, "policy": {"daily": {"time": "1:00AM", "expireAfter": "9" * 40 + "w"}}},
            "policy.daily.expireAfter: Invalid value",
            "at most 32",
        ),
    ]
    for manifest, field, problem in cases:
        refused = stack.kubectl(
            "apply", "--dry-run=server", "-f", "-", stdin=json.dumps(manifest), check=False
        )
        assert refused.returncode != 0 and field in refused.stderr and problem in refused.stderr, (
            refused.stderr
        )
    # The tenant's own schedule, with a ttl of 41 characters.
    schedule = schedule_manifest(namespace, "huge-ttl", "p", ttl="9" * 40 + "w")
    refused = as_tenant(stack, "tenant-bounds", "apply", "-f", "-", stdin=json.dumps(schedule), check=False)
    assert refused.returncode != 0, refused.stdout
    assert "spec.template.spec.ttl in body should be at most 32 chars long" in refused.stderr, refused.stderr
    listed = get_json(stack, "tenant-bounds", namespace, "applicationbackupschedules")["items"]
    assert listed == []
    assert stack.kubectl("get", "schedulepolicy", "p", check=False).returncode != 0


@pytest.mark.timeout(600)  # real minutes: two of the healthy schedule's slots, on a busy machine
def test_bad_schedules_get_their_condition_and_another_tenants_schedule_fires(
    stack: StackEnv,
    namespace: str,
    attacker_namespaces: tuple[str, str],
    stack_services: Any,
    tmp_path: Path,
) -> None:
    services: Services = stack_services(**TICK)
    attacker, quota_ns = attacker_namespaces
    healthy_ns = namespace
    suffix = uuid.uuid4().hex[:6]
    every_minute, overflowing = f"every-minute-{suffix}", f"overflowing-{suffix}"
    # Policies are cluster-scoped, written by the administrator; the second is one the CRD accepts (the
    # pattern and length fit) but whose expireAfter, 999999 weeks, no date can hold.
    apply(
        stack,
        {
            "apiVersion": "davit.dev/v1alpha1",
            "kind": "SchedulePolicy",
            "metadata": {"name": every_minute},
            "policy": {"interval": {"intervalMinutes": 1}},
        },
    )
    apply(
        stack,
        {
            "apiVersion": "davit.dev/v1alpha1",
            "kind": "SchedulePolicy",
            "metadata": {"name": overflowing},
            "policy": {"interval": {"intervalMinutes": 1, "expireAfter": "999999w"}},
        },
    )
    try:
        for ns, user in ((attacker, "tenant-a"), (quota_ns, "tenant-a"), (healthy_ns, "tenant-b")):
            tenant_role(stack, ns, user)
            apply(stack, location_manifest(stack, "s3", ns, tmp_path))
        # A quota of no backups: the API server refuses every backup this namespace's schedule makes.
        apply(
            stack,
            {
                "apiVersion": "v1",
                "kind": "ResourceQuota",
                "metadata": {"name": "no-backups", "namespace": quota_ns},
                "spec": {"hard": {"count/applicationbackups.davit.dev": "0"}},
            },
        )

        bad = {
            "ttl-overflow": schedule_manifest(attacker, "ttl-overflow", every_minute, ttl="999999w"),
            "policy-overflow": schedule_manifest(attacker, "policy-overflow", overflowing),
            "over-quota": schedule_manifest(quota_ns, "over-quota", every_minute),
        }
        for manifest in (*bad.values(), schedule_manifest(attacker, LONG_NAME, every_minute)):
            as_tenant(stack, "tenant-a", "apply", "-f", "-", stdin=json.dumps(manifest))
        as_tenant(
            stack,
            "tenant-b",
            "apply",
            "-f",
            "-",
            stdin=json.dumps(schedule_manifest(healthy_ns, "healthy", every_minute)),
        )

        # The other tenant's schedule fires at its next slot, however the bad ones fare.
        def fired(ns: str, user: str, name: str) -> list[dict[str, Any]]:
            selector = labels.selector(SCHEDULE_LABEL, name)
            items: list[dict[str, Any]] = get_json(stack, user, ns, "applicationbackups", "-l", selector)[
                "items"
            ]
            return items

        healthy = wait_for(
            "the healthy schedule's backup", lambda: fired(healthy_ns, "tenant-b", "healthy"), timeout=150
        )
        assert healthy[0]["metadata"]["name"].startswith("healthy-interval-")

        # The 253-character name works: its backup is labelled with a short value, the schedule finds it.
        long_backups = wait_for(
            "the long-named schedule's backup", lambda: fired(attacker, "tenant-a", LONG_NAME), timeout=120
        )
        backup_meta = long_backups[0]["metadata"]
        assert len(backup_meta["labels"][SCHEDULE_LABEL]) <= 63
        assert backup_meta["labels"][SCHEDULE_LABEL] == labels.label_value(LONG_NAME)
        assert len(backup_meta["name"]) <= 253, backup_meta["name"]
        assert re.fullmatch(DNS1123_SUBDOMAIN, backup_meta["name"]), backup_meta["name"]
        assert re.fullmatch(
            r"nightly-x+\.y+-[0-9a-f]{10}-interval-\d{4}-\d\d-\d\d-\d{6}", backup_meta["name"]
        )

        def listed_in_status() -> bool:
            status = get_json(stack, "tenant-a", attacker, "applicationbackupschedule", LONG_NAME).get(
                "status"
            )
            items = ((status or {}).get("items") or {}).get("interval") or []
            return backup_meta["name"] in [i["name"] for i in items]

        wait_for("the long-named schedule to list its backup", listed_in_status, timeout=60)
        triggered = get_json(
            stack,
            "tenant-a",
            attacker,
            "events",
            "--field-selector",
            f"involvedObject.name={LONG_NAME},reason=Triggered",
        )["items"]
        assert triggered, "a schedule with a 253-character name gets its Events"

        # Each bad schedule says what is wrong, where the tenant looks, and warns once.
        expected = {
            "ttl-overflow": (
                attacker,
                "Scheduling",
                "TemplateInvalid",
                "template.spec.ttl: duration 999999w is longer than 100 years",
            ),
            "policy-overflow": (
                attacker,
                "PolicyFound",
                "PolicyInvalid",
                "interval.expireAfter: duration 999999w is longer than 100 years",
            ),
            "over-quota": (quota_ns, "Scheduling", "SchedulingFailed", "the API server answered 403"),
        }
        for name, (ns, kind, reason, words) in expected.items():
            found = wait_for(
                f"the {kind} condition of {name}",
                functools.partial(condition, stack, "tenant-a", ns, name, kind),
                timeout=60,
            )
            assert (found["status"], found["reason"]) == ("False", reason), found
            assert words in found["message"], found
            events = wait_for(
                f"the Warning Event of {name}",
                functools.partial(warnings, stack, "tenant-a", ns, name),
                timeout=60,
            )
            assert [e["reason"] for e in events] == [reason], events
            assert words in events[0]["message"]
        assert "quota" in warnings(stack, "tenant-a", quota_ns, "over-quota")[0]["message"]
        # A second slot passes: the healthy schedule fires again, the warnings are not repeated.
        wait_for(
            "a second healthy backup", lambda: len(fired(healthy_ns, "tenant-b", "healthy")) >= 2, timeout=150
        )
        for name, (ns, _, reason, _) in expected.items():
            assert [e["reason"] for e in warnings(stack, "tenant-a", ns, name)] == [reason]
    except AssertionError:
        print(services.logs())
        raise
    finally:
        for policy in (every_minute, overflowing):
            stack.kubectl("delete", "schedulepolicy", policy, "--wait=false", check=False)

    # Listing the cluster: the bad schedules made no backup at all, the long-named one only in its own
    # namespace, and the healthy namespace holds only its own schedule's backups.
    by_namespace: dict[str, list[str]] = {}
    for backup in all_backups(stack):
        meta = backup["metadata"]
        if meta["namespace"] in (attacker, quota_ns, healthy_ns):
            by_namespace.setdefault(meta["namespace"], []).append(meta["labels"][SCHEDULE_LABEL])
    assert set(by_namespace[attacker]) == {labels.label_value(LONG_NAME)}, by_namespace
    assert quota_ns not in by_namespace
    assert set(by_namespace[healthy_ns]) == {"healthy"}
