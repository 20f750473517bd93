"""The snapshot service's Celery app and task."""

from __future__ import annotations

from davit.constants import Kind, Queue
from davit.operations import queueing, workers
from davit.operations.messages import Message
from davit.operations.runtime import Runtime
from davit.settings import Settings
from davit_services.backup import backup

SERVICE = "backup"
app = queueing.create_app(Settings.from_env().redis_url, f"davit-{SERVICE}")


def handle(rt: Runtime, message: Message) -> None:
    if message.kind == Kind.APPLICATION_BACKUP:
        backup.handle(rt.ports, message)


run_stage = workers.register(app, Queue.SNAPSHOT, SERVICE, handle)
