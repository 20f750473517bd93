"""An operation's log: in its BackupLocation once Final, in the services' Redis while it runs."""

from __future__ import annotations

from collections.abc import Callable

from davit.api.objects import RawObject, describe_ref
from davit.constants import Kind
from davit_cli.context import CliContext
from davit_cli.errors import CliError
from davit_cli.runtime import open_repository


def redis_lines(redis_url: str, uid: str) -> list[str]:
    """The log lines the services keep in Redis for the operation ``uid`` while it runs."""
    from davit.operations.scratch import operation_log_lines

    return operation_log_lines(redis_url, uid)


#: Where in its location an operation keeps its log: ``(namespace, name, uid)`` → key.
LogKey = Callable[[str, str, str], str]


def location_log(log_key: LogKey) -> Callable[[CliContext, RawObject], list[str]]:
    """``logs`` of an operation that keeps its log in its ``spec.backupLocation`` at ``log_key``."""
    return lambda cli, obj: operation_log(cli, obj, log_key)


def operation_log(cli: CliContext, obj: RawObject, log_key: LogKey) -> list[str]:
    """The log of an operation that keeps it in its ``spec.backupLocation`` (at ``log_key``) once it is
    Final, and in Redis while it runs (or when it ended before its log reached the location)."""
    meta, spec = obj["metadata"], obj.get("spec") or {}
    status = obj.get("status") or {}
    kind = Kind(obj["kind"])
    ref_text = describe_ref(kind, meta["namespace"], meta["name"])
    redis_url = cli.resolved_redis_url()
    if status.get("stage") != "Final":
        if not redis_url:
            raise CliError(
                f"{ref_text} is still running (stage {status.get('stage') or 'not yet accepted'}); "
                "its log is in the services' Redis until it finishes: pass --redis-url or set $REDIS_URL"
            )
        lines = redis_lines(redis_url, meta["uid"])
        if lines:
            return lines
        # It may have finished (and moved its log to the location) since we read it.
        latest = cli.objects().get(kind, meta["namespace"], meta["name"])
        if latest is None or (latest.get("status") or {}).get("stage") != "Final":
            return []
        obj, status = latest, latest.get("status") or {}
    from davit.storage.base import ObjectNotFound

    location_error = None
    try:
        # A restore of another namespace's backup (spec.backupNamespace) keeps its log where it read.
        where = spec.get("backupNamespace") or meta["namespace"]
        repository = open_repository(cli, where, spec.get("backupLocation", ""))
        key = log_key(meta["namespace"], meta["name"], meta["uid"])
        lines = repository.get(key).decode().splitlines()
    except ObjectNotFound:
        lines = []
    except CliError as exc:
        location_error, lines = exc.message, []
    if lines:
        return list(lines)
    if redis_url:
        lines = redis_lines(redis_url, meta["uid"])
        if lines:
            return lines
    hint = "" if redis_url else " (pass --redis-url to look in the services' Redis)"
    if location_error:
        raise CliError(f"cannot read the log of {ref_text}: {location_error}{hint}")
    raise CliError(
        f"{ref_text} ended {status.get('status')} without a log in its location "
        f"{spec.get('backupLocation')}{hint}"
    )
