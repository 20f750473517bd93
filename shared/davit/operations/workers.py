"""What every queue worker shares: one Celery task per service that decodes the envelope, binds the log
context and calls the service's handler, retrying transient failures and failing the operation, with
its reason, when they persist."""

from __future__ import annotations

import functools
import signal
from collections.abc import Callable
from typing import Any

import structlog
from celery import Celery

from davit import logs, tenancy
from davit.format.repository import FormatError
from davit.format.sealing import CorruptObject
from davit.kube.operations import SpecChanged
from davit.operations import progress, queueing
from davit.operations.messages import Message, MessageDecodeError
from davit.operations.runtime import Runtime
from davit.settings import Settings

log = structlog.get_logger(__name__)

#: Transient failures (API server or store hiccups) are retried this often, with exponential backoff
#: (2, 4, 8, 16, 32 s), before the operation is failed with the last error as its reason.
MAX_RETRIES = 5

Handler = Callable[[Runtime, Message], None]


@functools.lru_cache(maxsize=1)
def runtime(service: str) -> Runtime:
    return Runtime.create(Settings.from_env(), service)


def register(app: Celery, queue: str, service: str, handler: Handler) -> Any:
    """The stage task for ``queue`` (a node queue: the node task), calling ``handler(runtime, message)``."""
    task_name = queueing.STAGE_TASKS.get(queue, queueing.NODE_TASK)

    @app.task(name=task_name, bind=True, max_retries=MAX_RETRIES)  # type: ignore[untyped-decorator]
    def run_stage(task: Any, envelope: bytes) -> None:
        try:
            message = Message.decode(envelope)
        except MessageDecodeError as exc:
            log.error("message.undecodable", reason=exc.reason, task_id=task.request.id)
            return  # retrying cannot make it decodable
        rt = runtime(service)
        with logs.operation_context(
            kind=message.kind.value, namespace=message.namespace, name=message.name, uid=message.uid,
            stage=message.stage, part=message.part or None, task_id=task.request.id,
        ):  # fmt: skip
            try:
                handler(rt, message)
            except SpecChanged as exc:
                # Not transient: the operation ends, with the reason and an Event of its own.
                log.warning("operation.spec_changed", reason=exc.reason)
                _fail_spec_changed(rt, message, exc)
            except (CorruptObject, FormatError) as exc:
                # What the location holds cannot be read, or is refused (damaged, not sealed with the
                # location's key, larger or more deeply nested than allowed): reading it again gives the
                # same bytes, so the operation fails now, with the reason naming the object.
                log.warning("operation.unreadable", reason=str(exc))
                _fail_now(rt, message, f"{message.stage} failed: {exc}")
            except Exception as exc:
                if task.request.retries < MAX_RETRIES:
                    log.warning("task.retry", error=str(exc), attempt=task.request.retries + 1)
                    raise task.retry(exc=exc, countdown=2 ** (task.request.retries + 1)) from exc
                log.exception("task.failed")
                obj = rt.ops.get_as_is(message.kind, message.namespace, message.name)
                if obj is not None and obj["metadata"]["uid"] == message.uid:
                    progress.fail(rt, message.kind, obj, f"{message.stage} failed after retries: {exc}")

    return run_stage


def _fail_now(rt: Runtime, message: Message, reason: str) -> None:
    obj = rt.ops.get_as_is(message.kind, message.namespace, message.name)
    if (
        obj is not None
        and obj["metadata"]["uid"] == message.uid
        and (obj.get("status") or {}).get("stage") != "Final"
    ):
        progress.fail(rt, message.kind, obj, reason)


def _fail_spec_changed(rt: Runtime, message: Message, exc: SpecChanged) -> None:
    """Fail the message's operation; if the changed object is another one (a clone's staging backup),
    the message's operation fails naming it."""
    meta = exc.obj["metadata"]
    same = (exc.obj.get("kind"), meta.get("namespace"), meta.get("name")) == (
        message.kind.value, message.namespace, message.name,
    )  # fmt: skip
    obj = exc.obj if same else rt.ops.get_as_is(message.kind, message.namespace, message.name)
    if obj is None or obj["metadata"]["uid"] != message.uid:
        return
    if (obj.get("status") or {}).get("stage") != "Final":
        reason = exc.reason if same else f"{exc.obj.get('kind')} {meta.get('name')}: {exc.reason}"
        progress.fail(rt, message.kind, obj, reason, event_reason=tenancy.SPEC_CHANGED)


def main(app: Celery, queue: str, service: str) -> None:
    """Run a worker consuming ``queue`` until SIGTERM."""
    settings = Settings.from_args(description=f"Davit {service} worker")
    logs.configure(service, settings.log_level)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    app.worker_main(
        argv=[
            "worker",
            f"--queues={queue}",
            f"--concurrency={settings.worker_concurrency}",
            "--pool=threads",
            f"--hostname={service}@{settings.identity}",
            "--without-gossip",
            "--without-mingle",
            "--loglevel=WARNING",
        ]
    )
