"""Which service owns which stage of which operation: the routing of the stage machine (pure)."""

from __future__ import annotations

from davit.api.types import Stage
from davit.constants import Kind, Queue

#: The service that moves an operation forward from each stage. A backup's rules and volumes belong to
#: the snapshot service and its resources to resource-export; a restore is driven by the restore service
#: throughout; so is a clone, which runs a backup of its source (Volumes) and a restore of that backup
#: (Applications) and follows them.
_OWNERS: dict[Kind, dict[Stage, Queue]] = {
    Kind.APPLICATION_BACKUP: {
        Stage.INITIAL: Queue.SNAPSHOT,
        Stage.PRE_EXEC_RULE: Queue.SNAPSHOT,
        Stage.VOLUMES: Queue.SNAPSHOT,
        Stage.APPLICATIONS: Queue.EXPORT,
        Stage.POST_EXEC_RULE: Queue.SNAPSHOT,
    },
    Kind.APPLICATION_RESTORE: {
        Stage.INITIAL: Queue.RESTORE,
        Stage.VOLUMES: Queue.RESTORE,
        Stage.APPLICATIONS: Queue.RESTORE,
    },
    Kind.APPLICATION_CLONE: {
        Stage.INITIAL: Queue.RESTORE,
        Stage.VOLUMES: Queue.RESTORE,
        Stage.APPLICATIONS: Queue.RESTORE,
    },
}


def owner(kind: Kind, stage: Stage) -> Queue | None:
    """The queue whose workers advance ``kind`` from ``stage``; None when nothing is left to do."""
    return _OWNERS.get(kind, {}).get(stage)
