"""The retention service's Celery app and task."""

from __future__ import annotations

from davit.constants import Kind, Queue
from davit.operations import queueing, workers
from davit.operations.messages import Message
from davit.operations.runtime import Runtime
from davit.repo.gc import COLLECT_STAGE
from davit.retention import location_sync
from davit.settings import Settings
from davit_services.retention import collection, deletion, expiry, sync

#: The stages the watcher sends: a backup whose ttl passed, a schedule whose retention is due.
EXPIRE = "Expire"
RETAIN = "Retain"

SERVICE = "retention"
app = queueing.create_app(Settings.from_env().redis_url, f"davit-{SERVICE}")


def handle(rt: Runtime, message: Message) -> None:
    if message.kind == Kind.APPLICATION_BACKUP and message.stage == "Delete":
        deletion.handle(rt, message)
    elif message.kind == Kind.APPLICATION_BACKUP and message.stage == EXPIRE:
        expiry.expire(rt, message)
    elif message.kind == Kind.APPLICATION_BACKUP_SCHEDULE and message.stage == RETAIN:
        expiry.apply_schedule_retention(rt, message)
    elif message.kind == Kind.BACKUP_LOCATION and message.stage == location_sync.SYNC_STAGE:
        sync.handle(rt, message)
    elif message.kind == Kind.BACKUP_LOCATION and message.stage == COLLECT_STAGE:
        collection.handle(rt, message)


run_stage = workers.register(app, Queue.RETENTION, SERVICE, handle)
