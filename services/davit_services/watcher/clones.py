"""Clones advance by events: when a clone's staging backup or restore changes, the clone's own message is
sent again, so the clone's task (``davit_services.restore.clone``) picks up from where it stands instead
of waiting in a worker slot for the staging operation to end.

* The staging operation reached **Final**: the clone's message for its current stage is sent; its task
  moves the clone on (creates the restore, or ends the clone as its restore ended).
* The staging operation **progressed**: at most every ``HEARTBEAT_SECONDS`` per clone, the message is
  sent too; the clone's task copies the staging operation's counts and volumes into the clone's status
  (which also tells the watcher's stall detection that the clone is alive) and returns.

A message lost on the way is repaired by the watcher's stall detection: a clone that shows no progress for
``stall_seconds`` has its stage's message sent again, and its task looks at the staging operation afresh.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from davit import constants
from davit.api.objects import RawObject
from davit.api.types import Stage, Status
from davit.constants import Kind
from davit.operations import stages
from davit.operations.messages import Message

#: How often, at most, a progressing staging operation re-sends its clone's message.
HEARTBEAT_SECONDS = 10.0

#: The staging kind a clone waits for in each of its stages.
STAGING: dict[Stage, Kind] = {
    Stage.VOLUMES: Kind.APPLICATION_BACKUP,
    Stage.APPLICATIONS: Kind.APPLICATION_RESTORE,
}
STAGING_KINDS = frozenset(STAGING.values())


@dataclass(frozen=True)
class Owner:
    namespace: str
    name: str
    uid: str


def owner_of(staging: RawObject) -> Owner | None:
    """The clone ``staging`` belongs to: its controller owner reference of kind ApplicationClone (owner
    references are namespace-local, so the clone is in the staging operation's namespace)."""
    meta = staging.get("metadata") or {}
    for ref in meta.get("ownerReferences") or []:
        if (
            ref.get("kind") == Kind.APPLICATION_CLONE.value
            and ref.get("apiVersion") == constants.API_GROUP_VERSION
            and ref.get("controller")
            and ref.get("name")
            and ref.get("uid")
            and meta.get("namespace")
        ):
            return Owner(meta["namespace"], ref["name"], ref["uid"])
    return None


def message_for(
    staging: RawObject, clone: RawObject | None, owner: Owner, heartbeat_due: bool
) -> Message | None:
    """The clone's message to send now that ``staging`` changed, or None.

    Only for the clone the owner reference names (same uid), in progress, in the stage that waits for
    ``staging``'s kind; always when ``staging`` is Final, else when ``heartbeat_due``."""
    if clone is None or clone["metadata"].get("uid") != owner.uid:
        return None
    status = clone.get("status") or {}
    try:
        stage = Stage(status.get("stage") or "")
    except ValueError:
        return None
    if status.get("status") != Status.IN_PROGRESS or STAGING.get(stage) != staging.get("kind"):
        return None
    final = (staging.get("status") or {}).get("stage") == Stage.FINAL
    if not final and not heartbeat_due:
        return None
    return Message(Kind.APPLICATION_CLONE, owner.namespace, owner.name, owner.uid, stage.value)


@dataclass
class CloneDriver:
    """Sends a clone's message when its staging operation changes (see the module docstring)."""

    #: Reads the clone (namespace, name) as it is; None when there is none.
    read: Callable[[str, str], RawObject | None]
    #: Sends a message to a queue.
    send: Callable[[Message, str], None]
    heartbeat_seconds: float = HEARTBEAT_SECONDS
    clock: Callable[[], float] = time.monotonic
    #: When each clone (by uid) was last sent a progress message.
    _sent: dict[str, float] = field(default_factory=dict)

    def on_change(self, staging: RawObject) -> Message | None:
        """``staging`` (an ApplicationBackup or ApplicationRestore) was added or modified."""
        owner = owner_of(staging)
        if owner is None:
            return None
        now = self.clock()
        last = self._sent.get(owner.uid)
        due = last is None or now - last >= self.heartbeat_seconds
        if not due and (staging.get("status") or {}).get("stage") != Stage.FINAL:
            return None  # no need to read the clone
        message = message_for(staging, self.read(owner.namespace, owner.name), owner, due)
        if message is None:
            return None
        queue = stages.owner(Kind.APPLICATION_CLONE, Stage(message.stage))
        if queue is None:
            return None
        self.send(message, queue.value)
        self._sent[owner.uid] = now
        self._forget(now)
        return message

    def _forget(self, now: float) -> None:
        """Drop what is long past (clones end; their uids are not seen again)."""
        for uid in [u for u, at in self._sent.items() if now - at > 100 * self.heartbeat_seconds]:
            del self._sent[uid]
