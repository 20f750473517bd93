"""Syncing a BackupLocation (``sync: true``): the backups in its location become ApplicationBackup CRs
in its namespace, and leave again when their backup leaves the location.

``davit.retention.location_sync`` decides; this module lists, reads manifests and writes. Each sync starts
from
what the location and the cluster hold now, so a lost, repeated or interrupted sync is repaired by the
next one (the watcher asks for one every ``location_check_seconds`` while the location is Available).
"""

from __future__ import annotations

import json
from typing import Any

import structlog

from davit import constants, timeutil
from davit.api.objects import RawObject
from davit.constants import Kind
from davit.format.layout import BackupRef
from davit.format.repository import BackupRepository, FormatError
from davit.format.sealing import CorruptObject
from davit.kube import events
from davit.kube.client import ApiException
from davit.operations.messages import Message
from davit.operations.ports import Cluster, Ports
from davit.operations.runtime import LocationUnavailable
from davit.retention import location_sync
from davit.retention.location_sync import SyncPlan
from davit.storage.base import StorageError

log = structlog.get_logger(__name__)
#: Names listed in one Event before "and N more" (an Event message is at most 1 KiB).
_NAMES_IN_EVENT = 10


def handle(ports: Ports, message: Message) -> None:
    cluster = ports.cluster
    location = cluster.current(Kind.BACKUP_LOCATION, message.namespace, message.name, message.uid)
    if location is None:
        return
    if not (location.get("location") or {}).get("sync"):
        log.info("sync.skipped", why="sync is off")
        return
    meta = location["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    admin = ports.settings.admin_namespace
    try:
        repository = ports.stores.repository(namespace, name)
        present = list(repository.list_backups(location_sync.scope(namespace, admin)))
    except (LocationUnavailable, StorageError, FormatError) as exc:
        # Nothing is removed when the location cannot be listed: an outage must not look like an
        # empty location. The next periodic sync tries again.
        reason = exc.reason if isinstance(exc, LocationUnavailable) else str(exc)
        log.warning("sync.unavailable", reason=reason)
        _event(cluster, location, "Warning", "SyncFailed", f"cannot list the location: {reason}")
        return
    plan = location_sync.plan(namespace, name, admin, present, _backups(cluster, namespace, admin))
    failures = _apply(cluster, location, repository, plan)
    try:
        cluster.patch_status(
            Kind.BACKUP_LOCATION, location, {"lastSynced": timeutil.format_time(timeutil.utcnow())}
        )
    except ApiException as exc:
        if exc.status == 404:  # the location was deleted meanwhile; its imports stay as they are
            return
        raise
    log.info(
        "sync.done", listed=len(present), imported=sum(1 for i in plan.create if i.name not in failures),
        completed=len(plan.complete), removed=len(plan.delete), conflicts=len(plan.conflicts),
        failed=len(failures),
    )  # fmt: skip
    _report(cluster, location, plan, failures)


def _backups(cluster: Cluster, namespace: str, admin_namespace: str) -> list[RawObject]:
    """The ApplicationBackups the plan needs to see: the namespace's, or every one for the admin
    namespace (whose imports come from every namespace)."""
    scope = None if location_sync.scope(namespace, admin_namespace) is None else namespace
    return cluster.list_all(Kind.APPLICATION_BACKUP, scope, sort=False)


def _apply(
    cluster: Cluster, location: RawObject, repository: BackupRepository, plan: SyncPlan
) -> dict[str, str]:
    """Carry out ``plan``: removals first (they may free a name an import needs), then imports, then
    the statuses of imports an interrupted sync left without one. Returns {import name: why it failed}."""
    meta = location["metadata"]
    for removal in plan.delete:
        try:
            cluster.delete(Kind.APPLICATION_BACKUP, meta["namespace"], removal.name, uid=removal.uid)
        except ApiException as exc:
            if exc.status not in (404, 409):  # gone already, or replaced by another object
                raise
        log.info("sync.removed", backup=removal.name, source=location_sync.format_source(removal.source))
    failures: dict[str, str] = {}
    for item in plan.create:
        prepared = _prepare(meta, repository, item, failures)
        if prepared is None:
            continue
        body, status = prepared
        try:
            created = cluster.create(Kind.APPLICATION_BACKUP, meta["namespace"], body)
        except ApiException as exc:
            if exc.status in (400, 422):
                # The manifest's spec is not one the API server takes: this backup is skipped, the
                # others go on.
                failures[item.name] = f"refused by the API server: {_api_reason(exc)}"
                continue
            if exc.status != 409:
                raise
            # Taken between our list and the create (a removal still finishing, or a user's create):
            # the next sync sees who holds the name.
            failures[item.name] = "the name was taken meanwhile"
            continue
        # A status subresource ignores status on create: it is written right after. A crash in between
        # leaves an import without status, which the watcher leaves alone and the next sync completes.
        _write_status(cluster, created, status, failures, item.name)
        log.info("sync.imported", backup=item.name, source=location_sync.format_source(item.source))
    for item in plan.complete:
        prepared = _prepare(meta, repository, item, failures)
        obj = cluster.get(Kind.APPLICATION_BACKUP, meta["namespace"], item.name)
        if prepared is not None and obj is not None:
            _write_status(cluster, obj, prepared[1], failures, item.name)
    return failures


def _prepare(
    meta: RawObject, repository: BackupRepository, item: location_sync.Import, failures: dict[str, str]
) -> tuple[RawObject, RawObject] | None:
    """The import's object and status, from its manifest; None (and the reason in ``failures``) when the
    manifest cannot be read or does not have the shape of one. Both are built before anything is created,
    so a malformed manifest leaves nothing behind."""
    manifest = _manifest(repository, item.source, failures, item.name)
    if manifest is None:
        return None
    path = f"{repository.store.url.rstrip('/')}/{item.source.root}"
    now = timeutil.format_time(timeutil.utcnow())
    try:
        body = location_sync.imported_backup(meta["namespace"], meta["name"], item, manifest)
        status = location_sync.imported_status(meta["name"], manifest, path, now)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        failures[item.name] = f"malformed manifest {item.source.manifest}: {exc!r}"[:500]
        log.warning("sync.manifest_malformed", backup=item.name, error=repr(exc))
        return None
    return body, status


def _manifest(
    repository: BackupRepository, ref: BackupRef, failures: dict[str, str], name: str
) -> dict[str, Any] | None:
    try:
        return repository.read_manifest(ref)
    except (StorageError, CorruptObject, FormatError, ValueError) as exc:
        # One unreadable backup (another encryptionKey, a newer format, one larger or more deeply nested
        # than Davit reads, a plain one in an encrypted location) must not stop the others.
        failures[name] = f"unreadable manifest: {exc}"
        log.warning("sync.manifest_unreadable", backup=name, error=str(exc))
        return None


def _write_status(
    cluster: Cluster, obj: RawObject, status: RawObject, failures: dict[str, str], name: str
) -> None:
    try:
        cluster.patch_status(Kind.APPLICATION_BACKUP, obj, status)
    except ApiException as exc:
        if exc.status not in (400, 422):
            raise
        failures[name] = f"status refused by the API server: {_api_reason(exc)}"


def _api_reason(exc: ApiException) -> str:
    try:
        message = str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except (ValueError, AttributeError):
        message = str(exc.reason)
    return message[:300]


def _report(cluster: Cluster, location: RawObject, plan: SyncPlan, failures: dict[str, str]) -> None:
    imported = [i.name for i in plan.create if i.name not in failures]
    if imported or plan.delete:
        removed = [r.name for r in plan.delete]
        note = (
            f"imported {len(imported)} backup(s){_names(imported)}; removed {len(removed)}{_names(removed)}"
        )
        _event(cluster, location, "Normal", "Synced", note)
    problems = [
        f"{c.name} ({location_sync.format_source(c.source)}): taken by {c.holder}" for c in plan.conflicts
    ]
    problems += [f"{name}: {why}" for name, why in failures.items()]
    if problems:
        shown = "; ".join(problems[:_NAMES_IN_EVENT])
        more = f"; and {len(problems) - _NAMES_IN_EVENT} more" if len(problems) > _NAMES_IN_EVENT else ""
        _event(cluster, location, "Warning", "ImportSkipped", f"not imported: {shown}{more}")
        for problem in problems:
            log.warning("sync.not_imported", problem=problem)


def _names(names: list[str]) -> str:
    if not names:
        return ""
    more = f", … ({len(names) - _NAMES_IN_EVENT} more)" if len(names) > _NAMES_IN_EVENT else ""
    return f" ({', '.join(names[:_NAMES_IN_EVENT])}{more})"


def _event(cluster: Cluster, location: RawObject, kind: events.EventType, reason: str, message: str) -> None:
    location = {"apiVersion": constants.API_GROUP_VERSION, "kind": Kind.BACKUP_LOCATION.value, **location}
    cluster.record_event(location, kind, reason, message, constants.COMPONENT_WORKER)
