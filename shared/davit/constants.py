"""Names shared by every service: the API group, kinds, queues, annotations and Redis keys.

Kept in one module so that a typo is an import error rather than a message nobody consumes.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

API_GROUP: Final = "davit.dev"
API_VERSION: Final = "v1alpha1"
API_GROUP_VERSION: Final = f"{API_GROUP}/{API_VERSION}"

#: Annotation and label prefix (Stork's ``stork.libopenstorage.org/`` maps to this).
ANNOTATION_PREFIX: Final = f"{API_GROUP}/"
SKIP_RESOURCE_ANNOTATION: Final = f"{ANNOTATION_PREFIX}skip-resource"
#: Stork's own annotation (seeds/000 puts it on its credentials Secrets and BackupLocations): honoured
#: as written, so a Stork YAML whose annotations were not renamed still keeps its credentials out.
STORK_SKIP_RESOURCE_ANNOTATION: Final = "stork.libopenstorage.org/skipresource"
#: Every spelling that keeps an object out of a backup: Davit's, Davit's in Stork's spelling
#: (``skipresource``), and Stork's own.
SKIP_RESOURCE_ANNOTATIONS: Final = (
    SKIP_RESOURCE_ANNOTATION, f"{ANNOTATION_PREFIX}skipresource", STORK_SKIP_RESOURCE_ANNOTATION,
)  # fmt: skip
VOLUME_MODE_ANNOTATION: Final = f"{ANNOTATION_PREFIX}volume-mode"
#: Label on a backup created by an ApplicationBackupSchedule: the schedule's name (metrics group by it).
SCHEDULE_LABEL: Final = f"{ANNOTATION_PREFIX}schedule"

#: Finalizer on backups that have (or may have) written data: the retention service removes it once the
#: data has been dealt with according to the backup's reclaimPolicy.
BACKUP_FINALIZER: Final = f"{API_GROUP}/backup-data"

#: Namespace whose objects may act across namespaces (Stork's default admin namespace).
DEFAULT_ADMIN_NAMESPACE: Final = "kube-system"

#: Reported as the Event source and the Lease holder prefix.
COMPONENT_WATCHER: Final = "davit-watcher"
#: The Event source of the queue workers (snapshot, resource-export, restore, retention).
COMPONENT_WORKER: Final = "davit-worker"


class Kind(StrEnum):
    """The Davit custom resource kinds."""

    APPLICATION_BACKUP = "ApplicationBackup"
    APPLICATION_RESTORE = "ApplicationRestore"
    APPLICATION_CLONE = "ApplicationClone"
    BACKUP_LOCATION = "BackupLocation"
    SCHEDULE_POLICY = "SchedulePolicy"
    APPLICATION_BACKUP_SCHEDULE = "ApplicationBackupSchedule"
    RULE = "Rule"


#: Plural resource names, as used in API paths.
PLURALS: Final[dict[Kind, str]] = {
    Kind.APPLICATION_BACKUP: "applicationbackups",
    Kind.APPLICATION_RESTORE: "applicationrestores",
    Kind.APPLICATION_CLONE: "applicationclones",
    Kind.BACKUP_LOCATION: "backuplocations",
    Kind.SCHEDULE_POLICY: "schedulepolicies",
    Kind.APPLICATION_BACKUP_SCHEDULE: "applicationbackupschedules",
    Kind.RULE: "rules",
}

#: Kinds whose objects are operations with a stage machine (they get work enqueued).
OPERATION_KINDS: Final = (Kind.APPLICATION_BACKUP, Kind.APPLICATION_RESTORE, Kind.APPLICATION_CLONE)


class Queue(StrEnum):
    """One Celery queue per worker type (SPEC §1). Node queues are per node, see ``node_queue``."""

    SNAPSHOT = "davit.snapshot"
    EXPORT = "davit.export"
    RESTORE = "davit.restore"
    RETENTION = "davit.retention"


class RetentionAction(StrEnum):
    """What a message on the retention queue asks for (its ``stage`` field): the watcher and the location
    checks send them, the retention service dispatches on them. They move no operation through its
    stages (davit.operations.stages)."""

    #: A backup being deleted: deal with its data according to its reclaimPolicy (the watcher sends it).
    DELETE = "Delete"
    #: A finished backup whose ttl passed: delete it (the watcher's resync sends it).
    EXPIRE = "Expire"
    #: A schedule's retention is due: delete its backups beyond their policy's limits.
    RETAIN = "Retain"
    #: Import the backups a BackupLocation holds that the cluster does not know.
    SYNC = "Sync"
    #: Collect a BackupLocation's unreferenced data.
    COLLECT = "Collect"


NODE_QUEUE_PREFIX: Final = "davit.node."


def node_queue(node_name: str) -> str:
    """The queue of the node agent running on ``node_name``."""
    return f"{NODE_QUEUE_PREFIX}{node_name}"


#: Redis key prefix for anything Davit keeps in Redis besides Celery's own keys.
REDIS_KEY_PREFIX: Final = "davit:"

#: The reason (prefix) of an operation failed because its scratch state in Redis was lost and could not be
#: rebuilt (``davit.operations.state_loss``); the metrics count these apart.
STATE_LOST_REASON: Final = "StateLost"
