"""structlog JSON logging: one line per event, carrying the service and whatever operation context
(kind, namespace, name, uid, stage, task id) is bound while the event happens."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import structlog

_REDACTED = "[redacted]"
#: Keys whose values never reach a log line, wherever they appear in an event.
SECRET_KEYS = frozenset(
    {
        "secretaccesskey", "accesskeyid", "storageaccountkey", "encryptionkey", "password", "token",
        "secret", "authorization", "connection_string", "connectionstring", "access_key", "secret_key",
    }
)  # fmt: skip


_FLAT_SECRET_KEYS = frozenset(k.replace("_", "") for k in SECRET_KEYS)


def is_secret_key(key: str) -> bool:
    return key.replace("-", "").replace("_", "").lower() in _FLAT_SECRET_KEYS


def redact(value: Any) -> Any:
    """A copy of ``value`` with the values under secret-looking keys replaced."""
    if isinstance(value, dict):
        return {k: _REDACTED if is_secret_key(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def _redact_processor(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    redacted: dict[str, Any] = redact(event)
    return redacted


def configure(service: str, level: str = "INFO") -> None:
    """Send JSON lines to stderr, each with ``service`` and the bound context; also route the standard
    library's logging (Celery, urllib3, the Kubernetes client) through the same renderer."""

    def add_service(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
        # A processor, not a context variable: threads start with an empty context.
        event.setdefault("service", service)
        return event

    shared: list[Any] = [
        add_service,
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact_processor,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)


#: The context keys whose structlog ContextVar exists already (see ``_make_vars``).
_MADE: set[str] = set()
_MAKING = threading.Lock()


def _make_vars(keys: Iterable[str]) -> None:
    """structlog makes a key's ContextVar on the key's first use, without a lock: two task threads binding
    a new key at once (the first tasks of a freshly started worker) each make one, one replaces the other,
    and the loser's reset fails ("created by a different ContextVar"), failing its task. Each key's is made
    once, here, under a lock."""
    new = [k for k in keys if k not in _MADE]
    if not new:
        return
    with _MAKING:
        new = [k for k in new if k not in _MADE]
        if new:
            structlog.contextvars.reset_contextvars(
                **structlog.contextvars.bind_contextvars(**dict.fromkeys(new))
            )
            _MADE.update(new)


@contextmanager
def operation_context(**context: Any) -> Iterator[None]:
    """Bind operation fields (kind, namespace, name, uid, stage, task_id) to every log line inside."""
    _make_vars(context)
    tokens = structlog.contextvars.bind_contextvars(**{k: v for k, v in context.items() if v is not None})
    try:
        yield
    finally:
        structlog.contextvars.reset_contextvars(**tokens)
