"""Snapshot copies whose restore is gone.

A restore into another namespace restores a claim from a copy of its backup's VolumeSnapshot (a
pre-provisioned VolumeSnapshotContent, ``Retain``, and a VolumeSnapshot bound to it), labelled with the
restore's uid; the restore removes its copies when it reaches Final. A restore deleted before that
leaves them behind. The leading watcher looks for such copies each time it relists the restores and
deletes those whose restore uid no restore has (``davit.restore.snapshots.orphaned_copies`` decides; the
storage snapshot stays, held by the backup's own content).
"""

from __future__ import annotations

import structlog

from davit import timeutil
from davit.api.objects import RawObject
from davit.backup.selection import ApiResource
from davit.kube.client import ApiException
from davit.kube.cluster import KubeCluster
from davit.restore.snapshots import CONTENTS, RESTORE_UID_LABEL, SNAPSHOTS, orphaned_copies

log = structlog.get_logger(__name__)

#: Copies listed per call (they are few: one per claim of a restore in flight).
PAGE = 500


class CopySweeper:
    def __init__(self, cluster: KubeCluster, grace_seconds: float) -> None:
        self.cluster = cluster
        self.grace_seconds = grace_seconds

    def sweep(self, restores: list[RawObject]) -> list[str]:
        """Delete the copies of restores not in ``restores`` (every restore, just listed); returns what
        was deleted. Errors are logged: the next relist tries again."""
        live = {str(r["metadata"]["uid"]) for r in restores}
        try:
            # Snapshots before contents: a content is deleted only after the snapshot bound to it.
            items = self._list(SNAPSHOTS) + self._list(CONTENTS)
        except ApiException as exc:
            log.warning("volumesnapshot.copies_not_listed", status=exc.status, reason=exc.reason)
            return []
        deleted = []
        for item in orphaned_copies(items, live, timeutil.utcnow(), self.grace_seconds):
            meta = item["metadata"]
            resource = SNAPSHOTS if item.get("kind") == SNAPSHOTS.kind else CONTENTS
            name, namespace = meta["name"], meta.get("namespace")
            try:
                self.cluster.delete_object(resource, namespace, name, "Background")
            except ApiException as exc:
                if exc.status != 404:
                    log.warning("volumesnapshot.copy_not_deleted", name=name, namespace=namespace,
                                status=exc.status)  # fmt: skip
                    continue
            deleted.append(f"{resource.kind} {namespace + '/' if namespace else ''}{name}")
        if deleted:
            log.info("volumesnapshot.orphan_copies_removed", removed=deleted)
        return deleted

    def _list(self, resource: ApiResource) -> list[RawObject]:
        items: list[RawObject] = []
        token = None
        while True:
            try:
                page = self.cluster.list_page(resource, None, RESTORE_UID_LABEL, PAGE, token)
            except ApiException as exc:
                if exc.status == 404:  # no snapshot CRDs on this cluster: nothing to sweep
                    return []
                raise
            items += [{**item, "kind": resource.kind} for item in page.items]
            token = page.continue_token
            if not token:
                return items
