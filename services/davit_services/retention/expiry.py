"""Deleting backups retention no longer keeps: a schedule's backups beyond its policy's rules, and ad-hoc
backups whose ``ttl`` passed.

Retention deletes the ApplicationBackup object; the backup's finalizer then sends it through the usual
deletion (``deletion.py``), which honours its ``reclaimPolicy``. Each deletion leaves an Event (on the
schedule, or on the backup itself for a ttl) and a count in ``davit_retention_deletions_total``.
"""

from __future__ import annotations

import structlog
from pydantic import ValidationError

from davit import constants, labels
from davit.api.objects import RawObject
from davit.api.types import PolicySpec
from davit.backup import schedules
from davit.constants import Kind
from davit.kube.client import ApiException
from davit.operations.messages import Message
from davit.operations.ports import Cluster, Ports
from davit.retention import deletions, expiry, rules

log = structlog.get_logger(__name__)


def _delete(cluster: Cluster, backup: RawObject) -> bool:
    meta = backup["metadata"]
    try:
        cluster.delete(Kind.APPLICATION_BACKUP, meta["namespace"], meta["name"], uid=meta["uid"])
    except ApiException as exc:
        if exc.status in (404, 409):  # gone already, or replaced by another backup of that name
            return False
        raise
    return True


def expire(ports: Ports, message: Message) -> None:
    """An ad-hoc backup's ttl passed (the watcher's resync noticed): delete it, if that is still so."""
    backup = ports.cluster.current(Kind.APPLICATION_BACKUP, message.namespace, message.name, message.uid)
    if backup is None or backup["metadata"].get("deletionTimestamp"):
        return
    if not expiry.ttl_expired(backup, ports.clock.now()):
        return
    if _delete(ports.cluster, backup):
        ttl = backup["spec"]["ttl"]
        policy = backup["spec"].get("reclaimPolicy") or "Delete"
        note = f"ttl {ttl} passed since it finished: deleted (reclaimPolicy {policy})"
        ports.cluster.record_event(backup, "Normal", "Expired", note, constants.COMPONENT_WORKER)
        ports.scratch.deletions().record(message.namespace, deletions.TTL)
        log.info("backup.expired", ttl=ttl)


def apply_schedule_retention(ports: Ports, message: Message) -> None:
    """Apply a schedule's retention to its backups, per policy type (``davit.retention.rules``)."""
    cluster = ports.cluster
    schedule = cluster.current(Kind.APPLICATION_BACKUP_SCHEDULE, message.namespace, message.name, message.uid)
    if schedule is None:
        return
    policy_name = (schedule.get("spec") or {}).get("schedulePolicyName", "")
    policy = cluster.get_as_is(Kind.SCHEDULE_POLICY, "", policy_name)
    if policy is None:
        return  # without its policy nothing says what to keep: keep everything
    # The same value the watcher labelled the backups with: a long name is shortened with a hash.
    selector = labels.selector(constants.SCHEDULE_LABEL, message.name)
    backups = cluster.list_all(
        Kind.APPLICATION_BACKUP, message.namespace, label_selector=selector, sort=False
    )
    live = [b for b in backups if not b["metadata"].get("deletionTimestamp")]
    by_name = {b["metadata"]["name"]: b for b in live}
    try:
        entries = schedules.entries(PolicySpec.model_validate(policy.get("policy") or {}))
    except ValidationError:
        return  # the watcher reports an unreadable policy on the schedule; keep everything meanwhile
    now = ports.clock.now()
    try:
        deletions_due = rules.to_delete([rules.record_of(b, now) for b in live], entries, now)
    except ValueError as exc:
        # An expireAfter too long to compute with: the watcher reports it on the schedule (PolicyInvalid);
        # keep everything meanwhile rather than fail the task on every tick.
        log.warning("schedule.retention_skipped", error=str(exc))
        return
    for deletion in deletions_due:
        if _delete(cluster, by_name[deletion.name]):
            note = f"deleted {deletion.name}: {deletion.reason}"
            cluster.record_event(schedule, "Normal", "RetentionDeleted", note, constants.COMPONENT_WORKER)
            ports.scratch.deletions().record(message.namespace, reason_code(deletion.reason))
            log.info("schedule.retention_deleted", backup=deletion.name, reason=deletion.reason)


def reason_code(reason: str) -> str:
    """The bounded metric label of a deletion's reason (``davit.retention.deletions``)."""
    if reason.startswith("its ttl"):
        return deletions.TTL
    if reason.startswith("retain"):
        return deletions.RETAIN
    if reason.startswith("older than expireAfter"):
        return deletions.EXPIRED
    return deletions.SUPERSEDED
