"""The init container a restore injects into the pods that mount restored claims.

A restored claim is provisioned empty; the node agent on the pod's node writes the backed-up data into it
after the pod has been scheduled and its volumes mounted. The application must not start before that, so
the restore adds an init container ``davit-restore-wait`` that mounts each restored volume at
``/davit-restore/<volume>`` and runs ``python -m davit.restore.init_container /davit-restore/<volume> ...``
with
``DAVIT_RESTORE_UID`` set to the ApplicationRestore's uid.

The handshake: the node agent creates the empty file ``<volume>/.davit-restore/<restore uid>`` after it has
written everything else. This waits until that marker exists in every given directory, then removes the
markers (and ``.davit-restore`` where that leaves it empty), so the volume holds exactly the backed-up
files when the application starts.

Only the standard library is used: the image that runs this needs nothing else from Davit.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TextIO

from davit import errors

#: The name of the init container; the dev kubelet recognises it by this name.
CONTAINER_NAME = "davit-restore-wait"
#: Where the init container mounts each restored volume: ``<MOUNT_ROOT>/<pod volume name>``.
MOUNT_ROOT = "/davit-restore"
#: The directory, at the root of a restored volume, that holds the node agent's markers.
MARKER_DIR = ".davit-restore"
#: The ApplicationRestore's uid; the marker is named after it, so a marker left by an earlier restore of
#: the same volume never releases this one.
UID_ENV = "DAVIT_RESTORE_UID"
#: Optional limit on the wait, in seconds; unset means wait as long as the restore takes.
TIMEOUT_ENV = "DAVIT_RESTORE_TIMEOUT_SECONDS"
#: How often the markers are looked for: a stat per volume, cheap enough to do every second.
POLL_SECONDS = 1.0

#: Exit codes: a timeout may succeed when retried (the restore is slow); a usage error never will.
EXIT_TIMEOUT = 1
EXIT_USAGE = 2


class UsageError(errors.Invalid):
    """The container was started wrongly (no uid, a bad timeout, no volumes): waiting cannot help."""


class WaitTimedOut(errors.Transient):
    """The markers did not all appear within the timeout."""


def marker_path(volume_dir: Path, restore_uid: str) -> Path:
    """The file the node agent creates, last, once it has written ``volume_dir`` for this restore."""
    return volume_dir / MARKER_DIR / restore_uid


def is_restored(volume_dir: Path, restore_uid: str) -> bool:
    return marker_path(volume_dir, restore_uid).is_file()


def consume_marker(volume_dir: Path, restore_uid: str) -> None:
    """Remove this restore's marker, and the marker directory if nothing else is in it (another restore's
    marker, or a file the backup itself contained, is left alone)."""
    marker_path(volume_dir, restore_uid).unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty, or already gone
        (volume_dir / MARKER_DIR).rmdir()


def settings_from(env: Mapping[str, str]) -> tuple[str, float | None]:
    """The restore uid and the timeout (None: no limit) from the container's environment."""
    restore_uid = env.get(UID_ENV, "").strip()
    if not restore_uid:
        raise UsageError(f"{UID_ENV} is not set: the restore sets it to the ApplicationRestore's uid")
    if "/" in restore_uid or restore_uid in (".", ".."):
        raise UsageError(f"{UID_ENV}={restore_uid!r} cannot name a marker file")
    raw_timeout = env.get(TIMEOUT_ENV, "").strip()
    if not raw_timeout:
        return restore_uid, None
    try:
        timeout = float(raw_timeout)
    except ValueError:
        raise UsageError(f"{TIMEOUT_ENV}={raw_timeout!r} is not a number of seconds") from None
    if math.isnan(timeout) or timeout < 0:
        raise UsageError(f"{TIMEOUT_ENV}={raw_timeout!r} must be zero or more seconds")
    return restore_uid, timeout


def wait_for_markers(
    volume_dirs: Sequence[Path],
    restore_uid: str,
    timeout: float | None,
    poll_seconds: float = POLL_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Return once every directory holds this restore's marker; raise ``WaitTimedOut`` naming the ones
    still missing when ``timeout`` passes first. Markers are not removed here: a timed-out container
    that is started again must still find the markers that had already appeared."""
    deadline = None if timeout is None else clock() + timeout
    while True:
        missing = [d for d in volume_dirs if not is_restored(d, restore_uid)]
        if not missing:
            return
        if deadline is not None and clock() >= deadline:
            names = ", ".join(str(d) for d in missing)
            raise WaitTimedOut(f"restore {restore_uid}: no data after {timeout:g}s for {names}")
        sleep(poll_seconds if deadline is None else max(0.0, min(poll_seconds, deadline - clock())))


def main(
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    poll_seconds: float = POLL_SECONDS,
) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if env is None else env
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        restore_uid, timeout = settings_from(env)
        if not args:
            raise UsageError(f"usage: python -m davit.restore.init_container {MOUNT_ROOT}/<volume> [...]")
        volume_dirs = [Path(a) for a in args]
        not_dirs = [str(d) for d in volume_dirs if not d.is_dir()]
        if not_dirs:
            raise UsageError(f"not a mounted directory: {', '.join(not_dirs)}")
    except UsageError as exc:
        print(f"davit-restore-wait: {exc}", file=err, flush=True)
        return EXIT_USAGE
    try:
        wait_for_markers(volume_dirs, restore_uid, timeout, poll_seconds=poll_seconds)
    except WaitTimedOut as exc:
        print(f"davit-restore-wait: {exc}", file=err, flush=True)
        return EXIT_TIMEOUT
    for volume_dir in volume_dirs:
        consume_marker(volume_dir, restore_uid)
        print(f"davit-restore-wait: {volume_dir} restored by restore {restore_uid}", file=out, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
