"""The data mover's helper pods and temporary claims whose operation has ended.

A backup's finish and a restore's finish delete the temporary objects they made
(``davit.volumes.mover``); an operation that failed, or was deleted, or whose worker died at the wrong
moment leaves them behind, and a helper pod holds its claim, and with it a volume, until it goes. The
leading watcher looks for such objects each time it relists the backups or the restores and deletes
those whose operation is not one of the listed operations still running (``mover.leftovers`` decides).
"""

from __future__ import annotations

import structlog

from davit import timeutil
from davit.api.objects import RawObject
from davit.api.types import Stage
from davit.kube.client import ApiException
from davit.kube.cluster import KubeCluster
from davit.volumes import mover

log = structlog.get_logger(__name__)


class MoverSweeper:
    def __init__(self, cluster: KubeCluster, grace_seconds: float) -> None:
        self.cluster = cluster
        self.grace_seconds = grace_seconds

    def sweep(self, kind: str, operations: list[RawObject]) -> list[str]:
        """Delete the temporary objects of ``kind`` (backup or restore) whose operation is not among the
        running ones of ``operations`` (every one of that kind, just listed); returns what was deleted.
        Errors are logged: the next relist tries again."""
        running = {
            str(o["metadata"]["uid"])
            for o in operations
            if (o.get("status") or {}).get("stage") != Stage.FINAL
        }
        try:
            items = self.cluster.list_temporary()
        except ApiException as exc:
            log.warning("mover.leftovers_not_listed", status=exc.status, reason=exc.reason)
            return []
        uid_label = mover.BACKUP_UID_LABEL if kind == mover.BACKUP else mover.RESTORE_UID_LABEL
        # Per operation and namespace, with the selector the operation's own clean-up uses.
        groups = sorted({
            (str(i["metadata"]["namespace"]), str(i["metadata"]["labels"][uid_label]))
            for i in mover.leftovers(items, kind, running, timeutil.utcnow(), self.grace_seconds)
        })  # fmt: skip
        deleted: list[str] = []
        for namespace, uid in groups:
            try:
                deleted += self.cluster.delete_temporary(namespace, mover.selector(kind, uid))
            except ApiException as exc:
                log.warning("mover.leftovers_not_deleted", namespace=namespace, uid=uid, status=exc.status)
        if deleted:
            log.info("mover.leftovers_removed", removed=deleted)
        return deleted
