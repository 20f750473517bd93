"""Backing up one volume on this node: walk its directory, store new chunks, record the tree.

Incremental: the tree of the previous backup of the same claim (a pointer per namespace and claim in
the repository) lets unchanged files (same size, mtime and inode) be taken over without being read, and
chunks already in the repository are never stored again, whichever backup or namespace stored them.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path
from typing import Any

import structlog

from davit import volume_stage
from davit.api.types import Stage, Status
from davit.constants import Kind
from davit.format.repository import BackupRepository
from davit.messages import Message
from davit.opstate import OperationState
from davit.repo import RepoError, RepoWriter, Tree, load_tree, snapshot_tree
from davit.runtime import LocationUnavailable, Runtime
from davit.storage.base import ObjectNotFound
from davit.volumes import VolumePlan

log = structlog.get_logger(__name__)
KIND = Kind.APPLICATION_BACKUP
#: How often a running volume's ``bytesDone`` (and so the stall detector's heartbeat) is written.
PROGRESS_SECONDS = 5.0


def latest_key(namespace: str, claim: str) -> str:
    """Where the id of the last tree stored for a claim is kept (for incremental backups)."""
    return f"repo/latest/{namespace}/{claim}"


def source_directory(plan: VolumePlan, kubelet_root: str) -> Path:
    if plan.source == "local":
        return Path(plan.path)
    base = Path(kubelet_root) / "pods" / plan.pod_uid / "volumes" / plan.plugin_dir / plan.volume
    return base / "mount" if plan.plugin_dir == "kubernetes.io~csi" else base


def apparent_size(root: Path) -> int:
    """The sum of the regular files' sizes under ``root`` (holes included, symlinks not followed)."""
    total = 0
    for directory, _dirs, files in os.walk(root):
        for name in files:
            try:
                st = os.lstat(os.path.join(directory, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


def handle(rt: Runtime, message: Message) -> None:
    if message.kind != KIND or message.stage != Stage.VOLUMES:
        return
    obj = rt.ops.get(KIND, message.namespace, message.name)
    if (
        obj is None
        or obj["metadata"]["uid"] != message.uid
        or (obj.get("status") or {}).get("stage") != Stage.VOLUMES
    ):
        return
    state = OperationState(rt.redis, message.uid)
    if not state.is_pending(message.part):
        return
    claim = message.part.removeprefix(volume_stage.VOLUME_PART_PREFIX)
    plan = volume_stage.load_plan(state, claim)
    if plan is None:
        return
    spec = obj.get("spec") or {}
    try:
        repository = rt.repository(message.namespace, spec["backupLocation"])
        result = back_up(rt, repository, plan, message)
    except (LocationUnavailable, RepoError, OSError) as exc:
        reason = exc.reason if isinstance(exc, LocationUnavailable) else f"{type(exc).__name__}: {exc}"
        log.warning("volume.failed", claim=claim, reason=reason)
        state.log("volume.failed", claim=claim, reason=reason)
        result = {"status": Status.FAILED.value, "reason": reason}
    if result["status"] == Status.SUCCESSFUL:
        state.log(
            "volume.completed", claim=claim, **{k: result[k] for k in ("tree", "totalSize", "storedSize")}
        )
    volume_stage.complete(rt, message, state, claim, result)


def _previous(repository: BackupRepository, plan: VolumePlan) -> Tree | None:
    try:
        tree_id = repository.get(latest_key(plan.namespace, plan.claim)).decode()
        return load_tree(repository.store, repository.sealer, tree_id)
    except (ObjectNotFound, RepoError) as exc:
        log.info("volume.full_backup", claim=plan.part, why=str(exc))
        return None


def back_up(rt: Runtime, repository: BackupRepository, plan: VolumePlan, message: Message) -> dict[str, Any]:
    source = source_directory(plan, rt.settings.kubelet_root)
    if not source.is_dir():
        raise FileNotFoundError(f"volume directory {source} not found on node {rt.settings.node_name}")
    previous = _previous(repository, plan)
    # The size to expect, from a metadata-only walk (fast next to reading), so progress has a total.
    volume_stage.update_volume(rt, message.namespace, message.name, plan.part,
                               {"status": Status.IN_PROGRESS.value, "totalSize": apparent_size(source),
                                "bytesDone": 0})  # fmt: skip
    read = [0]
    lock = threading.Lock()
    stop = threading.Event()

    def on_read(count: int) -> None:
        with lock:
            read[0] += count

    def report_progress() -> None:
        while not stop.wait(PROGRESS_SECONDS):
            with lock:
                done = read[0]
            volume_stage.update_volume(rt, message.namespace, message.name, plan.part,
                                       {"status": Status.IN_PROGRESS.value, "bytesDone": done})  # fmt: skip

    reporter = threading.Thread(target=report_progress, daemon=True, name="volume-progress")
    reporter.start()
    writer = RepoWriter(repository.store, repository.sealer, on_read=on_read)
    try:
        tree = snapshot_tree(os.fspath(source), writer, previous)
        writer.flush()
    finally:
        writer.close()
        stop.set()
        reporter.join()
    repository.put(latest_key(plan.namespace, plan.claim), tree.id.encode())
    stats = writer.stats
    log.info("volume.stored", claim=plan.part, tree=tree.id, files=stats.files, read=stats.bytes_read,
             new=stats.bytes_new, stored=stats.bytes_stored)  # fmt: skip
    return {
        "status": Status.SUCCESSFUL.value,
        "reason": "",
        "tree": tree.id,
        "entries": tree.entries,
        "totalSize": tree.size,
        "bytesDone": tree.size,
        "bytesRead": stats.bytes_read,
        "storedSize": stats.bytes_stored,
    }
