"""How a message leaves a worker: the ``Dispatch`` protocol, and its Celery implementation.

``davit.operations.progress.advance`` sends the next stage's message through it, and a stage that fans
its work out (resource pages, volumes, shards) sends its parts through it; tests use the in-memory fake
in ``tests.fakes.dispatch``.
"""

from __future__ import annotations

from typing import Protocol

from celery import Celery

from davit.operations import queueing
from davit.operations.messages import Message


class Dispatch(Protocol):
    def send(self, message: Message, queue: str) -> None:
        """Enqueue ``message`` on ``queue`` (a ``davit.constants.Queue`` value or a node queue)."""


class CeleryDispatch:
    """Messages onto the Celery queues (``davit.operations.queueing.send``)."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def send(self, message: Message, queue: str) -> None:
        queueing.send(self.app, message, queue)
