"""What every queue worker shares: one Celery task per service that decodes the envelope, binds the log
context and calls the service's handler, retrying transient failures and failing the operation, with
its reason, when they persist or cannot pass.

What to do about an error is decided in one place, :func:`decide`: a ``DavitError`` says itself whether
it is retryable (``davit.errors``); any other error is classified by :func:`is_retryable`."""

from __future__ import annotations

import ctypes
import functools
import json
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
import urllib3
from celery import Celery, bootsteps
from kombu.exceptions import OperationalError

from davit import errors, health, logs, metrics
from davit.kube.client import ApiException
from davit.kube.operations import SpecChanged
from davit.operations import progress, queueing, recording, scratch
from davit.operations.messages import Message, MessageDecodeError
from davit.operations.runtime import Runtime
from davit.settings import Settings

log = structlog.get_logger(__name__)

#: Retryable failures (API server or store hiccups) are retried this often, with exponential backoff
#: (2, 4, 8, 16, 32 s), before the operation is failed with the last error as its reason.
MAX_RETRIES = 5

Handler = Callable[[Runtime, Message], None]

#: API server answers worth another try: a timeout, a conflict with a concurrent writer, throttling.
#: (5xx answers are too; any other 4xx refusal gives the same answer again.)
RETRYABLE_API_STATUSES = frozenset({408, 409, 429})

#: Failures on the way to the API server, Redis, the broker or a store.
NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    socket.gaierror,
    socket.herror,
    urllib3.exceptions.HTTPError,
    *scratch.TRANSIENT_ERRORS,
    OperationalError,
)

#: Errors that mean the code is wrong (or read data it does not expect): trying again changes nothing.
BUGS: tuple[type[BaseException], ...] = (
    TypeError,
    AttributeError,
    NameError,
    AssertionError,
    NotImplementedError,
    LookupError,
    ArithmeticError,
)


def is_retryable(exc: BaseException) -> bool:
    """Whether doing the same work again may succeed (see the module docstring of ``davit.errors``).

    * a ``DavitError``: its ``retryable``;
    * an API server answer: 5xx, 408, 409 (a concurrent writer) and 429 are, other 4xx (403, 404, 422,
      ...) are not; one without a status (the client's own failure) is;
    * connection failures and timeouts (sockets, urllib3, Redis, the broker) are;
    * programming errors (``TypeError``, ``AttributeError``, ``KeyError``/``IndexError``, ...) are not;
    * anything else is (as it always was: a failure nobody classified yet is tried again).
    """
    if isinstance(exc, errors.DavitError):
        return exc.retryable
    if isinstance(exc, ApiException):
        status = exc.status or 0
        return status == 0 or status >= 500 or status in RETRYABLE_API_STATUSES
    if isinstance(exc, NETWORK_ERRORS):
        return True
    return not isinstance(exc, BUGS)


def describe(exc: BaseException) -> str:
    """The reason an operation failed at once by ``exc`` shows: short, without a traceback."""
    if isinstance(exc, errors.DavitError):
        return exc.reason
    if isinstance(exc, ApiException):
        try:
            message = str(json.loads(exc.body or "{}").get("message") or "")
        except (ValueError, AttributeError):
            message = ""
        return f"the API server answered {exc.status} {exc.reason}" + (f": {message}" if message else "")
    return f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class Retry:
    """Run the task again after ``countdown`` seconds."""

    countdown: int


@dataclass(frozen=True)
class Fail:
    """Fail the operation now, with ``reason``."""

    reason: str
    #: The Event's reason when the error has one of its own (``SpecChanged``); else the usual ``Failed``.
    event_reason: str | None = None
    #: The error was retryable, and still failed after MAX_RETRIES retries.
    after_retries: bool = False
    #: Not an error Davit knows: logged with its traceback.
    unexpected: bool = False

    def status_reason(self, stage: str) -> str:
        """The operation's reason: an error with an Event reason of its own shows as it is, any other
        names the stage it failed in."""
        if self.event_reason:
            return self.reason
        return f"{stage} failed{' after retries' if self.after_retries else ''}: {self.reason}"


def decide(exc: BaseException, retries: int) -> Retry | Fail:
    """What to do about ``exc``, raised by a handler on its ``retries``-th retry (0: the first run)."""
    if is_retryable(exc):
        if retries < MAX_RETRIES:
            return Retry(countdown=2 ** (retries + 1))
        return Fail(str(exc), after_retries=True)
    if isinstance(exc, errors.DavitError):
        return Fail(exc.reason, event_reason=exc.event_reason)
    return Fail(describe(exc), unexpected=True)


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
            started = time.monotonic()
            failed = retried = False
            try:
                handler(rt, message)
            except Exception as exc:
                decision = decide(exc, task.request.retries)
                if isinstance(decision, Retry):
                    retried = True
                    log.warning("task.retry", error=str(exc), attempt=task.request.retries + 1)
                    raise task.retry(exc=exc, countdown=decision.countdown) from exc
                failed = True
                if decision.unexpected or decision.after_retries:
                    log.exception("task.failed", reason=decision.reason)
                else:
                    log.warning("operation.failed_now", reason=decision.reason, error=type(exc).__name__)
                _fail(rt, message, decision, exc)
            finally:
                # Every task's end is counted, a retried one too (before it goes back to its queue).
                task_metrics = metrics.task_increments(queue, time.monotonic() - started, failed, retried)
                recording.try_add(rt.scratch.metrics() if rt.scratch else None, task_metrics)

    return run_stage


def _fail(rt: Runtime, message: Message, decision: Fail, exc: BaseException) -> None:
    """Fail the message's operation unless it ended already. A SpecChanged about another object (a
    clone's staging backup) fails the message's operation naming that object."""
    reason = decision.status_reason(message.stage)
    obj: dict[str, Any] | None = None
    if isinstance(exc, SpecChanged):
        meta = exc.obj["metadata"]
        same = (exc.obj.get("kind"), meta.get("namespace"), meta.get("name")) == (
            message.kind.value, message.namespace, message.name,
        )  # fmt: skip
        if same:
            obj = exc.obj
        else:
            reason = f"{exc.obj.get('kind')} {meta.get('name')}: {reason}"
    if obj is None:
        obj = rt.ops.get_as_is(message.kind, message.namespace, message.name)
    if (
        obj is not None
        and obj["metadata"]["uid"] == message.uid
        and (obj.get("status") or {}).get("stage") != "Final"
    ):
        progress.fail(rt, message.kind, obj, reason, event_reason=decision.event_reason)


class ConsumerHeartbeat(bootsteps.StartStopStep):  # type: ignore[misc]
    """A consumer bootstep that beats the heartbeat file (``davit.health``) every few seconds while the
    worker's consumer runs, and removes it when the consumer stops (a lost broker connection, shutdown):
    the pod's readiness and liveness probes read it. The beat runs on the worker's timer, so a worker
    whose timer or process hangs stops beating too."""

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.heartbeat = health.Heartbeat(parent.app.conf.get(HEARTBEAT_FILE_SETTING, ""))
        self.tref: Any = None

    def start(self, parent: Any) -> None:
        self.heartbeat.beat()
        self.tref = parent.timer.call_repeatedly(health.BEAT_SECONDS, self.heartbeat.beat, priority=10)

    def stop(self, parent: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None
        self.heartbeat.stop()

    def shutdown(self, parent: Any) -> None:
        self.stop(parent)


#: The app setting the heartbeat step reads its file from (set by ``main`` from the service's settings).
HEARTBEAT_FILE_SETTING = "davit_heartbeat_file"


#: glibc's mallopt parameter for the number of malloc arenas (malloc.h: ``M_ARENA_MAX``).
_M_ARENA_MAX = -8
#: Arenas a worker's threads share. glibc gives each thread an arena of its own (up to 8 per core), each
#: keeping its high-water mark: four task threads each briefly holding a part of 500 objects and their
#: bodies grew a restore worker by ~90 MB that it never gave back.
MALLOC_ARENAS = 2


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas before any thread starts (as ``MALLOC_ARENA_MAX`` would); False where
    the C library is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False


def main(app: Celery, queue: str, service: str) -> None:
    """Run a worker consuming ``queue`` until SIGTERM."""
    limit_malloc_arenas()
    settings = Settings.from_args(description=f"Davit {service} worker")
    logs.configure(service, settings.log_level)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    app.conf[HEARTBEAT_FILE_SETTING] = settings.heartbeat_file
    app.steps["consumer"].add(ConsumerHeartbeat)
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
