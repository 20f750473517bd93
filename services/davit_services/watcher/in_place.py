"""Workloads an in-place restore scaled down and never scaled back.

An in-place restore (``davit.volumes.in_place``) gives its workloads their replicas back when it ends; one
that failed on the way, was deleted, or whose worker died at the wrong moment leaves an application
stopped. The leading watcher looks for workloads carrying an in-place restore's label each time it relists
the restores, and scales back those whose restore is not running (after a grace period), from the record
the restore left on the workload itself.
"""

from __future__ import annotations

import structlog

from davit import timeutil
from davit.api.objects import RawObject
from davit.api.types import Stage
from davit.kube.client import ApiException
from davit.kube.cluster import KubeCluster
from davit.tenancy import UnsafeName
from davit.volumes import in_place

log = structlog.get_logger(__name__)


class InPlaceSweeper:
    def __init__(self, cluster: KubeCluster, grace_seconds: float) -> None:
        self.cluster = cluster
        self.grace_seconds = grace_seconds

    def sweep(self, restores: list[RawObject]) -> list[str]:
        """Scale back what restores no longer running left scaled down; returns the workloads."""
        running = {
            str(o["metadata"]["uid"]) for o in restores if (o.get("status") or {}).get("stage") != Stage.FINAL
        }
        try:
            held = self.cluster.list_held_workloads(in_place.RESTORE_LABEL)
        except ApiException as exc:
            log.warning("in_place.leftovers_not_listed", status=exc.status, reason=exc.reason)
            return []
        done = []
        for workload in in_place.stranded(held, running, timeutil.utcnow(), self.grace_seconds):
            meta = workload["metadata"]
            name = f"{workload['kind']} {meta['namespace']}/{meta['name']}"
            try:
                self.cluster.patch_workload(
                    workload["kind"], meta["namespace"], meta["name"], in_place.scale_back_patch(workload)
                )
            except (ApiException, UnsafeName) as exc:
                log.warning("in_place.not_scaled_back", workload=name, reason=str(exc))
                continue
            log.info("in_place.scaled_back", workload=name, restore=in_place.held_by(workload),
                     replicas=in_place.recorded_replicas(workload))  # fmt: skip
            done.append(name)
        return done
