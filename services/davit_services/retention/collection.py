"""Collecting a BackupLocation's repository garbage (``davit.repo.gc``), asked for by the watcher every
``gc_interval_seconds`` for each Available location.

A run marks what no backup uses any more and deletes what was marked at least ``gc_grace_seconds``
before, so nothing depends on runs being regular or on one finishing: a lost, repeated or killed run is
made good by the next. Packs mostly unused are repacked below the location's ``repackBelowPercent``.
Several BackupLocations on one store collect it each in turn, which is safe.
"""

from __future__ import annotations

from typing import Any

import structlog

from davit import constants
from davit.api.objects import RawObject
from davit.constants import Kind
from davit.format.repository import FormatError
from davit.kube import events
from davit.operations.messages import Message
from davit.operations.ports import Cluster, Ports
from davit.operations.runtime import LocationUnavailable
from davit.repo import GcError, GcReport, collect
from davit.repo.gc import repack_below_of
from davit.storage.base import StorageError

log = structlog.get_logger(__name__)


def handle(ports: Ports, message: Message) -> None:
    location = ports.cluster.current(Kind.BACKUP_LOCATION, message.namespace, message.name, message.uid)
    if location is None:
        return
    if (location.get("status") or {}).get("phase") != "Available":
        log.info("gc.skipped", why="the location is not Available")
        return
    grace = ports.settings.gc_grace_seconds
    try:
        repository = ports.stores.repository(message.namespace, message.name)
        report = collect(
            repository.store, repository.sealer, grace_seconds=grace, repack_below=repack_below_of(location)
        )
    except (LocationUnavailable, StorageError, FormatError, GcError) as exc:
        # Not retried: the next period's run starts over, and whatever this one did stands.
        reason = exc.reason if isinstance(exc, LocationUnavailable) else str(exc)
        log.warning("gc.failed", reason=reason)
        _event(
            ports.cluster,
            location,
            "Warning",
            "CollectionFailed",
            f"garbage collection stopped: {reason}"[:1000],
        )
        return
    log.info("gc.done", **_summary(report))
    for warning in report.warnings:
        log.warning("gc.warning", warning=warning)
    if report.deleted or report.packs.marked or report.trees.marked or report.tree_parts.marked:
        note = (
            f"freed {report.freed_bytes} bytes in {report.deleted} object(s); "
            f"{report.waiting} unused object(s) kept for the grace period"
        )
        if report.repack.packs:
            note += (
                f"; repacked {report.repack.packs} mostly unused pack(s), "
                f"rewriting {report.repack.written_bytes} bytes"
            )
        _event(ports.cluster, location, "Normal", "Collected", note)


def _summary(report: GcReport) -> dict[str, Any]:
    return {
        "deleted": report.deleted,
        "freedBytes": report.freed_bytes,
        "keptByGrace": report.waiting,
        "packsInUse": report.packs.live,
        "packsMarked": report.packs.marked,
        "packsRepacked": report.repack.packs,
        "repackWrittenBytes": report.repack.written_bytes,
        "backups": report.backups,
        "graceSeconds": report.grace_seconds,
    }


def _event(cluster: Cluster, location: RawObject, kind: events.EventType, reason: str, message: str) -> None:
    location = {"apiVersion": constants.API_GROUP_VERSION, "kind": Kind.BACKUP_LOCATION.value, **location}
    cluster.record_event(location, kind, reason, message, constants.COMPONENT_WORKER)
