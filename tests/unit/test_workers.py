"""The queue workers' task wrapper, with a fake runtime: retries, failures and dropped messages."""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery

from davit import metrics
from davit.constants import Kind, Queue
from davit.format.sealing import CorruptObject
from davit.kube.operations import SpecChanged
from davit.operations import progress, workers
from davit.operations.messages import Message
from davit.storage.base import StorageError
from davit.tenancy import SPEC_CHANGED
from tests.fakes.scratch import ScratchFactory

UID = "3f2c9a4e-0000-4000-8000-000000000001"


class FakeOps:
    def __init__(self, obj: dict[str, Any] | None) -> None:
        self.obj = obj

    def get_as_is(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        return self.obj


class FakeRuntime:
    def __init__(self, obj: dict[str, Any] | None, scratch: ScratchFactory) -> None:
        self.ops = FakeOps(obj)
        self.scratch = scratch


def backup(stage: str = "Volumes") -> dict[str, Any]:
    return {
        "apiVersion": "davit.dev/v1alpha1",
        "kind": "ApplicationBackup",
        "metadata": {"namespace": "app", "name": "nightly", "uid": UID},
        "status": {"stage": stage, "status": "InProgress"},
    }


@pytest.fixture
def failed(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str | None]]:
    """The (reason, event reason) of each progress.fail call."""
    calls: list[tuple[str, str | None]] = []

    def fail(rt: Any, kind: Kind, obj: Any, reason: str, event_reason: str | None = None) -> Any:
        calls.append((reason, event_reason))
        return obj

    monkeypatch.setattr(progress, "fail", fail)
    return calls


def task_for(
    monkeypatch: pytest.MonkeyPatch, raised: BaseException | None, obj: dict[str, Any] | None
) -> Any:
    """The registered task of a service whose handler raises ``raised``; it counts its calls."""
    scratch = ScratchFactory()
    monkeypatch.setattr(workers, "runtime", lambda service: FakeRuntime(obj, scratch))
    app = Celery("test-workers", set_as_current=False)
    app.conf.task_always_eager = True
    calls: list[Message] = []

    def handler(rt: Any, message: Message) -> None:
        calls.append(message)
        if raised is not None:
            raise raised

    task = workers.register(app, Queue.SNAPSHOT.value, "backup", handler)
    task.calls = calls
    task.scratch = scratch
    return task


def envelope(stage: str = "Volumes") -> bytes:
    return Message(Kind.APPLICATION_BACKUP, "app", "nightly", UID, stage).encode()


def test_a_retryable_error_is_retried_with_backoff_then_fails_the_operation(
    monkeypatch: pytest.MonkeyPatch, failed: list[tuple[str, str | None]]
) -> None:
    task = task_for(monkeypatch, StorageError("SlowDown", "try later"), backup())
    countdowns: list[int] = []
    retry = task.retry

    def recording_retry(*args: Any, **kwargs: Any) -> Any:
        countdowns.append(kwargs["countdown"])
        return retry(*args, **kwargs)

    monkeypatch.setattr(task, "retry", recording_retry)
    task.apply(args=(envelope(),))
    assert len(task.calls) == workers.MAX_RETRIES + 1
    assert countdowns == [2, 4, 8, 16, 32]
    assert failed == [("Volumes failed after retries: SlowDown: try later", None)]
    # Every run is a task end: five retried, the last one failed.
    recorded = metrics.decode(task.scratch.metrics().read())
    queue = (Queue.SNAPSHOT.value,)
    assert recorded.get(metrics.TASK_DURATION)[queue]["count"] == workers.MAX_RETRIES + 1
    assert recorded.sum(metrics.TASK_RETRIES, queue) == workers.MAX_RETRIES
    assert recorded.sum(metrics.TASK_FAILURES, queue) == 1


def test_a_non_retryable_error_fails_the_operation_at_once(
    monkeypatch: pytest.MonkeyPatch, failed: list[tuple[str, str | None]]
) -> None:
    task = task_for(monkeypatch, CorruptObject("pack p1: authentication tag mismatch"), backup())
    task.apply(args=(envelope(),))
    assert len(task.calls) == 1
    assert failed == [("Volumes failed: pack p1: authentication tag mismatch", None)]


def test_a_bug_fails_the_operation_at_once_naming_the_error(
    monkeypatch: pytest.MonkeyPatch, failed: list[tuple[str, str | None]]
) -> None:
    task = task_for(monkeypatch, KeyError("volumes"), backup())
    task.apply(args=(envelope(),))
    assert len(task.calls) == 1
    assert failed == [("Volumes failed: KeyError: 'volumes'", None)]


def test_spec_changed_fails_with_its_event_reason(
    monkeypatch: pytest.MonkeyPatch, failed: list[tuple[str, str | None]]
) -> None:
    changed = SpecChanged("SpecChanged: the spec changed after it was accepted", backup())
    task = task_for(monkeypatch, changed, None)  # the operation as the error carries it is used
    task.apply(args=(envelope(),))
    assert len(task.calls) == 1
    assert failed == [("SpecChanged: the spec changed after it was accepted", SPEC_CHANGED)]


def test_spec_changed_of_another_object_names_it(
    monkeypatch: pytest.MonkeyPatch, failed: list[tuple[str, str | None]]
) -> None:
    staging = {**backup(), "metadata": {"namespace": "app", "name": "copy-3f2c9a4e", "uid": "other"}}
    task = task_for(monkeypatch, SpecChanged("SpecChanged: changed", staging), backup())
    task.apply(args=(envelope(),))
    assert failed == [("ApplicationBackup copy-3f2c9a4e: SpecChanged: changed", SPEC_CHANGED)]


def test_an_operation_that_ended_or_is_gone_is_not_failed(
    monkeypatch: pytest.MonkeyPatch, failed: list[tuple[str, str | None]]
) -> None:
    task_for(monkeypatch, CorruptObject("x"), backup(stage="Final")).apply(args=(envelope(),))
    task_for(monkeypatch, CorruptObject("x"), None).apply(args=(envelope(),))
    other = {**backup(), "metadata": {**backup()["metadata"], "uid": "a-new-incarnation"}}
    task_for(monkeypatch, CorruptObject("x"), other).apply(args=(envelope(),))
    assert failed == []


def test_an_undecodable_message_is_dropped(
    monkeypatch: pytest.MonkeyPatch, failed: list[tuple[str, str | None]]
) -> None:
    task = task_for(monkeypatch, None, backup())
    result = task.apply(args=(b"\x00not msgpack",))
    assert result.successful()
    assert task.calls == [] and failed == []


def test_success_fails_nothing(monkeypatch: pytest.MonkeyPatch, failed: list[tuple[str, str | None]]) -> None:
    task = task_for(monkeypatch, None, backup())
    assert task.apply(args=(envelope(),)).successful()
    assert len(task.calls) == 1 and failed == []
    recorded = metrics.decode(task.scratch.metrics().read())
    assert recorded.get(metrics.TASK_DURATION)[(Queue.SNAPSHOT.value,)]["count"] == 1
    assert recorded.get(metrics.TASK_FAILURES) == {} and recorded.get(metrics.TASK_RETRIES) == {}


def test_a_worker_caps_its_malloc_arenas_on_glibc() -> None:
    import platform

    from davit.operations.workers import limit_malloc_arenas

    # glibc's mallopt answers 1 when it took the setting; elsewhere the cap is skipped, not an error.
    assert limit_malloc_arenas(2) is (platform.libc_ver()[0] == "glibc")
