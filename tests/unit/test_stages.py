"""The stage machine as a table: its paths, its owners, and ``progress.advance`` / ``progress.fail``."""

from __future__ import annotations

import copy
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import pytest

from davit import metrics
from davit.api.objects import RawObject
from davit.api.types import Stage, Status
from davit.constants import OPERATION_KINDS, Kind, Queue, RetentionAction
from davit.operations import progress, stages
from davit.operations.stages import Outcome, Step
from tests.fakes import cluster as k
from tests.fakes.cluster import FakeCluster
from tests.fakes.dispatch import FakeDispatch
from tests.fakes.scratch import ScratchFactory

#: The owners as they were listed by hand before the table existed: the table must give the same.
OLD_OWNERS: dict[Kind, dict[Stage, Queue]] = {
    Kind.APPLICATION_BACKUP: {
        Stage.INITIAL: Queue.SNAPSHOT,
        Stage.PRE_EXEC_RULE: Queue.SNAPSHOT,
        Stage.VOLUMES: Queue.SNAPSHOT,
        Stage.APPLICATIONS: Queue.EXPORT,
        Stage.POST_EXEC_RULE: Queue.SNAPSHOT,
    },
    Kind.APPLICATION_RESTORE: {
        Stage.INITIAL: Queue.RESTORE,
        Stage.VOLUMES: Queue.RESTORE,
        Stage.APPLICATIONS: Queue.RESTORE,
        Stage.POST_EXEC_RULE: Queue.RESTORE,
    },
    Kind.APPLICATION_CLONE: {
        Stage.INITIAL: Queue.RESTORE,
        Stage.VOLUMES: Queue.RESTORE,
        Stage.APPLICATIONS: Queue.RESTORE,
    },
}
ENDINGS = {
    Outcome.SUCCEEDED: Status.SUCCESSFUL,
    Outcome.PARTIALLY_SUCCEEDED: Status.PARTIAL_SUCCESS,
    Outcome.FAILED: Status.FAILED,
}


def _steps_from(kind: Kind, stage: Stage) -> dict[Outcome, Step]:
    return {o: step for (k, s, o), step in stages.TABLE.items() if (k, s) == (kind, stage)}


def _reachable(kind: Kind, outcomes: set[Outcome]) -> set[Stage]:
    """The stages reachable from Initial following only ``outcomes``."""
    seen, todo = {Stage.INITIAL}, deque([Stage.INITIAL])
    while todo:
        for outcome, step in _steps_from(kind, todo.popleft()).items():
            if outcome in outcomes and step.stage not in seen:
                seen.add(step.stage)
                todo.append(step.stage)
    return seen


# --- the table --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", OPERATION_KINDS, ids=str)
def test_success_path_reaches_final(kind: Kind) -> None:
    forward = {Outcome.ACCEPTED, Outcome.STARTED, Outcome.DONE, Outcome.PARTS_DONE, Outcome.SUCCEEDED}
    assert Stage.FINAL in _reachable(kind, forward)
    finals = [s for (k, _s, o), s in stages.TABLE.items() if k == kind and o == Outcome.SUCCEEDED]
    assert finals and all((s.stage, s.status) == (Stage.FINAL, Status.SUCCESSFUL) for s in finals)


@pytest.mark.parametrize("kind", OPERATION_KINDS, ids=str)
def test_every_stage_on_the_way_can_fail(kind: Kind) -> None:
    """Wherever an operation is before Final, failing it ends it Final/Failed in one step."""
    every = set(Outcome) - {Outcome.FAILED}
    for stage in _reachable(kind, every) - {Stage.FINAL}:
        step = stages.next_step(kind, stage, Outcome.FAILED)
        assert (step.stage, step.status, step.send) == (Stage.FINAL, Status.FAILED, False), stage


@pytest.mark.parametrize("kind", OPERATION_KINDS, ids=str)
def test_every_stage_in_the_table_is_reachable(kind: Kind) -> None:
    reachable = _reachable(kind, set(Outcome))
    used = {s for (k, s, _o) in stages.TABLE if k == kind}
    used |= {step.stage for (k, _s, _o), step in stages.TABLE.items() if k == kind}
    assert used <= reachable


def test_final_has_no_way_out() -> None:
    assert not [key for key in stages.TABLE if key[1] == Stage.FINAL]


def test_endings_write_their_status() -> None:
    for (_kind, _stage, outcome), step in stages.TABLE.items():
        if outcome in ENDINGS:
            assert (step.stage, step.status, step.queue, step.send) == (
                Stage.FINAL, ENDINGS[outcome], None, False,
            )  # fmt: skip
        else:
            assert step.stage != Stage.FINAL and step.queue is not None


def test_every_owned_stage_is_in_the_table() -> None:
    for kind in OPERATION_KINDS:
        for stage in Stage:
            if stages.owner(kind, stage) is not None:
                assert _steps_from(kind, stage), (kind, stage)


@pytest.mark.parametrize("kind", list(Kind), ids=str)
def test_owners_are_the_old_owners(kind: Kind) -> None:
    for stage in Stage:
        assert stages.owner(kind, stage) == OLD_OWNERS.get(kind, {}).get(stage), (kind, stage)


def test_a_message_goes_only_where_the_stage_is_owned() -> None:
    for (kind, _stage, _outcome), step in stages.TABLE.items():
        if step.send:
            assert step.queue == stages.owner(kind, step.stage) is not None


def test_next_step_refuses_what_is_not_in_the_table() -> None:
    with pytest.raises(stages.NoSuchStep):
        stages.next_step(Kind.APPLICATION_RESTORE, Stage.PRE_EXEC_RULE, Outcome.DONE)
    assert stages.find_step(Kind.APPLICATION_BACKUP, "Final", Outcome.FAILED) is None
    assert stages.find_step(Kind.APPLICATION_BACKUP, "NoSuchStage", Outcome.FAILED) is None
    assert stages.find_step(Kind.APPLICATION_BACKUP, None, Outcome.FAILED) is None


def test_outcome_of_status() -> None:
    for outcome, status in ENDINGS.items():
        assert stages.outcome_of(status) == outcome
    assert stages.outcome_of(Status.PENDING) == Outcome.FAILED


def test_stage_fields() -> None:
    assert stages.stage_fields(Stage.VOLUMES, Status.IN_PROGRESS, "r", "now") == {
        "stage": "Volumes", "status": "InProgress", "reason": "r",
    }  # fmt: skip
    assert stages.stage_fields(Stage.FINAL, Status.FAILED, "r", "now")["finishTimestamp"] == "now"
    assert "finishTimestamp" not in stages.stage_fields(Stage.FINAL, Status.FAILED, "r", None)


def test_retention_actions_keep_their_wire_names() -> None:
    assert {a.name: a.value for a in RetentionAction} == {
        "DELETE": "Delete", "EXPIRE": "Expire", "RETAIN": "Retain", "SYNC": "Sync", "COLLECT": "Collect",
    }  # fmt: skip


def test_render_table() -> None:
    table = stages.render_table()
    assert table.count("\n") == len(stages.TABLE) + 1
    assert (
        "| ApplicationBackup | Volumes | Done | Applications | Pending | davit.export | davit.export |"
        in table
    )
    diagram = stages.render_table(mermaid=True)
    assert diagram.count("stateDiagram-v2") == 3
    assert "Volumes --> Applications: Done / Pending → davit.export" in diagram


# --- advance and fail -------------------------------------------------------------------------------


class StatusWrites(FakeCluster):
    """The API server in memory, also keeping every status write that took effect."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[dict[str, Any]] = []

    def add(self, kind: Kind, stage: str, status: str = "Pending") -> RawObject:
        return self.put(k.operation(kind, "op", "app", stage=stage, status=status, uid="uid-1"))

    def patch_status(
        self, kind: Kind, obj: RawObject, status: dict[str, Any], check_version: bool = False
    ) -> RawObject:
        updated = super().patch_status(kind, obj, status, check_version=check_version)
        self.writes.append(status)
        return updated


@dataclass
class MovingPorts:
    """What ``progress`` needs: the API server, the dispatch, and no scratch state."""

    cluster: StatusWrites = field(default_factory=StatusWrites)
    dispatch: FakeDispatch = field(default_factory=FakeDispatch)
    scratch: ScratchFactory | None = None


def _events(ports: MovingPorts) -> list[tuple[str, str, str]]:
    """The Events recorded, as (type, reason, message)."""
    return [(e.type, e.reason, e.message) for e in ports.cluster.events]


@pytest.fixture
def ports() -> MovingPorts:
    return MovingPorts()


def test_advance_writes_the_stage_and_sends_once(ports: MovingPorts) -> None:
    obj = ports.cluster.add(Kind.APPLICATION_BACKUP, "Volumes", "InProgress")
    updated = progress.advance(ports, Kind.APPLICATION_BACKUP, obj, Stage.VOLUMES, Outcome.DONE)
    assert updated is not None
    assert (updated["status"]["stage"], updated["status"]["status"]) == ("Applications", "Pending")
    assert updated["status"]["reason"] == "queued for davit.export"
    assert len(ports.cluster.writes) == 1
    [(queue, message)] = ports.dispatch.sent
    assert queue == "davit.export"
    assert (message.kind, message.uid, message.stage, message.part) == (
        Kind.APPLICATION_BACKUP, "uid-1", "Applications", "",
    )  # fmt: skip
    assert _events(ports) == [
        ("Normal", "StageChanged", "Stage Applications: Pending: queued for davit.export")
    ]


def test_advance_within_a_stage_writes_no_event(ports: MovingPorts) -> None:
    obj = ports.cluster.add(Kind.APPLICATION_BACKUP, "Applications", "Pending")
    updated = progress.advance(
        ports, Kind.APPLICATION_BACKUP, obj, Stage.APPLICATIONS, Outcome.STARTED, "export"
    )
    assert updated is not None and updated["status"]["status"] == "InProgress"
    assert _events(ports) == [] and ports.dispatch.sent == []


def test_advance_to_final(ports: MovingPorts) -> None:
    obj = ports.cluster.add(Kind.APPLICATION_RESTORE, "Volumes", "InProgress")
    updated = progress.advance(
        ports, Kind.APPLICATION_RESTORE, obj, Stage.VOLUMES, Outcome.PARTIALLY_SUCCEEDED, "1 failed",
        extra={"resourcesByKind": {}},
    )  # fmt: skip
    assert updated is not None
    status = updated["status"]
    assert (status["stage"], status["status"], status["reason"]) == ("Final", "PartialSuccess", "1 failed")
    assert status["finishTimestamp"] and status["resourcesByKind"] == {}
    assert ports.dispatch.sent == []
    assert _events(ports) == [("Normal", "Completed", "Stage Final: PartialSuccess: 1 failed")]


def test_the_writer_of_final_counts_the_operation_once_with_its_stage_times() -> None:
    ports = MovingPorts(scratch=ScratchFactory())
    added = ports.cluster.add(Kind.APPLICATION_BACKUP, "Initial", "Pending")
    started = progress.advance(ports, Kind.APPLICATION_BACKUP, added, Stage.INITIAL, Outcome.STARTED)
    assert started is not None
    assert [e["stage"] for e in started["status"]["stageHistory"]] == ["PreExecRule"]
    obj = progress.advance(ports, Kind.APPLICATION_BACKUP, started, Stage.PRE_EXEC_RULE, Outcome.FAILED, "x")
    assert obj is not None
    [entry] = obj["status"]["stageHistory"]
    assert entry["finishTimestamp"] == obj["status"]["finishTimestamp"]
    recorded = metrics.decode(ports.scratch.metrics().read())  # type: ignore[union-attr]
    labels = ("ApplicationBackup", "app", "", "Failed")
    assert recorded.sum(metrics.OPERATIONS_COMPLETED, labels) == 1
    assert recorded.get(metrics.STAGE_DURATION)[("ApplicationBackup", "PreExecRule")]["count"] == 1
    # A duplicate Final write (a retried task) is not counted again.
    progress.set_stage(ports, Kind.APPLICATION_BACKUP, obj, Stage.FINAL, Status.FAILED, "x")
    recorded = metrics.decode(ports.scratch.metrics().read())  # type: ignore[union-attr]
    assert recorded.sum(metrics.OPERATIONS_COMPLETED, labels) == 1


def test_a_hand_over_writes_nothing(ports: MovingPorts) -> None:
    obj = ports.cluster.add(Kind.APPLICATION_RESTORE, "Volumes", "InProgress")
    assert (
        progress.advance(ports, Kind.APPLICATION_RESTORE, obj, Stage.VOLUMES, Outcome.PARTS_DONE) is not None
    )
    assert ports.cluster.writes == [] and _events(ports) == []
    [(queue, message)] = ports.dispatch.sent
    assert (queue, message.stage, message.part) == ("davit.restore", "Volumes", stages.FINISH_PART)


def test_a_stale_advance_does_nothing(ports: MovingPorts) -> None:
    obj = ports.cluster.add(Kind.APPLICATION_BACKUP, "Applications", "Pending")
    assert progress.advance(ports, Kind.APPLICATION_BACKUP, obj, Stage.VOLUMES, Outcome.DONE) is None
    assert ports.cluster.writes == [] and ports.dispatch.sent == [] and _events(ports) == []


def test_a_duplicate_advance_does_nothing(ports: MovingPorts) -> None:
    """Two workers holding the same message: the second one's conditional write loses, and it stops."""
    first = ports.cluster.add(Kind.APPLICATION_RESTORE, "Initial")
    second = copy.deepcopy(first)
    args = (Kind.APPLICATION_RESTORE, Stage.INITIAL, Outcome.STARTED, "reading the backup")
    assert progress.advance(ports, args[0], first, *args[1:], check_version=True) is not None
    assert progress.advance(ports, args[0], second, *args[1:], check_version=True) is None
    assert len(ports.cluster.writes) == 1 and len(_events(ports)) == 1
    # And once it moved on, the same advance from the object as it is now is stale.
    moved = ports.cluster.find(Kind.APPLICATION_RESTORE, "app", "op")
    assert moved is not None
    assert progress.advance(ports, args[0], moved, *args[1:], check_version=True) is None
    assert len(ports.cluster.writes) == 1


@pytest.mark.parametrize(
    ("kind", "stage"),
    [(k, s) for (k, s, o) in stages.TABLE if o == Outcome.FAILED],
    ids=str,
)
def test_fail_from_any_stage(ports: MovingPorts, kind: Kind, stage: Stage) -> None:
    obj = ports.cluster.add(kind, stage.value, "InProgress")
    updated = progress.fail(ports, kind, obj, "it broke", event_reason="SpecChanged")
    assert updated is not None
    assert (updated["status"]["stage"], updated["status"]["status"]) == ("Final", "Failed")
    assert updated["status"]["reason"] == "it broke" and updated["status"]["finishTimestamp"]
    assert _events(ports) == [("Warning", "SpecChanged", "Stage Final: Failed: it broke")]
    assert ports.dispatch.sent == []


def test_fail_leaves_a_finished_operation_as_it_ended(ports: MovingPorts) -> None:
    obj = ports.cluster.add(Kind.APPLICATION_BACKUP, "Final", "Successful")
    assert progress.fail(ports, Kind.APPLICATION_BACKUP, obj, "late") is None
    assert ports.cluster.writes == [] and _events(ports) == []
