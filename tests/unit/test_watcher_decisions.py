"""The watcher's level-triggered decision: what to write, announce and enqueue for one object."""

from __future__ import annotations

import copy
import datetime
from collections.abc import Callable
from typing import Any

import pytest

from davit import timeutil
from davit.api.types import Stage, Status
from davit.constants import Kind, Queue
from davit.validation import Verdict
from davit_services.watcher.decisions import NOTHING, QUEUED, Decision, decide, message_key

NOW = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)
STAMP = "2024-05-01T12:00:00Z"
UID = "0b7e5c1a-1111-4222-8333-444455556666"
GRACE = 30.0
STALL = 300.0

FIRST_QUEUE = {
    Kind.APPLICATION_BACKUP: Queue.SNAPSHOT,
    Kind.APPLICATION_RESTORE: Queue.RESTORE,
    Kind.APPLICATION_CLONE: Queue.RESTORE,
}
OPERATION_KINDS = list(FIRST_QUEUE)


def ago(seconds: float) -> str:
    return timeutil.format_time(NOW - datetime.timedelta(seconds=seconds))


def obj(status: dict[str, Any] | None = None, created_ago: float = 90, **metadata: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "metadata": {
            "namespace": "app",
            "name": "op",
            "uid": UID,
            "creationTimestamp": ago(created_ago),
            **metadata,
        },
        "spec": {},
    }
    if status is not None:
        raw["status"] = status
    return raw


def queued_condition(value: str, since: str = "2024-05-01T11:00:00Z") -> dict[str, Any]:
    return {
        "type": QUEUED,
        "status": value,
        "reason": "Enqueued",
        "message": "m",
        "lastTransitionTime": since,
    }


def accepted_status(
    stage: str = "Initial", state: str = "Pending", updated_ago: float | None = 10
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "stage": stage,
        "status": state,
        "reason": "accepted",
        "conditions": [queued_condition("True")],
    }
    if updated_ago is not None:
        status["lastUpdateTimestamp"] = ago(updated_ago)
    return status


def verdict_of(verdict: Verdict) -> Callable[[], Verdict]:
    return lambda: verdict


def must_not_validate() -> Verdict:
    raise AssertionError("validate must not be called for an object that was already accepted")


def must_not_ask(key: str) -> bool:
    raise AssertionError(f"in_flight must not be consulted on a watch event (asked for {key})")


def run(
    kind: Kind,
    raw: dict[str, Any],
    validate: Callable[[], Verdict] = must_not_validate,
    *,
    resync: bool = False,
    in_flight: Callable[[str], bool] = must_not_ask,
) -> Decision:
    return decide(
        kind,
        raw,
        validate,
        now=NOW,
        resync=resync,
        in_flight=in_flight,
        requeue_grace_seconds=GRACE,
        stall_seconds=STALL,
        expiry_now=NOW,
    )


def condition(status: dict[str, Any], kind: str = QUEUED) -> dict[str, Any]:
    matches: list[dict[str, Any]] = [c for c in status["conditions"] if c["type"] == kind]
    assert len(matches) == 1, status["conditions"]
    return matches[0]


def apply(raw: dict[str, Any], decision: Decision) -> dict[str, Any]:
    """What the watcher's status write does: merge the decision's fields into the object's status."""
    assert decision.status is not None
    updated = copy.deepcopy(raw)
    updated["status"] = {**(updated.get("status") or {}), **decision.status}
    return updated


# --- a new object -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", OPERATION_KINDS, ids=str)
@pytest.mark.parametrize("resync", [False, True], ids=["watch", "resync"])
def test_new_object_accepted_is_queued_for_its_first_stage(kind: Kind, resync: bool) -> None:
    decision = run(kind, obj(), verdict_of(Verdict()), resync=resync)

    assert decision.enqueue == FIRST_QUEUE[kind]
    assert decision.why == "accepted"
    status = decision.status
    assert status is not None
    assert status["stage"] == Stage.INITIAL.value == "Initial"
    assert status["status"] == Status.PENDING.value == "Pending"
    assert status["reason"] == f"accepted; queued for {FIRST_QUEUE[kind].value}"
    assert status["triggerTimestamp"] == STAMP
    assert status["lastUpdateTimestamp"] == STAMP
    assert status["elapsed"] == "1m30s"
    assert status["resourceCount"] == 0
    assert status["volumesProgress"] == "0/0"
    queued = condition(status)
    assert queued["status"] == "True"
    assert queued["reason"] == "Enqueued"
    assert queued["lastTransitionTime"] == STAMP
    assert decision.event is not None
    assert decision.event.type == "Normal"
    assert decision.event.reason == "Accepted"
    assert FIRST_QUEUE[kind].value in decision.event.message


def test_status_with_empty_stage_counts_as_new() -> None:
    decision = run(Kind.APPLICATION_BACKUP, obj(status={"stage": ""}), verdict_of(Verdict()))
    assert decision.enqueue == Queue.SNAPSHOT


def test_elapsed_without_creation_timestamp_is_zero() -> None:
    raw = obj()
    del raw["metadata"]["creationTimestamp"]
    decision = run(Kind.APPLICATION_BACKUP, raw, verdict_of(Verdict()))
    assert decision.status is not None
    assert decision.status["elapsed"] == "0s"


@pytest.mark.parametrize("kind", OPERATION_KINDS, ids=str)
def test_invalid_object_fails_with_all_reasons(kind: Kind) -> None:
    verdict = Verdict(problems=("spec.namespaces: bad", "spec.backupLocation: missing"))
    decision = run(kind, obj(), verdict_of(verdict))

    assert decision.enqueue is None
    assert decision.why == "invalid"
    status = decision.status
    assert status is not None
    assert status["stage"] == "Final"
    assert status["status"] == "Failed"
    assert status["reason"] == "spec.namespaces: bad; spec.backupLocation: missing"
    assert status["finishTimestamp"] == STAMP
    assert status["triggerTimestamp"] == STAMP
    queued = condition(status)
    assert queued["status"] == "False"
    assert queued["reason"] == "Invalid"
    assert decision.event is not None
    assert decision.event.type == "Warning"
    assert decision.event.reason == "ValidationFailed"
    assert decision.event.message == status["reason"]


def test_failed_object_is_left_alone_afterwards() -> None:
    raw = obj()
    first = run(Kind.APPLICATION_BACKUP, raw, verdict_of(Verdict(problems=("nope",))))
    failed = apply(raw, first)

    for resync in (False, True):
        assert run(Kind.APPLICATION_BACKUP, failed, resync=resync) == NOTHING


# --- waiting ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", OPERATION_KINDS, ids=str)
def test_waiting_object_is_pending_and_not_queued(kind: Kind) -> None:
    waiting = "waiting for ApplicationBackup app/bk to complete"
    raw = obj()
    decision = run(kind, raw, verdict_of(Verdict(waiting=waiting)))

    assert decision.enqueue is None
    assert decision.why == "waiting"
    status = decision.status
    assert status is not None
    assert status["stage"] == "Initial"
    assert status["status"] == "Pending"
    assert status["reason"] == waiting
    queued = condition(status)
    assert queued["status"] == "False"
    assert queued["reason"] == "Waiting"
    assert decision.event is not None
    assert decision.event.type == "Normal"
    assert decision.event.reason == "Waiting"

    # Level-triggered: the same object with the same reason leads to no write, no event, nothing.
    again = apply(raw, decision)
    for resync in (False, True):
        assert run(kind, again, verdict_of(Verdict(waiting=waiting)), resync=resync) == NOTHING


def test_waiting_reason_change_is_written_but_keeps_transition_time() -> None:
    raw = obj()
    first = apply(raw, run(Kind.APPLICATION_RESTORE, raw, verdict_of(Verdict(waiting="reason A"))))
    first_transition = condition(first["status"])["lastTransitionTime"]
    first["status"]["conditions"][0]["lastTransitionTime"] = "2024-05-01T11:00:00Z"

    second = run(Kind.APPLICATION_RESTORE, first, verdict_of(Verdict(waiting="reason B")))

    assert first_transition == STAMP
    assert second.status is not None
    assert second.status["reason"] == "reason B"
    assert len(second.status["conditions"]) == 1
    # Still False: the condition did not transition, so its time is kept.
    assert condition(second.status)["lastTransitionTime"] == "2024-05-01T11:00:00Z"


def test_waiting_then_accepted_enqueues_and_flips_condition() -> None:
    raw = obj()
    waiting = apply(raw, run(Kind.APPLICATION_RESTORE, raw, verdict_of(Verdict(waiting="w"))))
    waiting["status"]["triggerTimestamp"] = "2024-05-01T11:59:00Z"
    waiting["status"]["conditions"][0]["lastTransitionTime"] = "2024-05-01T11:59:00Z"

    decision = run(Kind.APPLICATION_RESTORE, waiting, verdict_of(Verdict()))

    assert decision.enqueue == Queue.RESTORE
    assert decision.status is not None
    assert decision.status["triggerTimestamp"] == "2024-05-01T11:59:00Z"  # kept from the first sighting
    queued = condition(decision.status)
    assert queued["status"] == "True"
    assert queued["lastTransitionTime"] == STAMP  # it did transition


def test_waiting_then_backup_failed_fails() -> None:
    raw = obj()
    waiting = apply(raw, run(Kind.APPLICATION_RESTORE, raw, verdict_of(Verdict(waiting="w"))))
    decision = run(Kind.APPLICATION_RESTORE, waiting, verdict_of(Verdict(problems=("backup failed",))))
    assert decision.status is not None
    assert decision.status["stage"] == "Final"
    assert decision.enqueue is None


def test_other_conditions_are_kept() -> None:
    raw = obj(
        status={"stage": "Initial", "status": "Pending", "conditions": [{"type": "Other", "status": "True"}]}
    )
    decision = run(Kind.APPLICATION_BACKUP, raw, verdict_of(Verdict()))
    assert decision.status is not None
    assert {c["type"] for c in decision.status["conditions"]} == {"Other", QUEUED}


# --- already accepted -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", OPERATION_KINDS, ids=str)
@pytest.mark.parametrize(
    "status",
    [
        pytest.param(accepted_status("Initial", "Pending", updated_ago=3600), id="initial-pending-old"),
        pytest.param(accepted_status("Initial", "Pending", updated_ago=None), id="initial-pending-no-stamp"),
        pytest.param(accepted_status("Volumes", "InProgress", updated_ago=3600), id="volumes-stalled"),
        pytest.param(accepted_status("Applications", "Pending", updated_ago=3600), id="applications-pending"),
    ],
)
def test_watch_event_on_accepted_object_does_nothing(kind: Kind, status: dict[str, Any]) -> None:
    # Neither validate nor in_flight may be called: replayed watch events must be harmless.
    assert run(kind, obj(status=status), must_not_validate, resync=False, in_flight=must_not_ask) == NOTHING


def test_resync_with_message_in_flight_does_nothing() -> None:
    asked: list[str] = []

    def in_flight(key: str) -> bool:
        asked.append(key)
        return True

    raw = obj(status=accepted_status("Initial", "Pending", updated_ago=(GRACE + STALL) / 2))
    assert run(Kind.APPLICATION_BACKUP, raw, resync=True, in_flight=in_flight) == NOTHING
    assert asked == [f"{UID}:Initial:"]


def test_a_pending_stage_whose_message_is_in_flight_past_the_stall_time_is_queued_again() -> None:
    """The message was taken by a worker that died before it moved the stage on: it stays unacknowledged
    (in flight) until the broker's visibility timeout, so past the stall time it is sent again."""
    raw = obj(status=accepted_status("PostExecRule", "Pending", updated_ago=STALL + 1))
    decision = run(Kind.APPLICATION_BACKUP, raw, resync=True, in_flight=lambda key: True)
    assert decision.enqueue == Queue.SNAPSHOT
    assert decision.why == "stalled"


@pytest.mark.parametrize(
    ("updated_ago", "requeued"),
    [
        pytest.param(0, False, id="just-updated"),
        pytest.param(GRACE - 1, False, id="inside-grace"),
        pytest.param(GRACE, True, id="at-grace"),
        pytest.param(GRACE + 1, True, id="past-grace"),
        pytest.param(None, True, id="never-updated"),
        pytest.param(-60, False, id="updated-in-the-future"),
    ],
)
def test_resync_lost_message_requeued_after_grace(updated_ago: float | None, requeued: bool) -> None:
    raw = obj(status=accepted_status("Initial", "Pending", updated_ago=updated_ago))
    decision = run(Kind.APPLICATION_BACKUP, raw, resync=True, in_flight=lambda key: False)

    if not requeued:
        assert decision == NOTHING
        return
    assert decision.enqueue == Queue.SNAPSHOT
    assert decision.status == {"lastUpdateTimestamp": STAMP}
    assert decision.why == "lost message"
    assert decision.event is not None
    assert decision.event.type == "Normal"
    assert decision.event.reason == "Requeued"
    assert "Initial" in decision.event.message


@pytest.mark.parametrize(
    ("kind", "stage", "queue"),
    [
        pytest.param(Kind.APPLICATION_BACKUP, "Initial", Queue.SNAPSHOT, id="backup-initial"),
        pytest.param(Kind.APPLICATION_BACKUP, "PreExecRule", Queue.SNAPSHOT, id="backup-pre"),
        pytest.param(Kind.APPLICATION_BACKUP, "Volumes", Queue.SNAPSHOT, id="backup-volumes"),
        pytest.param(Kind.APPLICATION_BACKUP, "Applications", Queue.EXPORT, id="backup-applications"),
        pytest.param(Kind.APPLICATION_BACKUP, "PostExecRule", Queue.SNAPSHOT, id="backup-post"),
        pytest.param(Kind.APPLICATION_RESTORE, "Initial", Queue.RESTORE, id="restore-initial"),
        pytest.param(Kind.APPLICATION_RESTORE, "Volumes", Queue.RESTORE, id="restore-volumes"),
        pytest.param(Kind.APPLICATION_RESTORE, "Applications", Queue.RESTORE, id="restore-applications"),
        pytest.param(Kind.APPLICATION_CLONE, "Volumes", Queue.RESTORE, id="clone-volumes"),
        pytest.param(Kind.APPLICATION_CLONE, "Applications", Queue.RESTORE, id="clone-applications"),
    ],
)
def test_requeue_goes_to_the_owner_of_the_current_stage(kind: Kind, stage: str, queue: Queue) -> None:
    asked: list[str] = []

    def in_flight(key: str) -> bool:
        asked.append(key)
        return False

    raw = obj(status=accepted_status(stage, "Pending", updated_ago=3600))
    decision = run(kind, raw, resync=True, in_flight=in_flight)

    assert decision.enqueue == queue
    assert asked == [f"{UID}:{stage}:"]
    assert decision.event is not None
    assert queue.value in decision.event.message


@pytest.mark.parametrize(
    ("updated_ago", "stalled"),
    [
        pytest.param(STALL - 1, False, id="younger-than-stall"),
        pytest.param(GRACE + 1, False, id="older-than-grace-is-not-enough"),
        pytest.param(STALL, True, id="at-stall"),
        pytest.param(STALL + 120, True, id="older-than-stall"),
        pytest.param(None, True, id="never-updated"),
    ],
)
@pytest.mark.parametrize("in_flight", [False, True], ids=["not-in-flight", "in-flight"])
def test_in_progress_requeued_only_when_stalled(
    updated_ago: float | None, stalled: bool, in_flight: bool
) -> None:
    raw = obj(status=accepted_status("Volumes", "InProgress", updated_ago=updated_ago))
    decision = run(Kind.APPLICATION_BACKUP, raw, resync=True, in_flight=lambda key: in_flight)

    if not stalled:
        assert decision == NOTHING
        return
    assert decision.enqueue == Queue.SNAPSHOT
    assert decision.status == {"lastUpdateTimestamp": STAMP}
    assert decision.why == "stalled"
    assert decision.event is not None
    assert decision.event.type == "Warning"
    assert decision.event.reason == "Stalled"
    assert "Volumes" in decision.event.message


def test_stalled_message_reports_whole_seconds() -> None:
    raw = obj(status=accepted_status("Applications", "InProgress", updated_ago=STALL + 42))
    decision = run(Kind.APPLICATION_BACKUP, raw, resync=True, in_flight=lambda key: False)
    assert decision.event is not None
    assert f"for {int(STALL) + 42}s" in decision.event.message
    assert decision.enqueue == Queue.EXPORT


# --- nothing to do ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", OPERATION_KINDS, ids=str)
@pytest.mark.parametrize("outcome", ["Successful", "PartialSuccess", "Failed"])
@pytest.mark.parametrize("resync", [False, True], ids=["watch", "resync"])
def test_final_does_nothing(kind: Kind, outcome: str, resync: bool) -> None:
    raw = obj(status={"stage": "Final", "status": outcome, "lastUpdateTimestamp": ago(86400)})
    assert run(kind, raw, resync=resync, in_flight=must_not_ask) == NOTHING


@pytest.mark.parametrize(
    "status",
    [
        pytest.param(None, id="new"),
        pytest.param(accepted_status("Volumes", "InProgress", updated_ago=3600), id="stalled"),
        pytest.param(accepted_status("Initial", "Pending", updated_ago=3600), id="lost"),
    ],
)
@pytest.mark.parametrize("resync", [False, True], ids=["watch", "resync"])
def test_deleting_object_does_nothing(status: dict[str, Any] | None, resync: bool) -> None:
    raw = obj(status=status, deletionTimestamp=ago(5))
    assert (
        run(Kind.APPLICATION_BACKUP, raw, must_not_validate, resync=resync, in_flight=must_not_ask) == NOTHING
    )


IMPORTED = {
    "davit.dev/imported-from": "loc",
    "davit.dev/source-backup": "app/op/5f0e0000-0000-4000-8000-000000000000",
}


@pytest.mark.parametrize(
    "status",
    [
        pytest.param(None, id="no-status"),
        pytest.param({"stage": ""}, id="empty-stage"),
        pytest.param({"stage": "Final", "status": "Successful"}, id="final"),
        pytest.param(accepted_status("Initial", "Pending", updated_ago=3600), id="pending-looking"),
    ],
)
@pytest.mark.parametrize("resync", [False, True], ids=["watch", "resync"])
def test_imported_backup_is_never_started(status: dict[str, Any] | None, resync: bool) -> None:
    """An import stands for a backup another cluster made: not validated, accepted, requeued or sent,
    whatever its status (the location sync writes it)."""
    raw = obj(status=status, annotations=dict(IMPORTED))
    assert (
        run(Kind.APPLICATION_BACKUP, raw, must_not_validate, resync=resync, in_flight=must_not_ask) == NOTHING
    )


def test_import_annotation_does_not_stop_a_restore() -> None:
    """Only backups are imported; the annotation on another kind changes nothing."""
    decision = run(Kind.APPLICATION_RESTORE, obj(annotations=dict(IMPORTED)), verdict_of(Verdict()))
    assert decision.enqueue == Queue.RESTORE


def test_deleting_an_import_sends_nothing() -> None:
    """Imports carry no finalizer: deleting one removes only the CR, never the data."""
    raw = obj(
        status={"stage": "Final", "status": "Successful"},
        annotations=dict(IMPORTED),
        deletionTimestamp=ago(5),
    )
    assert run(Kind.APPLICATION_BACKUP, raw, resync=True, in_flight=lambda key: False) == NOTHING


@pytest.mark.parametrize(
    ("kind", "stage", "state"),
    [
        pytest.param(Kind.APPLICATION_BACKUP, "Exploding", "Pending", id="unknown-stage"),
        pytest.param(Kind.APPLICATION_RESTORE, "PreExecRule", "Pending", id="stage-without-owner"),
        pytest.param(Kind.APPLICATION_BACKUP, "Volumes", "Successful", id="stage-done-waiting-for-worker"),
    ],
)
def test_resync_of_odd_states_does_nothing(kind: Kind, stage: str, state: str) -> None:
    raw = obj(status=accepted_status(stage, state, updated_ago=86400))
    assert run(kind, raw, resync=True, in_flight=lambda key: False) == NOTHING


@pytest.mark.parametrize(
    ("stamp", "state", "reason"),
    [
        pytest.param("yesterday-ish", "Pending", "Requeued", id="garbage-pending"),
        pytest.param("yesterday-ish", "InProgress", "Stalled", id="garbage-in-progress"),
        pytest.param("2024-05-01T11:00:00", "Pending", "Requeued", id="no-offset-pending"),
        pytest.param("2024-05-01T11:00:00", "InProgress", "Stalled", id="no-offset-in-progress"),
        pytest.param("2024-05-01T11:00:00+02:00", "InProgress", "Stalled", id="with-offset"),
    ],
)
def test_odd_last_update_timestamp_still_decides(stamp: str, state: str, reason: str) -> None:
    status = accepted_status("Volumes", state, updated_ago=None)
    status["lastUpdateTimestamp"] = stamp
    decision = run(Kind.APPLICATION_BACKUP, obj(status=status), resync=True, in_flight=lambda key: False)
    assert decision.enqueue == Queue.SNAPSHOT
    assert decision.event is not None
    assert decision.event.reason == reason


def test_creation_timestamp_without_offset_still_gives_elapsed() -> None:
    raw = obj()
    raw["metadata"]["creationTimestamp"] = "2024-05-01T11:58:00"
    decision = run(Kind.APPLICATION_BACKUP, raw, verdict_of(Verdict()))
    assert decision.status is not None
    assert decision.status["elapsed"] == "2m0s"


def test_message_key_is_whole_stage_key() -> None:
    assert message_key(obj(), "Volumes") == f"{UID}:Volumes:"


def test_decide_does_not_mutate_the_object() -> None:
    raw = obj(status={"stage": "Initial", "status": "Pending", "conditions": [queued_condition("False")]})
    before = copy.deepcopy(raw)
    run(Kind.APPLICATION_BACKUP, raw, verdict_of(Verdict()))
    assert raw == before


@pytest.mark.parametrize(
    ("ttl", "finished_ago", "expired"),
    [
        ("1h", 3601, True),
        ("1h", 3599, False),
        ("1h30m", 5500, True),
        ("7d", 86400, False),
        (None, 10**6, False),
    ],
)
def test_a_finished_backup_whose_ttl_passed_goes_to_retention_on_a_resync(
    ttl: str | None, finished_ago: float, expired: bool
) -> None:
    raw = obj({"stage": "Final", "status": "Successful", "finishTimestamp": ago(finished_ago)})
    if ttl:
        raw["spec"]["ttl"] = ttl
    decision = run(Kind.APPLICATION_BACKUP, raw, resync=True, in_flight=lambda _key: False)
    if expired:
        assert (decision.enqueue, decision.message_stage) == (Queue.RETENTION, "Expire")
        assert decision.event is not None and decision.event.reason == "Expired"
    else:
        assert decision.enqueue is None
    # A watch event never sends it: the resync does, once a minute at most.
    assert run(Kind.APPLICATION_BACKUP, raw).enqueue is None


def test_a_ttl_is_compared_with_the_expiry_clock_not_the_stamps_clock() -> None:
    """``expiry_now`` (a shifted ``davit.clocks`` clock in tests) decides expiry; ``now`` stays what the
    status stamps and stall detection use."""
    raw = obj({"stage": "Final", "status": "Successful", "finishTimestamp": ago(60)})
    raw["spec"]["ttl"] = "1h"

    def at(expiry_now: datetime.datetime) -> Decision:
        return decide(Kind.APPLICATION_BACKUP, raw, must_not_validate, now=NOW, resync=True,
                      in_flight=lambda _key: False, requeue_grace_seconds=GRACE, stall_seconds=STALL,
                      expiry_now=expiry_now)  # fmt: skip

    assert at(NOW).enqueue is None
    assert at(NOW + datetime.timedelta(hours=1)).message_stage == "Expire"


def test_durations_parse_as_the_api_accepts_them() -> None:
    from davit.retention.rules import parse_duration

    assert parse_duration("72h").total_seconds() == 72 * 3600
    assert parse_duration("1h30m").total_seconds() == 5400
    assert parse_duration("2w").days == 14
    assert parse_duration("500ms").total_seconds() == 0.5
    for bad in ("", "h", "5", "1x", "1h 2m"):
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(bad)


# --- the accepted spec ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", OPERATION_KINDS, ids=str)
def test_acceptance_records_the_generation_it_validated(kind: Kind) -> None:
    decision = run(kind, obj(generation=3), verdict_of(Verdict()))

    assert decision.status is not None and decision.status["acceptedGeneration"] == 3


@pytest.mark.parametrize("kind", OPERATION_KINDS, ids=str)
@pytest.mark.parametrize("resync", [False, True], ids=["watch", "resync"])
@pytest.mark.parametrize("stage", ["Initial", "Applications", "Volumes"])
def test_a_spec_edited_after_acceptance_fails_the_operation(kind: Kind, resync: bool, stage: str) -> None:
    status = {**accepted_status(stage=stage, state="InProgress"), "acceptedGeneration": 1}

    decision = run(kind, obj(status, generation=2), resync=resync, in_flight=lambda key: True)

    assert decision.enqueue is None
    assert decision.status is not None
    assert (decision.status["stage"], decision.status["status"]) == ("Final", "Failed")
    assert decision.status["reason"].startswith("SpecChanged")
    assert decision.event is not None
    assert (decision.event.type, decision.event.reason) == ("Warning", "SpecChanged")


def test_an_unchanged_accepted_spec_is_left_alone() -> None:
    status = {
        **accepted_status(stage="Applications", state="InProgress", updated_ago=1),
        "acceptedGeneration": 2,
    }

    assert run(Kind.APPLICATION_BACKUP, obj(status, generation=2)) == NOTHING
