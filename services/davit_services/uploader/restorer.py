"""Writing a restored volume's data on this node, then releasing the pods that wait for it.

The target is the directory the pod's node mounts the claim's new volume at (the kubelet's pod volume
directory, or a local PV's path), derived from the API (``davit.volumes.node_dirs``): the plan the restore
service left in Redis is only a hint that must agree with it, and the claim must lie in a namespace the
restore may write. The tree is written there by ``davit.repo.restore_tree``, which never writes outside
it, strips setuid and setgid bits unless the BackupLocation opts in (``location.restoreSetuid``, honoured
for locations in the admin namespace only), and refuses a tree holding an entry where the marker goes.
Then the marker ``.davit-restore/<restore uid>`` is created, last, without following links, which the
restore's init container waits for (``davit.restore.init_container``). Any error ends the volume Failed
with its reason, never the task.

One task at a time writes a volume: it holds the volume's lease in the restore's scratch state
(``davit_services.uploader.leases``) while it writes. A message for a volume whose lease another task
holds (the same message delivered again) waits up to ``leases.TAKEOVER_SECONDS`` for it: nothing sends a
handed-out volume's message again, so when the holder died (its lease expires) this task writes the volume;
when the holder finished, the volume is no longer outstanding and the message is dropped, as it is when
the holder is still at work after the wait.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from pathlib import Path
from typing import Any

import structlog

from davit import metrics
from davit.api.types import Stage, Status
from davit.constants import Kind
from davit.format.layout import BackupRef, ref_from_path
from davit.format.repository import BackupRepository
from davit.operations import recording
from davit.operations.messages import Message
from davit.operations.ports import Cluster, Ports, RestoreScratch
from davit.repo import UnsafePath, load_tree, restore_tree
from davit.repo.prune import prune
from davit.repo.reader import RepoReader
from davit.repo.tree_format import iter_entries
from davit.restore import inject
from davit.restore.init_container import MARKER_DIR
from davit.settings import Settings
from davit.tenancy import backup_namespace
from davit.validation import resolve_location
from davit.volumes import backup_stage, mover, node_dirs, restore_stage
from davit.volumes.claims import VolumePlan
from davit.volumes.node_dirs import RefusedDirectory
from davit_services.uploader import leases
from davit_services.uploader.agent import failure_reason

log = structlog.get_logger(__name__)
KIND = Kind.APPLICATION_RESTORE
#: How long the kubelet may take to set up the pod's volume directory after the pod was scheduled.
MOUNT_WAIT_SECONDS = 120.0

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def handle(ports: Ports, message: Message) -> None:
    if message.stage != Stage.VOLUMES:
        return
    obj = ports.cluster.current(KIND, message.namespace, message.name, message.uid, Stage.VOLUMES)
    if obj is None:
        return
    state = ports.scratch.restore(message.uid)
    if not state.is_pending(message.part, group=restore_stage.GROUP):
        return
    # One task at a time per volume (a re-delivered message would write the same files alongside).
    with leases.held(state, message.part, wait=leases.TAKEOVER_SECONDS) as mine:
        # The holder of an earlier lease may have finished the volume meanwhile.
        if mine and state.is_pending(message.part, group=restore_stage.GROUP):
            _restore_volume(ports, obj, state, message)


def _restore_volume(ports: Ports, obj: dict[str, Any], state: RestoreScratch, message: Message) -> None:
    claim_part = message.part.removeprefix(restore_stage.PART_PREFIX)
    try:
        target = state.volume_target(claim_part)
        if "plan" not in target:
            return
        tree_size, files, written = _restore(ports, obj, claim_part, target)
    except Exception as exc:  # any error ends this volume Failed, never the task
        restore_stage.fail_volume(ports, obj, state, message.part, failure_reason(exc))
        return
    state.log("volume.restored", claim=claim_part, files=files, bytes=written)
    increments = metrics.node_bytes_increments(ports.settings.node_name, "written", written)
    recording.try_add(ports.scratch.metrics(), increments)
    log.info("volume.restored", claim=claim_part, files=files, bytes=written)
    backup_stage.update_volume(ports, message.namespace, message.name, claim_part,
                               {"status": Status.SUCCESSFUL.value, "reason": "", "totalSize": tree_size,
                                "bytesDone": tree_size}, kind=KIND)  # fmt: skip
    restore_stage.volume_done(ports, obj, state, message.part)


def _restore(
    ports: Ports, obj: dict[str, Any], claim_part: str, target: dict[str, Any]
) -> tuple[int, int, int]:
    """Write the volume; (tree size, files, bytes written)."""
    meta, spec = obj["metadata"], obj.get("spec") or {}
    restore_uid = str(meta["uid"])
    plan = VolumePlan(**target["plan"])
    cluster, admin_namespace = ports.cluster, ports.settings.admin_namespace
    directory = _wait_for_directory(target_directory(cluster, ports.settings, obj, claim_part, plan))
    # The backup's location as seen from the backup's namespace (spec.backupNamespace, else the restore's).
    source = backup_namespace(obj)
    repository = ports.stores.repository(source, spec["backupLocation"])
    tree = load_tree(
        repository.store,
        repository.sealer,
        backup_tree(cluster, admin_namespace, obj, repository, claim_part, target),
    )
    pod = _target_pod(cluster, claim_part, plan)
    if pod is not None and inject.released(pod, restore_uid):
        # An earlier write of this volume finished, left its marker and released the pod, and its task
        # died before it reported the volume (a Redis restart, a kill): the data is there and the
        # application runs on it. Writing again would change files under it and leave a marker that
        # nothing removes.
        log.info("volume.written_already", claim=claim_part, pod=plan.pod_uid)
        return tree.size, 0, 0
    stats = restore_tree(
        tree, directory, RepoReader(repository.store, repository.sealer),
        keep_setuid=_location_keeps_setuid(cluster, admin_namespace, source, spec["backupLocation"]),
        reserved=(marker_entry(restore_uid),),
    )  # fmt: skip
    if spec.get("inPlaceVolumes"):
        # Written over the claim's files: what the backup does not hold goes, so the volume is the backup's.
        kept = (entry.path for entry in iter_entries(repository.store, repository.sealer, tree))
        removed = prune(directory, kept, reserved=(os.fsencode(MARKER_DIR),))
        log.info("volume.pruned", claim=claim_part, removed=removed)
    # A helper pod of this restore's own (a claim no restored pod mounts, ``davit.volumes.mover``) waits
    # for nothing: no marker to leave behind in the volume.
    if pod is None or not _own_helper(pod, restore_uid):
        leave_marker(directory, restore_uid)
    return tree.size, stats.files, stats.bytes_written


def _target_pod(cluster: Cluster, claim_part: str, plan: VolumePlan) -> dict[str, Any] | None:
    """The pod the volume is written through, as the API has it now."""
    namespace = claim_part.partition("/")[0]
    pods = [p for p in cluster.list_pods(namespace) if (p.get("metadata") or {}).get("uid") == plan.pod_uid]
    return pods[0] if pods else None


def _own_helper(pod: dict[str, Any], restore_uid: str) -> bool:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return (labels.get(mover.MOVER_LABEL), labels.get(mover.RESTORE_UID_LABEL)) == (
        mover.RESTORE,
        restore_uid,
    )


def target_directory(
    cluster: Cluster, settings: Settings, obj: dict[str, Any], claim_part: str, plan: VolumePlan
) -> Path:
    """Where the claim's data goes on this node, from the API; RefusedDirectory when the plan disagrees."""
    backup_name = (obj.get("spec") or {}).get("backupName") or ""
    backup = cluster.backup(backup_namespace(obj), backup_name) if backup_name else None
    allowed = node_dirs.restore_namespaces(obj, backup, settings.admin_namespace)
    view = node_dirs.claim_view(cluster, claim_part)
    return node_dirs.derive_directory(
        plan, claim_part, view, allowed, settings.node_name, settings.kubelet_root
    )


def backup_tree(
    cluster: Cluster,
    admin_namespace: str,
    obj: dict[str, Any],
    repository: BackupRepository,
    claim_part: str,
    target: dict[str, Any],
) -> str:
    """The tree to restore into ``claim_part``: the one the backup's manifest records for it. The tree id
    in Redis is only compared with it, so that whoever can write Redis cannot have another backup's data
    (another tenant's, in a location they share) written into this volume."""
    spec = obj.get("spec") or {}
    source = backup_namespace(obj)
    backup = cluster.backup(source, str(spec.get("backupName") or ""))
    if backup is None:
        raise RefusedDirectory(f"ApplicationBackup {source}/{spec.get('backupName')} not found", "data")
    ref = ref_from_path(str((backup.get("status") or {}).get("backupPath") or "")) or BackupRef(
        source, backup["metadata"]["name"], backup["metadata"]["uid"]
    )
    if source not in (admin_namespace, ref.namespace):
        raise RefusedDirectory(f"backup {ref.root} is not a backup of namespace {source}", "data")
    trees = restore_stage.backup_trees(repository.read_manifest(ref), spec.get("namespaceMapping") or {})
    recorded = trees.get(claim_part)
    if recorded is None or recorded != target.get("tree"):
        raise RefusedDirectory(
            f"the tree {target.get('tree')!r} handed out for {claim_part} is not the one backup {ref.root} "
            f"records for it ({recorded or 'none'})",
            "data",
        )
    return recorded


def _location_keeps_setuid(cluster: Cluster, admin_namespace: str, namespace: str, name: str) -> bool:
    location = resolve_location(cluster, namespace, name, admin_namespace)
    return keeps_setuid(location, admin_namespace)


def keeps_setuid(location: dict[str, Any] | None, admin_namespace: str) -> bool:
    """Whether a restore from ``location`` keeps setuid/setgid bits: only when an administrator's location
    (in the admin namespace) opts in, since the node agent restores the files as root and a tenant must
    not be able to hand itself setuid-root programs."""
    if location is None or location["metadata"]["namespace"] != admin_namespace:
        return False
    return (location.get("location") or {}).get("restoreSetuid") is True


def marker_entry(restore_uid: str) -> bytes:
    """The tree path of this restore's marker: no entry of a restored tree may be there (or be a
    non-directory where its directory goes)."""
    return os.fsencode(f"{MARKER_DIR}/{restore_uid}")


def leave_marker(directory: Path, restore_uid: str) -> None:
    """The marker that releases the pod, last; owned like the volume's root, in a directory anyone may
    remove it from, so that the init container, which runs as the application's user (or Davit's, never
    root), can remove it (and its directory) again.

    Written by descriptor, never following a link: the volume's contents came from a backup a tenant may
    have crafted, and the node agent is root."""
    if not restore_uid or "/" in restore_uid or restore_uid in (".", ".."):
        raise UnsafePath(f"refusing a marker named {restore_uid!r}")
    root = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        owner = os.fstat(root)
        with contextlib.suppress(FileExistsError):  # an earlier try, or the backup's own marker directory
            os.mkdir(MARKER_DIR, 0o755, dir_fd=root)
        marker_dir = _open_no_follow(MARKER_DIR, _DIR_FLAGS, root)
        try:
            marker = _open_no_follow(restore_uid, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                                     marker_dir, what=f"{MARKER_DIR}/{restore_uid}")  # fmt: skip
            try:
                st = os.fstat(marker)
                if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                    # A hard link would have root give an outside file to the volume's owner.
                    raise UnsafePath(f"refusing to leave the restore marker: {MARKER_DIR}/{restore_uid} "
                                     "in the volume is a link or not a file")  # fmt: skip
                for fd in (marker_dir, marker):
                    st = os.fstat(fd)
                    if (st.st_uid, st.st_gid) != (owner.st_uid, owner.st_gid):
                        os.fchown(fd, owner.st_uid, owner.st_gid)
                # The init container never runs as root: where the volume's root belongs to root, it
                # runs as Davit's own user, which may remove the marker only from a directory open to all.
                os.fchmod(marker_dir, 0o777)
            finally:
                os.close(marker)
        finally:
            os.close(marker_dir)
    finally:
        os.close(root)


def _open_no_follow(name: str, flags: int, dir_fd: int, what: str = MARKER_DIR) -> int:
    try:
        return os.open(name, flags, 0o644, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EISDIR):
            raise UnsafePath(f"refusing to leave the restore marker: {what} in the volume is a symlink "
                             "or of the wrong type") from exc  # fmt: skip
        raise


def _wait_for_directory(directory: Path) -> Path:
    deadline = time.monotonic() + MOUNT_WAIT_SECONDS
    while not directory.is_dir():
        if time.monotonic() > deadline:
            raise FileNotFoundError(f"{os.fspath(directory)} did not appear (the volume is not mounted)")
        time.sleep(0.5)  # the kubelet mounts the volume asynchronously after scheduling
    return directory
