"""The resource-export service's Celery app and task."""

from __future__ import annotations

from davit.constants import Queue
from davit.operations import queueing, workers
from davit.settings import Settings
from davit_services.resources import export

SERVICE = "resources"
app = queueing.create_app(Settings.from_env().redis_url, f"davit-{SERVICE}")
run_stage = workers.register(app, Queue.EXPORT, SERVICE, export.handle)
