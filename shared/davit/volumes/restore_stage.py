"""A restore's volumes as the restore service and the node agents share them (scratch state and the
hand-over that finishes the restore)."""

from __future__ import annotations

from davit.api.objects import RawObject
from davit.api.types import Stage, Status
from davit.constants import Kind
from davit.operations import progress, stages
from davit.operations.ports import Moving
from davit.operations.scratch import RestoreScratch
from davit.volumes import backup_stage

KIND = Kind.APPLICATION_RESTORE

#: The scratch-state group of a restore's outstanding volumes, and their parts' prefix.
GROUP = RestoreScratch.VOLUME_GROUP
PART_PREFIX = "volume:"
#: The part of the message that asks the restore service to finish once every volume is done (the stage
#: machine's hand-over, davit.operations.stages).
FINISH_PART = stages.FINISH_PART
#: Where each volume's tree and, once known, its target are kept.
TARGETS = RestoreScratch.VOLUME_TARGETS
#: The volume modes whose files a backup holds: read from a pod's volume, or from a claim made from the
#: volume's snapshot (the data mover, ``davit.volumes.mover``).
FILE_MODES = ("filesystem", "datamover")


def backup_trees(manifest: RawObject, namespace_mapping: dict[str, str]) -> dict[str, str]:
    """``<target namespace>/<claim>`` → the tree the backup's manifest records for it (filesystem and
    data-mover volumes that succeeded), after the restore's namespace mapping: what a node agent may
    restore into a claim, whatever the scratch state says."""
    trees: dict[str, str] = {}
    for volume in manifest.get("volumes") or []:
        if not isinstance(volume, dict) or volume.get("mode") not in FILE_MODES:
            continue
        if volume.get("status") != Status.SUCCESSFUL or not isinstance(volume.get("tree"), str):
            continue
        namespace = str(volume.get("namespace") or "")
        trees[f"{namespace_mapping.get(namespace, namespace)}/{volume.get('persistentVolumeClaim')}"] = (
            volume["tree"]
        )
    return trees


def fail_volume(ports: Moving, obj: RawObject, state: RestoreScratch, part: str, reason: str) -> None:
    meta = obj["metadata"]
    claim_part = part.removeprefix(PART_PREFIX)
    state.log("volume.failed", claim=claim_part, reason=reason)
    backup_stage.update_volume(ports, meta["namespace"], meta["name"], claim_part,
                               {"status": Status.FAILED.value, "reason": reason}, kind=KIND)  # fmt: skip
    volume_done(ports, obj, state, part)


def volume_done(ports: Moving, obj: RawObject, state: RestoreScratch, part: str) -> None:
    """A volume is done (either way): the last one asks the restore service to finish."""
    if state.finish(part, group=GROUP):
        progress.advance(ports, KIND, obj, Stage.VOLUMES, stages.Outcome.PARTS_DONE)
