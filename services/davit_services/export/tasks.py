"""The resource-export service's Celery app and task."""

from __future__ import annotations

from davit import queueing, workers
from davit.constants import Queue
from davit.settings import Settings
from davit_services.export import export

SERVICE = "export"
app = queueing.create_app(Settings.from_env().redis_url, f"davit-{SERVICE}")
run_stage = workers.register(app, Queue.EXPORT, SERVICE, export.handle)
