"""The node agent's Celery app and task (queue ``davit.node.<node_name>``)."""

from __future__ import annotations

from davit.constants import Kind, node_queue
from davit.operations import queueing, workers
from davit.operations.messages import Message
from davit.operations.runtime import Runtime
from davit.settings import Settings
from davit_services.uploader import agent, restorer

SERVICE = "uploader"
settings = Settings.from_env()
app = queueing.create_app(settings.redis_url, f"davit-{SERVICE}")
QUEUE = node_queue(settings.node_name or "unknown-node")


def handle(rt: Runtime, message: Message) -> None:
    """Backups read volumes on this node; restores write them (each handler on the runtime's ports)."""
    if message.kind == Kind.APPLICATION_RESTORE:
        restorer.handle(rt.ports, message)
    else:
        agent.handle(rt.ports, message)


run_stage = workers.register(app, QUEUE, SERVICE, handle)
