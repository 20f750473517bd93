"""One task at a time per volume part: a lease in the operation's scratch state.

The same volume (or shard) message can reach a node's queue more than once: the watcher re-drives a
stage that shows no progress, and the snapshot service then sends every outstanding volume again; a
restarted agent also finds what was queued while it was down, and the broker delivers again a message
whose task did not acknowledge it in time. Two tasks storing the same volume at once each have a writer
of their own, and a writer skips only the chunks whose pack and index are already written (or that it
packed itself), so both would store the chunks in flight twice; two tasks restoring the same volume at
once would write the same files side by side.

Hence a lease per part (``OperationState.take_lease``, in the backup's or the restore's scratch state):
taken before the work, renewed every ``RENEW_SECONDS`` while it runs, released after. A message whose
part is leased to another task is dropped: the holder finishes the part, and if the holder died its lease
expires within ``LEASE_SECONDS``, after which the watcher's next re-drive of the stalled stage finds the
part free; the new task's writer then loads the index and stores only what the dead one did not complete.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import structlog

from davit.operations.scratch import OperationState, RedisError

log = structlog.get_logger(__name__)

#: How long a lease outlives its holder's last renewal: how soon a part whose holder died is free.
LEASE_SECONDS = 30.0
#: How often a running task renews its lease (a few renewals may be late before it expires).
RENEW_SECONDS = 5.0


#: How long a task that may be the only one left for its part waits for another task's lease: long
#: enough for the lease of a holder that died to expire, so a holder still there after it is alive.
TAKEOVER_SECONDS = LEASE_SECONDS + RENEW_SECONDS
#: How often a waiting task tries the lease again.
POLL_SECONDS = 1.0


@contextmanager
def held(
    state: OperationState,
    part: str,
    seconds: float = LEASE_SECONDS,
    renew_every: float = RENEW_SECONDS,
    wait: float = 0.0,
) -> Iterator[bool]:
    """Hold the lease of ``part`` for the block, renewed in the background: yields True, or False (and
    holds nothing) when another task holds it, still after ``wait`` seconds of trying again."""
    owner = uuid.uuid4().hex
    deadline = time.monotonic() + wait
    while not state.take_lease(part, owner, seconds):
        if time.monotonic() >= deadline:
            log.info("volume.busy", part=part)
            yield False
            return
        time.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))
    stop = threading.Event()

    def keep() -> None:
        while not stop.wait(renew_every):
            try:
                if not state.renew_lease(part, owner, seconds):
                    log.warning("volume.lease_lost", part=part)
                    return
            except RedisError as exc:  # the next renewal may get through before the lease expires
                log.warning("volume.lease_not_renewed", part=part, error=str(exc))

    keeper = threading.Thread(target=keep, daemon=True, name="volume-lease")
    keeper.start()
    try:
        yield True
    finally:
        stop.set()
        keeper.join()
        try:
            state.release_lease(part, owner)
        except RedisError as exc:  # it expires by itself
            log.warning("volume.lease_not_released", part=part, error=str(exc))
