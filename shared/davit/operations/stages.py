"""The stage machine of Davit's operations as one table (pure): which stage and status an operation moves
to from each stage on each outcome, which service carries on from there, and whether a message is sent.

Every worker moves an operation on through ``davit.operations.progress.advance``, which looks the step up
here; the watcher's routing (``owner``) is derived from the same table. A backup's rules and volumes
belong to the snapshot service and its resources to resource-export; a restore is driven by the restore
service throughout; so is a clone, which runs a backup of its source (Volumes) and a restore of that
backup (Applications) and follows them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from davit.api.types import Stage, Status
from davit.constants import Kind, Queue


class Outcome(StrEnum):
    """What happened in the operation's current stage: the table's input besides kind and stage."""

    #: The watcher accepted the operation; the first stage's message goes out.
    ACCEPTED = "Accepted"
    #: A worker took the stage's message and works on (the same task carries on).
    STARTED = "Started"
    #: The stage's work is done: on to the next stage.
    DONE = "Done"
    #: Every part of the stage is done: the stage's owner is asked to finish it (no status write).
    PARTS_DONE = "PartsDone"
    #: A restore's objects and volume data are written; its hooks run next (PostExecRule).
    RESTORED = "Restored"
    #: The operation ended and everything in scope was done.
    SUCCEEDED = "Succeeded"
    #: The operation ended with some volumes or resources failed.
    PARTIALLY_SUCCEEDED = "PartiallySucceeded"
    #: The operation ended failed.
    FAILED = "Failed"


@dataclass(frozen=True)
class Step:
    """Where an operation goes: its new stage and status (``None``: no status is written), the queue
    whose workers carry on from the new stage (``None`` at Final) and whether a message is sent there
    (``send``; otherwise the worker that advanced it carries on in the same task)."""

    stage: Stage
    status: Status | None
    queue: Queue | None = None
    send: bool = False
    #: The part of the message sent (a hand-over to a part of the stage's owner).
    part: str = ""


#: The part of a restore's Volumes message that asks the restore service to finish once every volume is
#: done (sent by the node agent writing the last volume).
FINISH_PART: Final = "finish"

_FINAL_SUCCESSFUL = Step(Stage.FINAL, Status.SUCCESSFUL)
_FINAL_PARTIAL = Step(Stage.FINAL, Status.PARTIAL_SUCCESS)
_FINAL_FAILED = Step(Stage.FINAL, Status.FAILED)
_ENDINGS: Final = {
    Outcome.SUCCEEDED: _FINAL_SUCCESSFUL,
    Outcome.PARTIALLY_SUCCEEDED: _FINAL_PARTIAL,
    Outcome.FAILED: _FINAL_FAILED,
}


def _failing(kind: Kind, *stages: Stage) -> dict[tuple[Kind, Stage, Outcome], Step]:
    return {(kind, stage, Outcome.FAILED): _FINAL_FAILED for stage in stages}


def _ending(kind: Kind, stage: Stage) -> dict[tuple[Kind, Stage, Outcome], Step]:
    return {(kind, stage, outcome): step for outcome, step in _ENDINGS.items()}


_B, _R, _C = Kind.APPLICATION_BACKUP, Kind.APPLICATION_RESTORE, Kind.APPLICATION_CLONE

#: (kind, current stage, outcome) → step. Every transition a backup, restore or clone makes.
TABLE: Final[Mapping[tuple[Kind, Stage, Outcome], Step]] = {
    # ApplicationBackup: Initial → PreExecRule → Volumes → Applications → PostExecRule → Final.
    (_B, Stage.INITIAL, Outcome.ACCEPTED): Step(Stage.INITIAL, Status.PENDING, Queue.SNAPSHOT, send=True),
    (_B, Stage.INITIAL, Outcome.STARTED): Step(Stage.PRE_EXEC_RULE, Status.IN_PROGRESS, Queue.SNAPSHOT),
    (_B, Stage.PRE_EXEC_RULE, Outcome.DONE): Step(Stage.VOLUMES, Status.IN_PROGRESS, Queue.SNAPSHOT),
    (_B, Stage.VOLUMES, Outcome.DONE): Step(Stage.APPLICATIONS, Status.PENDING, Queue.EXPORT, send=True),
    (_B, Stage.APPLICATIONS, Outcome.STARTED): Step(Stage.APPLICATIONS, Status.IN_PROGRESS, Queue.EXPORT),
    (_B, Stage.APPLICATIONS, Outcome.DONE): Step(
        Stage.POST_EXEC_RULE, Status.PENDING, Queue.SNAPSHOT, send=True
    ),
    (_B, Stage.POST_EXEC_RULE, Outcome.SUCCEEDED): _FINAL_SUCCESSFUL,
    (_B, Stage.POST_EXEC_RULE, Outcome.PARTIALLY_SUCCEEDED): _FINAL_PARTIAL,
    **_failing(
        _B, Stage.INITIAL, Stage.PRE_EXEC_RULE, Stage.VOLUMES, Stage.APPLICATIONS, Stage.POST_EXEC_RULE
    ),
    # ApplicationRestore: Initial → Applications → (Volumes →) (PostExecRule →) Final; a dry run, or a
    # restore without volume data, ends after Applications; one with hooks runs them in PostExecRule.
    (_R, Stage.INITIAL, Outcome.ACCEPTED): Step(Stage.INITIAL, Status.PENDING, Queue.RESTORE, send=True),
    (_R, Stage.INITIAL, Outcome.STARTED): Step(Stage.APPLICATIONS, Status.IN_PROGRESS, Queue.RESTORE),
    (_R, Stage.APPLICATIONS, Outcome.DONE): Step(Stage.VOLUMES, Status.IN_PROGRESS, Queue.RESTORE, send=True),
    **_ending(_R, Stage.APPLICATIONS),
    (_R, Stage.VOLUMES, Outcome.PARTS_DONE): Step(
        Stage.VOLUMES, None, Queue.RESTORE, send=True, part=FINISH_PART
    ),
    **_ending(_R, Stage.VOLUMES),
    (_R, Stage.APPLICATIONS, Outcome.RESTORED): Step(
        Stage.POST_EXEC_RULE, Status.IN_PROGRESS, Queue.RESTORE, send=True
    ),
    (_R, Stage.VOLUMES, Outcome.RESTORED): Step(
        Stage.POST_EXEC_RULE, Status.IN_PROGRESS, Queue.RESTORE, send=True
    ),
    **_ending(_R, Stage.POST_EXEC_RULE),
    **_failing(_R, Stage.INITIAL),
    # ApplicationClone: Initial → Volumes (its staging backup) → Applications (its staging restore) →
    # Final, ending as its restore did.
    (_C, Stage.INITIAL, Outcome.ACCEPTED): Step(Stage.INITIAL, Status.PENDING, Queue.RESTORE, send=True),
    (_C, Stage.INITIAL, Outcome.STARTED): Step(Stage.VOLUMES, Status.IN_PROGRESS, Queue.RESTORE),
    (_C, Stage.VOLUMES, Outcome.DONE): Step(Stage.APPLICATIONS, Status.IN_PROGRESS, Queue.RESTORE),
    **_ending(_C, Stage.APPLICATIONS),
    **_failing(_C, Stage.INITIAL, Stage.VOLUMES),
}


class NoSuchStep(LookupError):
    """The table has no step for (kind, stage, outcome)."""


def next_step(kind: Kind, stage: Stage, outcome: Outcome) -> Step:
    """The step ``kind`` takes from ``stage`` on ``outcome``; NoSuchStep if there is none."""
    try:
        return TABLE[(kind, stage, outcome)]
    except KeyError:
        raise NoSuchStep(f"{kind.value} has no step from stage {stage.value} on {outcome.value}") from None


def find_step(kind: Kind, stage: str | None, outcome: Outcome) -> Step | None:
    """Like ``next_step`` for a stage as read from a status (any string, or none): None if no step."""
    try:
        return TABLE.get((kind, Stage(stage), outcome)) if stage else None
    except ValueError:
        return None


def _derive_owners() -> dict[tuple[Kind, Stage], Queue]:
    owners: dict[tuple[Kind, Stage], Queue] = {}
    for (kind, _stage, _outcome), step in TABLE.items():
        if step.queue is None:
            continue
        known = owners.setdefault((kind, step.stage), step.queue)
        if known != step.queue:
            raise AssertionError(f"{kind.value} {step.stage.value} has two owners: {known} and {step.queue}")
    return owners


#: The service that moves an operation forward from each stage: the queue of the steps into it.
_OWNERS: Final = _derive_owners()


def owner(kind: Kind, stage: Stage) -> Queue | None:
    """The queue whose workers advance ``kind`` from ``stage``; None when nothing is left to do."""
    return _OWNERS.get((kind, stage))


def outcome_of(status: Status) -> Outcome:
    """The ending outcome that gives an operation ``status`` at Final."""
    for outcome, step in _ENDINGS.items():
        if step.status == status:
            return outcome
    return Outcome.FAILED


def stage_fields(
    stage: Stage,
    status: Status,
    reason: str,
    finished_at: str | None,
    current: Mapping[str, Any] | None = None,
    at: str | None = None,
) -> dict[str, Any]:
    """The status fields of a stage change, as every writer of a stage writes them (the workers through
    ``davit.operations.progress``, the watcher when it accepts or fails an operation, a location sync
    importing a finished backup): ``finishTimestamp`` is ``finished_at``, at Final only. Given the
    ``current`` status and the time ``at`` of the write, ``stageHistory`` records when each stage began
    and ended (``stage_history``), for the per-stage duration metrics."""
    fields: dict[str, Any] = {"stage": stage.value, "status": status.value, "reason": reason}
    if stage == Stage.FINAL and finished_at is not None:
        fields["finishTimestamp"] = finished_at
    if current is not None and at is not None:
        history = stage_history(current, stage, at)
        if history is not None:
            fields[HISTORY_FIELD] = history
    return fields


#: The status field that lists, per stage passed through, when it began and ended.
HISTORY_FIELD: Final = "stageHistory"
#: A stage entered more often than this is not recorded again (no stage is re-entered today; the cap
#: keeps a status small whatever happens).
HISTORY_LIMIT: Final = 16


def stage_history(current: Mapping[str, Any], stage: Stage, at: str) -> list[dict[str, str]] | None:
    """``current``'s ``stageHistory`` after moving to ``stage`` at ``at``: the stage in progress gets its
    ``finishTimestamp`` and, unless ``stage`` is Final, a new entry starts. None when the stage does not
    change (nothing to write). Entries that are not well-formed are dropped: a status is written by
    Davit only, but what it reads back is not trusted to be a list of mappings."""
    previous = current.get("stage")
    if previous == stage.value:
        return None
    raw = current.get(HISTORY_FIELD)
    history = [
        {k: str(v) for k, v in entry.items() if k in ("stage", "startTimestamp", "finishTimestamp")}
        for entry in (raw if isinstance(raw, list) else [])
        if isinstance(entry, Mapping) and isinstance(entry.get("stage"), str)
    ]
    if history and "finishTimestamp" not in history[-1]:
        history[-1]["finishTimestamp"] = at
    if stage != Stage.FINAL and len(history) < HISTORY_LIMIT:
        history.append({"stage": stage.value, "startTimestamp": at})
    return history


# --- documentation ---------------------------------------------------------------------------------


def _rows() -> Iterator[tuple[Kind, Stage, Outcome, Step]]:
    order = {stage: index for index, stage in enumerate(Stage)}
    kinds = {kind: index for index, kind in enumerate(Kind)}
    outcomes = {outcome: index for index, outcome in enumerate(Outcome)}
    for (kind, stage, outcome), step in sorted(
        TABLE.items(), key=lambda item: (kinds[item[0][0]], order[item[0][1]], outcomes[item[0][2]])
    ):
        yield kind, stage, outcome, step


def render_table(mermaid: bool = False) -> str:
    """The table as Markdown (or, with ``mermaid``, one state diagram per kind), for the docs."""
    if mermaid:
        lines = []
        for kind in (_B, _R, _C):
            lines += ["```mermaid", "stateDiagram-v2", f"    %% {kind.value}"]
            for row_kind, stage, outcome, step in _rows():
                if row_kind != kind:
                    continue
                source = "[*]" if outcome == Outcome.ACCEPTED else stage.value
                target = step.stage.value
                label = outcome.value + (f" / {step.status.value}" if step.status else "")
                if step.send and step.queue is not None:
                    label += f" → {step.queue.value}"
                lines.append(f"    {source} --> {target}: {label}")
            lines += [f"    {Stage.FINAL.value} --> [*]", "```", ""]
        return "\n".join(lines)
    lines = [
        "| Kind | Stage | Outcome | Next stage | Status | Owner | Message |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, stage, outcome, step in _rows():
        message = ""
        if step.send and step.queue is not None:
            message = step.queue.value + (f" (part `{step.part}`)" if step.part else "")
        lines.append(
            f"| {kind.value} | {stage.value} | {outcome.value} | {step.stage.value} | "
            f"{step.status.value if step.status else '—'} | {step.queue.value if step.queue else '—'} | "
            f"{message or '—'} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(render_table())
    print()
    print(render_table(mermaid=True))
