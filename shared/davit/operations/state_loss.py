"""A running operation whose scratch state is gone (Redis flushed, or restarted without its data).

Every operation's state carries a layout marker (``OperationState.lay_out``), written before the state
it vouches for. At each stage boundary, and when the watcher re-drives a stalled stage, the worker looks
for it: an empty set of outstanding parts with the marker present means "nothing left to do", without it
"the state is gone". Then ``ON_LOSS`` says, per kind and stage, whether the operation rebuilds its state
from its custom resource and its location and goes on, or ends Failed with the reason ``StateLost``
(never Successful with missing parts, never stuck). ``docs/architecture.md`` ("Lost scratch state") has
the table and why each entry is what it is.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from enum import StrEnum
from typing import Final

import structlog

from davit import constants
from davit.api.objects import RawObject
from davit.api.types import Stage
from davit.constants import Kind
from davit.operations import progress
from davit.operations.ports import Moving
from davit.operations.scratch import OperationState

log = structlog.get_logger(__name__)

#: The status reason (prefix) and Event reason of an operation failed because its scratch state was lost.
STATE_LOST: Final = constants.STATE_LOST_REASON
#: How long one task holds the right to rebuild a lost state (``OperationState.take_rebuild``); a task
#: that died rebuilding leaves it to the watcher's next re-drive after this.
REBUILD_SECONDS: Final = 60.0


class OnLoss(StrEnum):
    #: Laid out again from the custom resource and the location; the stage goes on.
    REBUILD = "rebuild"
    #: The operation ends Failed with ``StateLost``.
    FAIL = "fail"
    #: Rebuilt only when the operation has no volume data (a backup's Applications: see ``backup_on_loss``).
    REBUILD_WITHOUT_VOLUMES = "rebuild-without-volumes"


_B, _R, _C = Kind.APPLICATION_BACKUP, Kind.APPLICATION_RESTORE, Kind.APPLICATION_CLONE

#: (kind, stage the loss is noticed in) → what happens. Stages not listed keep no scratch state besides
#: the log (Initial and PreExecRule run in one task; a clone's state is its staging operations' CRs).
ON_LOSS: Final[Mapping[tuple[Kind, Stage], OnLoss]] = {
    (_B, Stage.VOLUMES): OnLoss.FAIL,
    (_B, Stage.APPLICATIONS): OnLoss.REBUILD_WITHOUT_VOLUMES,
    (_B, Stage.POST_EXEC_RULE): OnLoss.FAIL,
    (_R, Stage.APPLICATIONS): OnLoss.REBUILD,
    (_R, Stage.VOLUMES): OnLoss.REBUILD,
}

_WHY: Final[Mapping[tuple[Kind, Stage], str]] = {
    (_B, Stage.VOLUMES): "the volumes' plans and the results stored so far are gone, and reading the "
    "volumes again would not be the copy the backup's rules prepared",
    (_B, Stage.APPLICATIONS): "the results of the volumes already stored are gone",
    (_B, Stage.POST_EXEC_RULE): "the list of what was written is gone; no manifest was written",
}


def on_loss(kind: Kind, stage: Stage) -> OnLoss:
    """What a ``kind`` in ``stage`` does when its state is lost (FAIL where the table says nothing)."""
    return ON_LOSS.get((kind, stage), OnLoss.FAIL)


def has_volume_data(obj: RawObject) -> bool:
    """Whether a backup's status lists a volume whose data it backs up (not skipped): its results are
    only in the scratch state until the manifest is written."""
    volumes = (obj.get("status") or {}).get("volumes") or []
    return any(isinstance(v, dict) and v.get("mode") != "skip" for v in volumes)


def backup_on_loss(obj: RawObject, stage: Stage) -> OnLoss:
    """A backup's table entry, with ``REBUILD_WITHOUT_VOLUMES`` decided by its status."""
    action = on_loss(_B, stage)
    if action == OnLoss.REBUILD_WITHOUT_VOLUMES:
        return OnLoss.FAIL if has_volume_data(obj) else OnLoss.REBUILD
    return action


def reason(kind: Kind, stage: Stage) -> str:
    why = _WHY.get((kind, stage), "what was done so far cannot be known")
    return f"{STATE_LOST}: the operation's scratch state was lost in stage {stage.value} ({why})"


def is_lost(state: OperationState) -> bool:
    """Whether the state is gone (its layout marker is)."""
    return state.laid_out() is None


def fail(ports: Moving, kind: Kind, obj: RawObject, stage: Stage, state: OperationState) -> None:
    """End ``obj`` Failed with ``StateLost`` (a Warning Event of that name)."""
    text = reason(kind, stage)
    log.warning("state.lost", stage=stage.value, action=OnLoss.FAIL.value)
    state.log("state.lost", stage=stage.value, action=OnLoss.FAIL.value, reason=text)
    progress.fail(ports, kind, obj, text, event_reason=STATE_LOST)


def claim_rebuild(state: OperationState, seconds: float = REBUILD_SECONDS) -> bool:
    """True for the one task that lays the state out (or rebuilds it) in the next ``seconds``: the task
    laying it out first takes it too, so a re-drive while it works is not taken for a loss."""
    return state.take_rebuild(uuid.uuid4().hex, seconds)


def note_rebuilt(ports: Moving, kind: Kind, obj: RawObject, stage: Stage, state: OperationState) -> None:
    """Record that the state was rebuilt: a Normal Event ``StateRebuilt`` and a log line."""
    log.warning("state.lost", stage=stage.value, action=OnLoss.REBUILD.value)
    state.log("state.rebuilt", stage=stage.value)
    ports.cluster.record_event(
        obj, "Normal", "StateRebuilt",
        f"Stage {stage.value}: the scratch state was lost and is rebuilt from the resource and its location",
        constants.COMPONENT_WORKER,
    )  # fmt: skip
