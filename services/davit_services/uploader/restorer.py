"""Writing a restored volume's data on this node, then releasing the pods that wait for it.

The target is the directory the pod's node mounts the claim's new volume at (the kubelet's pod volume
directory, or a local PV's path). The tree is written there by ``davit.repo.restore_tree``, which never
writes outside it; then the marker ``.davit-restore/<restore uid>`` is created, last, which the restore's
init container waits for (``davit.restore_wait``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import structlog

from davit import restore_volumes, volume_stage
from davit.api.types import Stage, Status
from davit.constants import Kind
from davit.messages import Message
from davit.opstate import OperationState
from davit.repo import RepoError, load_tree, restore_tree
from davit.repo.reader import RepoReader
from davit.restore_wait import marker_path
from davit.runtime import LocationUnavailable, Runtime
from davit.volumes import VolumePlan
from davit_services.uploader.agent import source_directory

log = structlog.get_logger(__name__)
KIND = Kind.APPLICATION_RESTORE
#: How long the kubelet may take to set up the pod's volume directory after the pod was scheduled.
MOUNT_WAIT_SECONDS = 120.0


def handle(rt: Runtime, message: Message) -> None:
    if message.stage != Stage.VOLUMES:
        return
    obj = rt.ops.current(KIND, message.namespace, message.name, message.uid, Stage.VOLUMES)
    if obj is None:
        return
    state = OperationState(rt.redis, message.uid)
    if not state.is_pending(message.part, group=restore_volumes.GROUP):
        return
    claim_part = message.part.removeprefix(restore_volumes.PART_PREFIX)
    target = json.loads(state.redis.hget(state.key(restore_volumes.TARGETS), claim_part) or "{}")
    if "plan" not in target:
        return
    plan = VolumePlan(**target["plan"])
    spec = obj.get("spec") or {}
    try:
        directory = _wait_for_directory(source_directory(plan, rt.settings.kubelet_root))
        repository = rt.repository(message.namespace, spec["backupLocation"])
        tree = load_tree(repository.store, repository.sealer, target["tree"])
        stats = restore_tree(tree, directory, RepoReader(repository.store, repository.sealer))
        _leave_marker(directory, message.uid)
    except (LocationUnavailable, RepoError, OSError) as exc:
        reason = exc.reason if isinstance(exc, LocationUnavailable) else f"{type(exc).__name__}: {exc}"
        restore_volumes.fail_volume(rt, obj, state, message.part, reason)
        return
    state.log("volume.restored", claim=claim_part, files=stats.files, bytes=stats.bytes_written)
    log.info("volume.restored", claim=claim_part, files=stats.files, bytes=stats.bytes_written)
    volume_stage.update_volume(rt, message.namespace, message.name, claim_part,
                               {"status": Status.SUCCESSFUL.value, "reason": "", "totalSize": tree.size,
                                "bytesDone": tree.size}, kind=KIND)  # fmt: skip
    restore_volumes.volume_done(rt, obj, state, message.part)


def _leave_marker(directory: Path, restore_uid: str) -> None:
    """The marker that releases the pod, last; owned like the volume's root, so that the init container,
    which runs as the application's user, can remove it (and its directory) again."""
    owner = os.stat(directory)
    marker = marker_path(directory, restore_uid)
    marker.parent.mkdir(exist_ok=True)
    marker.touch()
    for path in (marker.parent, marker):
        if (os.stat(path).st_uid, os.stat(path).st_gid) != (owner.st_uid, owner.st_gid):
            os.chown(path, owner.st_uid, owner.st_gid)


def _wait_for_directory(directory: Path) -> Path:
    deadline = time.monotonic() + MOUNT_WAIT_SECONDS
    while not directory.is_dir():
        if time.monotonic() > deadline:
            raise FileNotFoundError(f"{os.fspath(directory)} did not appear (the volume is not mounted)")
        time.sleep(0.5)  # the kubelet mounts the volume asynchronously after scheduling
    return directory
