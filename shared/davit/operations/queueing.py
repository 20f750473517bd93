"""The Celery application every service shares: queues, routing and the settings SPEC §1 requires.

* msgpack only, for tasks, results and accepted content: nothing on the wire can be unpickled.
* one queue per worker type; tasks are routed by their name's prefix, node work by explicit queue.
* ``task_acks_late`` with prefetch 1: a message is removed only after its task finished, and a worker
  holds one message at a time, so a worker killed mid-task loses nothing and hoards nothing.
* a Redis ``visibility_timeout`` longer than the hard time limit of any task: Redis re-delivers an
  unacknowledged message only after this, so it must never fire while the first delivery still runs.
* task ids are the messages' idempotency keys (operation uid, stage, part), so duplicates are visible.
* a lost broker connection (Redis restarted) does not cancel the tasks running: a volume being stored
  goes on, and a copy of its message delivered again (kombu restores unacknowledged messages) finds the
  part's lease taken or its work done: tasks are idempotent. Celery's default today, set explicitly
  because Celery announces that it will change (it still logs a CPendingDeprecationWarning about that
  change at each lost connection: expected, not a fault).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from celery import Celery
from kombu import Queue as KombuQueue
from kombu.exceptions import OperationalError

from davit.constants import NODE_QUEUE_PREFIX, Queue
from davit.operations import scratch
from davit.operations.messages import Message

#: Hard limit for one task. Large work is split into parts well below it (SPEC §1), so hitting it means
#: something is stuck, not slow.
TASK_TIME_LIMIT_SECONDS: Final = 2 * 3600
#: Longer than the longest task, with an hour to spare for a slow acknowledgement.
VISIBILITY_TIMEOUT_SECONDS: Final = TASK_TIME_LIMIT_SECONDS + 3600

#: The task each queue's workers run for a stage message.
STAGE_TASKS: Final[dict[str, str]] = {
    Queue.SNAPSHOT: "davit.snapshot.run_stage",
    Queue.EXPORT: "davit.export.run_stage",
    Queue.RESTORE: "davit.restore.run_stage",
    Queue.RETENTION: "davit.retention.run_stage",
}
NODE_TASK: Final = "davit.node.run_stage"

#: Where kombu's Redis transport keeps messages delivered but not yet acknowledged.
UNACKED_HASH: Final = scratch.UNACKED_HASH


def create_app(redis_url: str, name: str = "davit") -> Celery:
    app = Celery(name, broker=redis_url, set_as_current=False)
    app.conf.update(
        task_serializer="msgpack",
        result_serializer="msgpack",
        accept_content=["msgpack"],
        result_accept_content=["msgpack"],
        event_serializer="json",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_time_limit=TASK_TIME_LIMIT_SECONDS,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_SECONDS},
        broker_connection_retry_on_startup=True,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_queues=[KombuQueue(q.value, routing_key=q.value) for q in Queue],
        task_routes={f"davit.{q.value.split('.', 1)[1]}.*": {"queue": q.value} for q in Queue},
        task_create_missing_queues=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app


def send(app: Celery, message: Message, queue: str) -> None:
    """Enqueue ``message`` on ``queue``; the task id is the message's idempotency key."""
    task = NODE_TASK if queue.startswith(NODE_QUEUE_PREFIX) else STAGE_TASKS[queue]
    try:
        app.send_task(task, args=[message.encode()], task_id=message.key, queue=queue, routing_key=queue)
    except AttributeError as exc:
        # kombu's Redis channel whose connection the worker is re-establishing (Redis restarted) has no
        # connection object: publishing fails this way, not with a connection error. It is one all the
        # same, so the task is retried rather than failed.
        raise OperationalError(f"the broker connection is being re-established: {exc}") from exc


def in_flight_task_ids(redis: Any, queues: Iterable[str]) -> set[str]:
    """Task ids waiting in ``queues`` or delivered and not yet acknowledged.

    Reads kombu's Redis layout (a list per queue, the ``unacked`` hash). Used by the watcher's resync to
    tell a lost message from one that is merely waiting, without re-sending every message every minute.
    The reading is ``davit.operations.scratch.QueueState``'s.
    """
    return scratch.QueueState(redis).in_flight_task_ids(queues)
