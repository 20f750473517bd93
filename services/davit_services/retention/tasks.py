"""The retention service's Celery app and task."""

from __future__ import annotations

from davit.constants import Kind, Queue, RetentionAction
from davit.operations import queueing, workers
from davit.operations.messages import Message
from davit.operations.runtime import Runtime
from davit.settings import Settings
from davit_services.retention import collection, deletion, expiry, sync

SERVICE = "retention"
app = queueing.create_app(Settings.from_env().redis_url, f"davit-{SERVICE}")


def handle(rt: Runtime, message: Message) -> None:
    """The edge: the handlers get the Runtime's narrow interfaces, never the Runtime."""
    ports = rt.ports
    if message.kind == Kind.APPLICATION_BACKUP and message.stage == RetentionAction.DELETE:
        deletion.handle(ports, message)
    elif message.kind == Kind.APPLICATION_BACKUP and message.stage == RetentionAction.EXPIRE:
        expiry.expire(ports, message)
    elif message.kind == Kind.APPLICATION_BACKUP_SCHEDULE and message.stage == RetentionAction.RETAIN:
        expiry.apply_schedule_retention(ports, message)
    elif message.kind == Kind.BACKUP_LOCATION and message.stage == RetentionAction.SYNC:
        sync.handle(ports, message)
    elif message.kind == Kind.BACKUP_LOCATION and message.stage == RetentionAction.COLLECT:
        collection.handle(ports, message)


run_stage = workers.register(app, Queue.RETENTION, SERVICE, handle)
