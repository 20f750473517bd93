"""The resource-export service's Celery app and task."""

from __future__ import annotations

from davit.constants import Queue
from davit.operations import queueing, workers
from davit.operations.messages import Message
from davit.operations.runtime import Runtime
from davit.settings import Settings
from davit_services.resources import export

SERVICE = "resources"
app = queueing.create_app(Settings.from_env().redis_url, f"davit-{SERVICE}")


def handle(rt: Runtime, message: Message) -> None:
    export.handle(rt.ports, message)


run_stage = workers.register(app, Queue.EXPORT, SERVICE, handle)
