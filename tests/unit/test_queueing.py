"""The shared Celery app (SPEC §1 settings), routing, sending, in-flight detection, and stage ownership."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from celery import Celery

from davit.api.types import Stage
from davit.constants import NODE_QUEUE_PREFIX, Kind, Queue, node_queue
from davit.operations import queueing, stages
from davit.operations.messages import Message

QUEUE_NAMES = ["davit.snapshot", "davit.export", "davit.restore", "davit.retention"]


@pytest.fixture(scope="module")
def app() -> Celery:
    # Creating the app opens no connection; nothing here talks to Redis.
    return queueing.create_app("redis://127.0.0.1:1/0")


# --- configuration ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        pytest.param("task_serializer", "msgpack", id="task-serializer"),
        pytest.param("result_serializer", "msgpack", id="result-serializer"),
        pytest.param("accept_content", ["msgpack"], id="accept-content"),
        pytest.param("result_accept_content", ["msgpack"], id="result-accept-content"),
        pytest.param("task_acks_late", True, id="acks-late"),
        pytest.param("task_reject_on_worker_lost", True, id="reject-on-worker-lost"),
        pytest.param("worker_prefetch_multiplier", 1, id="prefetch-one"),
        pytest.param("task_time_limit", queueing.TASK_TIME_LIMIT_SECONDS, id="time-limit"),
        pytest.param("broker_url", "redis://127.0.0.1:1/0", id="broker-url"),
    ],
)
def test_config(app: Celery, setting: str, value: Any) -> None:
    assert app.conf[setting] == value


@pytest.mark.parametrize("setting", ["accept_content", "result_accept_content", "task_serializer"])
def test_pickle_is_nowhere(app: Celery, setting: str) -> None:
    configured = app.conf[setting]
    values = [configured] if isinstance(configured, str) else list(configured)
    assert values, f"{setting} must not be empty (empty means Celery's defaults)"
    assert not any("pickle" in v for v in values)


def test_visibility_timeout_outlasts_the_longest_task(app: Celery) -> None:
    visibility = app.conf.broker_transport_options["visibility_timeout"]
    assert visibility == queueing.VISIBILITY_TIMEOUT_SECONDS
    assert visibility > app.conf.task_time_limit
    soft = app.conf.task_soft_time_limit
    assert soft is None or visibility > soft


def test_one_queue_per_worker_type(app: Celery) -> None:
    queues = app.conf.task_queues
    assert sorted(q.name for q in queues) == sorted(QUEUE_NAMES)
    assert sorted(q.value for q in Queue) == sorted(QUEUE_NAMES)
    for q in queues:
        assert q.routing_key == q.name


def test_create_app_uses_the_given_name_and_is_not_current() -> None:
    from celery._state import get_current_app

    named = queueing.create_app("redis://127.0.0.1:1/0", "davit-test")
    assert named.main == "davit-test"
    assert get_current_app() is not named


# --- routing ----------------------------------------------------------------------------------------


def test_stage_tasks_cover_every_queue() -> None:
    assert set(queueing.STAGE_TASKS) == set(Queue)


@pytest.mark.parametrize(("queue", "task"), list(queueing.STAGE_TASKS.items()), ids=[str(q) for q in Queue])
def test_stage_task_routed_to_its_queue(app: Celery, queue: str, task: str) -> None:
    route = app.amqp.router.route({}, task)
    assert route["queue"].name == queue
    assert task.startswith(f"{queue}.")


@pytest.mark.parametrize(
    ("task", "queue"),
    [
        pytest.param("davit.snapshot.something_else", "davit.snapshot", id="any-snapshot-task"),
        pytest.param("davit.export.cleanup", "davit.export", id="any-export-task"),
        pytest.param("davit.retention.sweep", "davit.retention", id="any-retention-task"),
    ],
)
def test_routing_is_by_prefix(app: Celery, task: str, queue: str) -> None:
    assert app.amqp.router.route({}, task)["queue"].name == queue


@pytest.mark.parametrize(
    "task",
    [
        pytest.param("davit.snapshots.run_stage", id="plural-is-not-prefix"),
        pytest.param("other.snapshot.run_stage", id="foreign-app"),
        pytest.param(queueing.NODE_TASK, id="node-task-needs-explicit-queue"),
    ],
)
def test_unrelated_tasks_do_not_land_on_davit_queues(app: Celery, task: str) -> None:
    assert app.amqp.router.route({}, task)["queue"].name not in QUEUE_NAMES


# --- sending (in-memory kombu transport: no broker, no network) -------------------------------------


@pytest.fixture
def memory_app() -> Iterator[Celery]:
    app = queueing.create_app("memory://")
    yield app
    app.close()


def _receive(app: Celery, queue: str) -> Any:
    with app.connection_for_read() as conn:
        simple = conn.SimpleQueue(queue, accept=["msgpack"])
        try:
            received = simple.get(timeout=1)
            received.ack()
            assert len(simple) == 0
            return received
        finally:
            simple.close()


@pytest.mark.parametrize(
    ("queue", "task"),
    [
        pytest.param("davit.snapshot", "davit.snapshot.run_stage", id="snapshot"),
        pytest.param("davit.export", "davit.export.run_stage", id="export"),
        pytest.param("davit.restore", "davit.restore.run_stage", id="restore"),
        pytest.param("davit.retention", "davit.retention.run_stage", id="retention"),
        pytest.param("node", queueing.NODE_TASK, id="node"),
    ],
)
def test_send_uses_the_key_as_task_id_and_msgpack(memory_app: Celery, queue: str, task: str) -> None:
    if queue == "node":
        queue = node_queue(f"n-{uuid.uuid4().hex[:8]}")
        assert queue.startswith(NODE_QUEUE_PREFIX)
    message = Message(
        Kind.APPLICATION_BACKUP, "app", "nightly", f"uid-{uuid.uuid4().hex}", "Volumes", "pvc/a"
    )

    queueing.send(memory_app, message, queue)
    received = _receive(memory_app, queue)

    assert received.headers["task"] == task
    assert received.headers["id"] == message.key
    assert received.content_type == "application/x-msgpack"
    assert received.delivery_info["routing_key"] == queue
    args = msgpack.unpackb(received.body, raw=False)[0]
    assert Message.decode(args[0]) == message


def test_send_to_unknown_queue_fails(memory_app: Celery) -> None:
    message = Message(Kind.APPLICATION_BACKUP, "app", "n", "u", "Initial")
    with pytest.raises(KeyError):
        queueing.send(memory_app, message, "davit.unknown")


# --- in-flight detection ----------------------------------------------------------------------------


class FakeRedis:
    """The two read commands in_flight_task_ids uses, over in-memory lists and hashes of bytes."""

    def __init__(self, lists: dict[str, list[bytes | str]], hashes: dict[str, dict[bytes, bytes]]) -> None:
        self.lists = lists
        self.hashes = hashes
        self.read: list[tuple[str, str]] = []

    def lrange(self, key: str, start: int, end: int) -> list[bytes | str]:
        self.read.append(("lrange", key))
        items = self.lists.get(key, [])
        return items[start:] if end == -1 else items[start : end + 1]

    def hvals(self, key: str) -> list[bytes]:
        self.read.append(("hvals", key))
        return list(self.hashes.get(key, {}).values())


def kombu_message(task_id: Any, task: str = "davit.snapshot.run_stage") -> dict[str, Any]:
    return {
        "body": "kZGt",
        "content-encoding": "binary",
        "content-type": "application/x-msgpack",
        "headers": {"lang": "py", "task": task, "id": task_id, "root_id": task_id},
        "properties": {"correlation_id": task_id, "delivery_tag": str(uuid.uuid4()), "priority": 0},
    }


def queued(task_id: Any) -> bytes:
    return json.dumps(kombu_message(task_id)).encode()


def unacked(task_id: Any, queue: str = "davit.snapshot") -> bytes:
    return json.dumps([kombu_message(task_id), "", queue]).encode()


MALFORMED = [
    b"not json at all",
    b"\xff\xfe\x00garbage",
    b"",
    b"42",
    b'"a string"',
    b"null",
    b"[]",
    b"[1, 2, 3]",
    b'{"no": "headers"}',
    b'{"headers": "not a dict"}',
    b'{"headers": {"id": 17}}',
    b'{"headers": {"id": null}}',
    b'{"headers": {"id": ""}}',
    json.dumps([{"headers": {"id": ["list"]}}, "", "q"]).encode(),
]


@pytest.mark.parametrize(
    ("lists", "hashes", "queues", "expected"),
    [
        pytest.param({}, {}, QUEUE_NAMES, set(), id="nothing"),
        pytest.param(
            {"davit.snapshot": [queued("a:Initial:")], "davit.export": [queued("b:Applications:p1")]},
            {},
            QUEUE_NAMES,
            {"a:Initial:", "b:Applications:p1"},
            id="waiting-in-queues",
        ),
        pytest.param(
            {},
            {"unacked": {b"tag-1": unacked("c:Volumes:"), b"tag-2": unacked("d:Initial:", "davit.restore")}},
            QUEUE_NAMES,
            {"c:Volumes:", "d:Initial:"},
            id="delivered-not-acked",
        ),
        pytest.param(
            {"davit.snapshot": [queued("a:Initial:")], "elsewhere": [queued("x:Initial:")]},
            {"unacked": {b"t": unacked("c:Volumes:")}},
            ["davit.snapshot"],
            {"a:Initial:", "c:Volumes:"},
            id="only-the-given-queues-and-all-unacked",
        ),
        pytest.param(
            {"davit.snapshot": [queued("a:Initial:"), queued("a:Initial:")]},
            {"unacked": {b"t": unacked("a:Initial:")}},
            QUEUE_NAMES,
            {"a:Initial:"},
            id="duplicates-once",
        ),
        pytest.param(
            {"davit.snapshot": [*MALFORMED, queued("ok:Initial:")]},
            {
                "unacked": {
                    str(i).encode(): raw for i, raw in enumerate([*MALFORMED, unacked("ok2:Volumes:")])
                }
            },
            QUEUE_NAMES,
            {"ok:Initial:", "ok2:Volumes:"},
            id="malformed-entries-ignored",
        ),
        pytest.param(
            {"davit.snapshot": [json.dumps(kombu_message("s:Initial:"))]},
            {},
            QUEUE_NAMES,
            {"s:Initial:"},
            id="str-entries-too",
        ),
    ],
)
def test_in_flight_task_ids(
    lists: dict[str, list[bytes | str]],
    hashes: dict[str, dict[bytes, bytes]],
    queues: list[str],
    expected: set[str],
) -> None:
    redis = FakeRedis(lists, hashes)
    assert queueing.in_flight_task_ids(redis, queues) == expected
    assert ("hvals", queueing.UNACKED_HASH) in redis.read
    assert [key for op, key in redis.read if op == "lrange"] == list(queues)


@pytest.mark.parametrize("raw", MALFORMED, ids=[f"malformed-{i}" for i in range(len(MALFORMED))])
def test_each_malformed_entry_alone_is_ignored(raw: bytes) -> None:
    redis = FakeRedis({"davit.snapshot": [raw]}, {"unacked": {b"t": raw}})
    assert queueing.in_flight_task_ids(redis, ["davit.snapshot"]) == set()


def test_in_flight_ids_match_message_keys() -> None:
    message = Message(Kind.APPLICATION_RESTORE, "app", "r", "uid-9", "Volumes")
    redis = FakeRedis({"davit.restore": [queued(message.key)]}, {})
    assert message.key in queueing.in_flight_task_ids(redis, ["davit.restore"])


# --- stage ownership --------------------------------------------------------------------------------

OWNERS = {
    Kind.APPLICATION_BACKUP: {
        Stage.INITIAL: Queue.SNAPSHOT,
        Stage.PRE_EXEC_RULE: Queue.SNAPSHOT,
        Stage.VOLUMES: Queue.SNAPSHOT,
        Stage.APPLICATIONS: Queue.EXPORT,
        Stage.POST_EXEC_RULE: Queue.SNAPSHOT,
        Stage.FINAL: None,
    },
    Kind.APPLICATION_RESTORE: {
        Stage.INITIAL: Queue.RESTORE,
        Stage.PRE_EXEC_RULE: None,
        Stage.VOLUMES: Queue.RESTORE,
        Stage.APPLICATIONS: Queue.RESTORE,
        Stage.POST_EXEC_RULE: Queue.RESTORE,  # its hooks
        Stage.FINAL: None,
    },
    Kind.APPLICATION_CLONE: {
        Stage.INITIAL: Queue.RESTORE,
        Stage.PRE_EXEC_RULE: None,
        Stage.VOLUMES: Queue.RESTORE,
        Stage.APPLICATIONS: Queue.RESTORE,
        Stage.POST_EXEC_RULE: None,
        Stage.FINAL: None,
    },
}
OWNER_CASES = [
    pytest.param(kind, stage, queue, id=f"{kind.value}-{stage.value}")
    for kind, stages in OWNERS.items()
    for stage, queue in stages.items()
]


@pytest.mark.parametrize(("kind", "stage", "queue"), OWNER_CASES)
def test_pipeline_owner(kind: Kind, stage: Stage, queue: Queue | None) -> None:
    assert stages.owner(kind, stage) == queue


def test_owner_table_covers_every_stage() -> None:
    for owned in OWNERS.values():
        assert set(owned) == set(Stage)


@pytest.mark.parametrize("kind", [Kind.BACKUP_LOCATION, Kind.RULE, Kind.SCHEDULE_POLICY], ids=str)
def test_non_operations_have_no_owner(kind: Kind) -> None:
    assert all(stages.owner(kind, stage) is None for stage in Stage)


def test_retention_owns_no_stage() -> None:
    owners = {stages.owner(kind, stage) for kind in OWNERS for stage in Stage}
    assert Queue.RETENTION not in owners
    assert owners - {None} == {Queue.SNAPSHOT, Queue.EXPORT, Queue.RESTORE}


def test_a_publish_on_a_channel_losing_its_connection_is_a_retryable_broker_error(
    memory_app: Celery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kombu's Redis channel, while the worker re-establishes its connection (Redis restarted), fails a
    publish with AttributeError: sending turns it into the broker error the task wrapper retries."""
    from kombu.exceptions import OperationalError

    from davit.operations import workers

    def closed(*_args: Any, **_kwargs: Any) -> None:
        raise AttributeError("'NoneType' object has no attribute 'client'")

    monkeypatch.setattr(memory_app, "send_task", closed)
    message = Message(Kind.APPLICATION_BACKUP, "app", "n", "u", "Volumes", "volume:app/data")
    with pytest.raises(OperationalError) as raised:
        queueing.send(memory_app, message, "davit.snapshot")
    assert isinstance(workers.decide(raised.value, 0), workers.Retry)


def test_a_lost_broker_connection_leaves_running_tasks_running() -> None:
    app = queueing.create_app("redis://127.0.0.1:1/0")
    assert app.conf.worker_cancel_long_running_tasks_on_connection_loss is False
