"""Leader election's pure part: what a candidate does, given the Lease it read."""

from __future__ import annotations

from typing import Any

import pytest

from davit_services.watcher.leader import Action, LeaseRecord, decide

ME = "watcher-a-1234"
THEM = "watcher-b-5678"


def record(holder: str, duration: float = 15.0) -> LeaseRecord:
    return LeaseRecord(
        holder=holder,
        duration_seconds=duration,
        renew_time="2024-05-01T12:00:00.000000Z",
        acquire_time="2024-05-01T11:00:00.000000Z",
        transitions=3,
        resource_version="42",
    )


@pytest.mark.parametrize(
    ("lease", "unchanged_for", "action"),
    [
        pytest.param(None, 0.0, Action.ACQUIRE, id="no-lease"),
        pytest.param(None, 1e9, Action.ACQUIRE, id="no-lease-long-ago"),
        pytest.param(record(""), 0.0, Action.ACQUIRE, id="released-empty-holder"),
        pytest.param(record(ME), 0.0, Action.RENEW, id="own-fresh"),
        pytest.param(record(ME), 1e6, Action.RENEW, id="own-even-if-unchanged-long"),
        pytest.param(record(THEM), 0.0, Action.WAIT, id="other-just-seen"),
        pytest.param(record(THEM), 14.999, Action.WAIT, id="other-just-before-expiry"),
        pytest.param(record(THEM), 15.0, Action.ACQUIRE, id="other-at-expiry"),
        pytest.param(record(THEM), 60.0, Action.ACQUIRE, id="other-long-expired"),
        pytest.param(record(THEM, duration=60.0), 30.0, Action.WAIT, id="other-longer-duration"),
        pytest.param(record(THEM, duration=0.0), 0.0, Action.ACQUIRE, id="other-zero-duration"),
        pytest.param(record(ME.upper()), 0.0, Action.WAIT, id="identity-is-case-sensitive"),
        pytest.param(record(ME + "-old"), 0.0, Action.WAIT, id="prefix-is-not-identity"),
    ],
)
def test_decide(lease: LeaseRecord | None, unchanged_for: float, action: Action) -> None:
    assert decide(lease, ME, unchanged_for) is action


def test_actions_are_strings_for_logs() -> None:
    assert [a.value for a in Action] == ["acquire", "renew", "wait"]


def test_two_candidates_agree_on_who_renews_and_who_waits() -> None:
    lease = record(ME)
    assert decide(lease, ME, 5.0) is Action.RENEW
    assert decide(lease, THEM, 5.0) is Action.WAIT
    assert decide(lease, THEM, 15.0) is Action.ACQUIRE


def _raw(spec: dict[str, Any] | None, resource_version: str = "1234") -> dict[str, Any]:
    raw: dict[str, Any] = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": "davit-watcher",
            "namespace": "kube-system",
            "resourceVersion": resource_version,
        },
    }
    if spec is not None:
        raw["spec"] = spec
    return raw


FULL_SPEC = {
    "holderIdentity": THEM,
    "leaseDurationSeconds": 15,
    "renewTime": "2024-05-01T12:00:00.123456Z",
    "acquireTime": "2024-05-01T11:00:00.000000Z",
    "leaseTransitions": 7,
}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param(
            FULL_SPEC,
            LeaseRecord(THEM, 15.0, "2024-05-01T12:00:00.123456Z", "2024-05-01T11:00:00.000000Z", 7, "1234"),
            id="full",
        ),
        pytest.param(None, LeaseRecord("", 0.0, "", "", 0, "1234"), id="no-spec"),
        pytest.param({}, LeaseRecord("", 0.0, "", "", 0, "1234"), id="empty-spec"),
        pytest.param(
            {"holderIdentity": None, "leaseDurationSeconds": None, "leaseTransitions": None},
            LeaseRecord("", 0.0, "", "", 0, "1234"),
            id="explicit-nulls",
        ),
        pytest.param(
            {"holderIdentity": ME, "leaseDurationSeconds": 30},
            LeaseRecord(ME, 30.0, "", "", 0, "1234"),
            id="holder-and-duration-only",
        ),
    ],
)
def test_lease_record_from_raw(spec: dict[str, Any] | None, expected: LeaseRecord) -> None:
    parsed = LeaseRecord.from_raw(_raw(spec))
    assert parsed == expected
    assert isinstance(parsed.duration_seconds, float)
    assert isinstance(parsed.transitions, int)


def test_lease_without_spec_is_acquirable() -> None:
    assert decide(LeaseRecord.from_raw(_raw(None)), ME, 0.0) is Action.ACQUIRE


def test_lease_record_from_raw_then_decide() -> None:
    parsed = LeaseRecord.from_raw(_raw(FULL_SPEC, resource_version="99"))
    assert parsed.resource_version == "99"
    assert decide(parsed, ME, 1.0) is Action.WAIT
    assert decide(parsed, THEM, 1.0) is Action.RENEW
    assert decide(parsed, ME, 15.0) is Action.ACQUIRE
