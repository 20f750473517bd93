"""The node agent's Celery app and task (queue ``davit.node.<node_name>``)."""

from __future__ import annotations

from davit import queueing, workers
from davit.constants import node_queue
from davit.settings import Settings
from davit_services.uploader import agent

SERVICE = "uploader"
settings = Settings.from_env()
app = queueing.create_app(settings.redis_url, f"davit-{SERVICE}")
QUEUE = node_queue(settings.node_name or "unknown-node")
run_stage = workers.register(app, QUEUE, SERVICE, agent.handle)
