"""Clones advance by events: the clone's task never waits for its staging operation, and the watcher
sends the clone's message again when the staging operation changes. With fakes for the API server."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from davit import constants
from davit.api.types import Stage, Status
from davit.constants import Kind, Queue
from davit.kube import events
from davit.operations import workers
from davit.operations.messages import Message
from davit_services.restore import clone
from davit_services.watcher import clones
from tests.fakes.dispatch import FakeDispatch

ADMIN = "davit-system"
UID = "c10e0000-0000-4000-8000-000000000001"
STAGING = f"copy-{UID[:8]}"

Key = tuple[Kind, str, str]


class FakeOps:
    """Objects by (kind, namespace, name); status patches bump the resourceVersion and, with
    ``check_version``, fail with 409 when the object changed since it was read."""

    def __init__(self) -> None:
        self.objects: dict[Key, dict[str, Any]] = {}
        self.version = 0

    def put(self, kind: Kind, obj: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        obj = copy.deepcopy(obj)
        obj.setdefault("kind", kind.value)
        obj["metadata"]["resourceVersion"] = str(self.version)
        self.objects[(kind, obj["metadata"]["namespace"], obj["metadata"]["name"])] = obj
        return copy.deepcopy(obj)

    def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.objects.get((kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    get_as_is = get

    def current(
        self, kind: Kind, namespace: str, name: str, uid: str, stage: str | None = None
    ) -> dict[str, Any] | None:
        """As ``Operations.current``: the object if it still is that one (uid), in ``stage``."""
        found = self.get(kind, namespace, name)
        if found is None or found["metadata"]["uid"] != uid:
            return None
        if stage is not None and (found.get("status") or {}).get("stage") != stage:
            return None
        return found

    def patch_status(
        self, kind: Kind, obj: dict[str, Any], status: dict[str, Any], check_version: bool = False
    ) -> dict[str, Any]:
        meta = obj["metadata"]
        stored = self.objects[(kind, meta["namespace"], meta["name"])]
        if check_version and stored["metadata"]["resourceVersion"] != meta["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        return self.put(kind, {**stored, "status": {**(stored.get("status") or {}), **status}})

    def record_event(self, *args: Any, **kwargs: Any) -> None:
        """Events are not looked at here."""


class FakeRuntime:
    """The handler's ports: ``cluster`` is the fake operations (also ``ops``), no scratch state."""

    def __init__(self) -> None:
        self.ops = FakeOps()
        self.cluster = self.ops
        self.scratch: Any = None  # no scratch state
        self.dispatch = FakeDispatch()


@pytest.fixture
def rt(monkeypatch: pytest.MonkeyPatch) -> FakeRuntime:
    runtime = FakeRuntime()

    def create(custom: Any, namespace: str, kind: Kind, body: dict[str, Any]) -> None:
        if runtime.ops.get(kind, namespace, body["metadata"]["name"]) is None:
            runtime.ops.put(kind, {**body, "metadata": {**body["metadata"], "namespace": namespace}})

    def delete(custom: Any, namespace: str, kind: Kind, name: str) -> None:
        runtime.ops.objects.pop((kind, namespace, name), None)

    monkeypatch.setattr(clone, "_create", create)
    monkeypatch.setattr(clone, "_delete", delete)
    monkeypatch.setattr(clone, "staging_location", lambda rt, namespace: "staging")
    monkeypatch.setattr(events, "record", lambda *args, **kwargs: None)
    return runtime


def a_clone(rt: FakeRuntime, stage: Stage = Stage.INITIAL, state: Status = Status.PENDING) -> dict[str, Any]:
    return rt.ops.put(
        Kind.APPLICATION_CLONE,
        {
            "apiVersion": constants.API_GROUP_VERSION,
            "metadata": {"namespace": ADMIN, "name": "copy", "uid": UID},
            "spec": {"sourceNamespace": "shop", "destinationNamespace": "shop-copy"},
            "status": {"stage": stage.value, "status": state.value},
        },
    )


def message(rt: FakeRuntime) -> Message:
    stored = rt.ops.get(Kind.APPLICATION_CLONE, ADMIN, "copy")
    assert stored is not None
    return Message(Kind.APPLICATION_CLONE, ADMIN, "copy", UID, stored["status"]["stage"])


def status_of(rt: FakeRuntime, kind: Kind, name: str = "copy") -> dict[str, Any]:
    stored = rt.ops.get(kind, ADMIN, name)
    assert stored is not None
    return dict(stored.get("status") or {})


def end(rt: FakeRuntime, kind: Kind, **status: Any) -> None:
    stored = rt.ops.get(kind, ADMIN, STAGING)
    assert stored is not None
    rt.ops.put(kind, {**stored, "status": {"stage": "Final", **status}})


def test_a_clone_goes_through_its_stages_without_waiting(rt: FakeRuntime) -> None:
    a_clone(rt)
    clone.handle(rt, message(rt))  # type: ignore[arg-type]
    # The staging backup exists, owned by the clone; the task returned at once.
    backup = rt.ops.get(Kind.APPLICATION_BACKUP, ADMIN, STAGING)
    assert backup is not None and clones.owner_of(backup) == clones.Owner(ADMIN, "copy", UID)
    assert status_of(rt, Kind.APPLICATION_CLONE)["stage"] == Stage.VOLUMES

    # Still running: a re-sent message shows its progress and returns.
    stored = rt.ops.get(Kind.APPLICATION_BACKUP, ADMIN, STAGING)
    assert stored is not None
    rt.ops.put(
        Kind.APPLICATION_BACKUP, {**stored, "status": {"stage": "Volumes", "volumes": [{"name": "d"}]}}
    )
    clone.handle(rt, message(rt))  # type: ignore[arg-type]
    assert status_of(rt, Kind.APPLICATION_CLONE)["stage"] == Stage.VOLUMES
    assert status_of(rt, Kind.APPLICATION_CLONE)["volumes"] == [{"name": "d"}]
    assert rt.ops.get(Kind.APPLICATION_RESTORE, ADMIN, STAGING) is None

    # The backup ended: the clone moves on and creates its restore.
    end(rt, Kind.APPLICATION_BACKUP, status="Successful", resourceCount=7)
    clone.handle(rt, message(rt))  # type: ignore[arg-type]
    status = status_of(rt, Kind.APPLICATION_CLONE)
    assert (status["stage"], status["status"], status["resourceCount"]) == ("Applications", "InProgress", 7)
    restore = rt.ops.get(Kind.APPLICATION_RESTORE, ADMIN, STAGING)
    assert restore is not None and restore["spec"]["namespaceMapping"] == {"shop": "shop-copy"}

    # The restore ended: the clone ends as it did, with its counts; the staging backup is gone.
    end(rt, Kind.APPLICATION_RESTORE, status="PartialSuccess", reason="1 ConfigMap failed",
        resourcesByKind={"ConfigMap": 1}, resourceCount=7)  # fmt: skip
    clone.handle(rt, message(rt))  # type: ignore[arg-type]
    status = status_of(rt, Kind.APPLICATION_CLONE)
    assert (status["stage"], status["status"], status["reason"]) == (
        "Final",
        "PartialSuccess",
        "1 ConfigMap failed",
    )
    assert status["resourcesByKind"] == {"ConfigMap": 1} and status["resourceCount"] == 7
    assert rt.ops.get(Kind.APPLICATION_BACKUP, ADMIN, STAGING) is None
    assert rt.dispatch.sent == []  # the clone's steps carry on in its own task


def test_a_failed_staging_backup_fails_the_clone(rt: FakeRuntime) -> None:
    a_clone(rt)
    clone.handle(rt, message(rt))  # type: ignore[arg-type]
    end(rt, Kind.APPLICATION_BACKUP, status="Failed", reason="no space")
    clone.handle(rt, message(rt))  # type: ignore[arg-type]
    status = status_of(rt, Kind.APPLICATION_CLONE)
    assert (status["stage"], status["status"]) == ("Final", "Failed")
    assert status["reason"] == "the backup of shop failed: no space"
    assert rt.ops.get(Kind.APPLICATION_BACKUP, ADMIN, STAGING) is None


def test_a_clone_that_changed_while_moving_on_is_tried_again(
    rt: FakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    a_clone(rt, Stage.VOLUMES, Status.IN_PROGRESS)
    clone.handle(rt, message(rt))  # type: ignore[arg-type]
    end(rt, Kind.APPLICATION_BACKUP, status="Successful")
    # A progress update lands between the task's read of the clone and its stage change.
    ended = clone._ended

    def racing(rt_: Any, obj: dict[str, Any], kind: Kind, name: str) -> Any:
        rt.ops.patch_status(Kind.APPLICATION_CLONE, obj, {"lastUpdateTimestamp": "now"})
        return ended(rt_, obj, kind, name)

    monkeypatch.setattr(clone, "_ended", racing)
    with pytest.raises(clone.CloneMoved) as raised:
        clone.handle(rt, message(rt))  # type: ignore[arg-type]
    assert workers.decide(raised.value, 0) == workers.Retry(2)
    monkeypatch.setattr(clone, "_ended", ended)
    clone.handle(rt, message(rt))  # type: ignore[arg-type]
    assert status_of(rt, Kind.APPLICATION_CLONE)["stage"] == Stage.APPLICATIONS


def test_a_message_for_a_stage_the_clone_left_is_dropped(rt: FakeRuntime) -> None:
    a_clone(rt, Stage.APPLICATIONS, Status.IN_PROGRESS)
    clone.handle(rt, Message(Kind.APPLICATION_CLONE, ADMIN, "copy", UID, Stage.VOLUMES.value))  # type: ignore[arg-type]
    assert rt.ops.get(Kind.APPLICATION_BACKUP, ADMIN, STAGING) is None
    assert rt.ops.get(Kind.APPLICATION_RESTORE, ADMIN, STAGING) is None


# --- the watcher's side --------------------------------------------------------------------------


def staging(kind: Kind, stage: str, owner_uid: str = UID) -> dict[str, Any]:
    return {
        "kind": kind.value,
        "metadata": {
            "namespace": ADMIN,
            "name": STAGING,
            "ownerReferences": [
                {
                    "apiVersion": constants.API_GROUP_VERSION,
                    "kind": "ApplicationClone",
                    "name": "copy",
                    "uid": owner_uid,
                    "controller": True,
                }
            ],
        },
        "status": {"stage": stage},
    }


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def driver(clone_obj: dict[str, Any] | None) -> tuple[clones.CloneDriver, FakeDispatch, Clock, list[str]]:
    sent, clock, reads = FakeDispatch(), Clock(), []

    def read(namespace: str, name: str) -> dict[str, Any] | None:
        reads.append(f"{namespace}/{name}")
        return clone_obj

    return clones.CloneDriver(read=read, send=sent.send, clock=clock), sent, clock, reads


def clone_in(stage: Stage, state: Status = Status.IN_PROGRESS, uid: str = UID) -> dict[str, Any]:
    return {"metadata": {"namespace": ADMIN, "name": "copy", "uid": uid},
            "status": {"stage": stage.value, "status": state.value}}  # fmt: skip


def test_a_staging_operation_that_ended_sends_the_clone_its_message() -> None:
    drive, sent, clock, _ = driver(clone_in(Stage.VOLUMES))
    drive.on_change(staging(Kind.APPLICATION_BACKUP, "Volumes"))  # progress: sent (first time)
    drive.on_change(staging(Kind.APPLICATION_BACKUP, "Volumes"))  # progress again: not yet
    clock.now += 1
    drive.on_change(staging(Kind.APPLICATION_BACKUP, "Final"))  # ended: always
    expected = Message(Kind.APPLICATION_CLONE, ADMIN, "copy", UID, "Volumes")
    assert [(q, m.key) for q, m in sent.sent] == [(Queue.RESTORE.value, expected.key)] * 2


def test_progress_is_sent_at_most_every_heartbeat() -> None:
    drive, sent, clock, reads = driver(clone_in(Stage.APPLICATIONS))
    for _ in range(5):
        drive.on_change(staging(Kind.APPLICATION_RESTORE, "Volumes"))
        clock.now += clones.HEARTBEAT_SECONDS / 4
    assert len(sent.sent) == 2 and len(reads) == 2  # at 0 and after one heartbeat


@pytest.mark.parametrize(
    ("staging_obj", "clone_obj"),
    [
        (staging(Kind.APPLICATION_BACKUP, "Final"), clone_in(Stage.APPLICATIONS)),  # not what it waits for
        (staging(Kind.APPLICATION_RESTORE, "Final"), clone_in(Stage.VOLUMES)),
        (staging(Kind.APPLICATION_RESTORE, "Final"), clone_in(Stage.FINAL, Status.SUCCESSFUL)),
        (staging(Kind.APPLICATION_RESTORE, "Final"), clone_in(Stage.APPLICATIONS, uid="another-clone")),
        (staging(Kind.APPLICATION_RESTORE, "Final"), None),
        (staging(Kind.APPLICATION_RESTORE, "Final", owner_uid="another-clone"), clone_in(Stage.APPLICATIONS)),
    ],
    ids=["other-stage", "other-kind", "clone-ended", "clone-recreated", "clone-gone", "other-owner"],
)
def test_nothing_is_sent_for_a_clone_that_does_not_wait_for_it(
    staging_obj: dict[str, Any], clone_obj: dict[str, Any] | None
) -> None:
    drive, sent, _, _ = driver(clone_obj)
    assert drive.on_change(staging_obj) is None
    assert sent.sent == []


def test_operations_without_a_clone_owner_are_not_looked_at() -> None:
    drive, sent, _, reads = driver(clone_in(Stage.VOLUMES))
    plain = staging(Kind.APPLICATION_BACKUP, "Final")
    plain["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "x",
                                             "uid": "u", "controller": True}]  # fmt: skip
    assert drive.on_change(plain) is None
    assert (
        drive.on_change({"kind": "ApplicationBackup", "metadata": {"namespace": ADMIN, "name": "n"}}) is None
    )
    assert reads == [] and sent.sent == []
