"""Backing up one volume on this node: walk its directory, store new chunks, record the tree.

A volume above ``volume_shard_bytes`` of data or ``volume_shard_entries`` entries is cut into shards,
ranges of its tree in tree order (``davit.repo.plan_shards``), each stored by a task of its own on this
node's queue; the last shard to finish writes the volume's tree from theirs (``merge_trees``: only a
new root). Several task slots (or agent replicas on the node) then share a big volume, and a task killed
mid-volume repeats one shard, not the volume.

The node agent runs as root: the directory it reads is derived from the API (``davit.volumes.node_dirs``), the
plan in Redis being only a hint that must agree; any error in a volume ends that volume Failed with its
reason, never the task.

Incremental: the tree of the previous backup of the same claim (a pointer per namespace and claim in
the repository) lets unchanged files (same size, mtime and inode) be taken over without being read, and
chunks already in the repository are never stored again, whichever backup or namespace stored them.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import structlog

from davit import metrics
from davit.api.types import Stage, Status
from davit.constants import Kind, node_queue
from davit.format.repository import BackupRepository
from davit.operations import recording, state_loss
from davit.operations.messages import Message
from davit.operations.ports import Ports
from davit.operations.runtime import LocationUnavailable
from davit.operations.scratch import BackupScratch
from davit.repo import (
    RepoError,
    RepoWriter,
    ShardPlan,
    Tree,
    load_tree,
    merge_trees,
    plan_shards,
    snapshot_tree,
)
from davit.repo.writer import WriterStats
from davit.storage.base import ObjectNotFound
from davit.volumes import backup_stage, mover, node_dirs
from davit.volumes.claims import VolumePlan
from davit_services.uploader import leases

log = structlog.get_logger(__name__)
KIND = Kind.APPLICATION_BACKUP
#: How often a running volume's ``bytesDone`` (and so the stall detector's heartbeat) is written.
PROGRESS_SECONDS = 5.0


def latest_key(namespace: str, claim: str) -> str:
    """Where the id of the last tree stored for a claim is kept (for incremental backups)."""
    return f"repo/latest/{namespace}/{claim}"


def handle(ports: Ports, message: Message) -> None:
    if message.kind != KIND or message.stage != Stage.VOLUMES:
        return
    obj = ports.cluster.current(KIND, message.namespace, message.name, message.uid, Stage.VOLUMES)
    if obj is None:
        return
    state = ports.scratch.backup(message.uid)
    claim, _sep, shard = message.part.removeprefix(backup_stage.VOLUME_PART_PREFIX).partition(SHARD_SEPARATOR)
    plan = backup_stage.load_plan(state, claim)
    if plan is None:
        if state_loss.is_lost(state):  # not a stale message: the backup's state is gone
            state_loss.fail(ports, KIND, obj, Stage.VOLUMES, state)
        return
    spec = obj.get("spec") or {}
    volume = _Volume(ports, message, state, plan, claim, obj, str(spec.get("backupLocation") or ""))
    # One task at a time per volume or shard (a duplicate message would store its chunks twice).
    with leases.held(state, message.part) as mine:
        if not mine:
            return
        if shard:
            volume.store_shard(int(shard))
        elif state.is_pending(message.part, group=state.VOLUMES_PENDING):
            volume.start()


#: A shard's part is ``volume:<namespace>/<claim>#<shard>``.
SHARD_SEPARATOR = "#"


class _Volume:
    """One volume's backup: planned by the task for the volume, stored by it alone when small, else by one
    task per shard on this node's queue, the last of which merges the shards' trees."""

    def __init__(self, ports: Ports, message: Message, state: BackupScratch, plan: VolumePlan, part: str,
                 backup: dict[str, Any], location: str) -> None:  # fmt: skip
        self.ports = ports
        self.message = message
        self.state = state
        #: Only a hint: ``_source`` derives the directory from the API and refuses a plan that disagrees.
        self.plan = plan
        #: ``<namespace>/<claim>``, from the message: the status entry and the claim that are checked.
        self.part = part
        self.namespace, _sep, self.claim = part.partition("/")
        self.backup = backup
        self.location = location
        self.group = BackupScratch.shard_group(part)
        self.volume_part = backup_stage.VOLUME_PART_PREFIX + part

    def start(self) -> None:
        try:
            result = self._start()
        except Exception as exc:  # any error ends this volume, never the task
            result = _failure(exc)
        if result is not None:
            self._finish(result)

    def _start(self) -> dict[str, Any] | None:
        """The volume's result when it is done here; None while its shards are out."""
        source = self._source()
        repository = self.ports.stores.repository(self.message.namespace, self.location)
        if self.state.group_plan(self.group) is not None:
            # A retry: the shards are out (or all done, and their merge was interrupted).
            return self._send_or_merge()
        settings = self.ports.settings
        shards = plan_shards(source, settings.volume_shard_bytes, settings.volume_shard_entries)
        # The size to expect, from the metadata-only walk, so progress has a total.
        self._update({"status": Status.IN_PROGRESS.value, "totalSize": shards.size, "bytesDone": 0})
        if shards.shards == 1:
            tree, stats = self._store(repository, source, None, None, self._report_single)
            self._count_read(stats.bytes_read)
            return self._success(repository, tree, stats.bytes_read, stats.bytes_stored)
        bounds = json.dumps([b.hex() for b in shards.bounds])
        if self.state.start_group(self.group, bounds, [str(i) for i in range(shards.shards)]):
            self.state.log("volume.sharded", claim=self.part, shards=shards.shards,
                           totalSize=shards.size, entries=shards.entries)  # fmt: skip
        return self._send_or_merge()

    def _count_read(self, amount: int) -> None:
        """The node agent's throughput metric: bytes read, counted when a volume or shard is stored."""
        increments = metrics.node_bytes_increments(self.ports.settings.node_name, "read", amount)
        recording.try_add(self.ports.scratch.metrics(), increments)

    def store_shard(self, shard: int) -> None:
        if not self.state.is_pending(str(shard), group=self.group):
            return
        try:
            repository = self.ports.stores.repository(self.message.namespace, self.location)
            start, end = self._bounds().range(shard)

            def report(done: int) -> None:
                total = self.state.record_shard_progress(self.part, shard, done)
                self._update({"status": Status.IN_PROGRESS.value, "bytesDone": total})

            source = self._source()
            tree, stats = self._store(repository, source, start, end, report)
            self._count_read(stats.bytes_read)
            outcome = {"tree": tree.id, "bytesRead": stats.bytes_read, "storedSize": stats.bytes_stored}
        except Exception as exc:  # any error ends this shard (and so the volume) Failed
            outcome = _failure(exc)
        self.state.record_shard_outcome(self.part, shard, outcome)
        if self.state.finish(str(shard), group=self.group):
            self._finish(self._merge())

    # --- steps ---------------------------------------------------------------------------------------

    def _send_or_merge(self) -> dict[str, Any] | None:
        outstanding = self.state.pending(group=self.group)
        if not outstanding:
            return self._merge()
        meta = self.message
        for shard in outstanding:
            part = f"{self.volume_part}{SHARD_SEPARATOR}{shard}"
            # A shard is a part of the volume's part (not a transition): to this node's queue.
            self.ports.dispatch.send(replace(meta, part=part, issued_at=time.time()),
                                     node_queue(self.ports.settings.node_name))  # fmt: skip
        return None

    def _merge(self) -> dict[str, Any]:
        """The volume's result from its shards' (the last shard to finish merges)."""
        try:
            outcomes = self.state.shard_outcomes(self.part)
            failed = [f"shard {i}: {o['reason']}" for i, o in outcomes if "reason" in o]
            if failed:
                return {"status": Status.FAILED.value, "reason": "; ".join(failed)}
            repository = self.ports.stores.repository(self.message.namespace, self.location)
            trees = [load_tree(repository.store, repository.sealer, o["tree"]) for _i, o in outcomes]
            tree = merge_trees(repository.store, repository.sealer, trees)
            bytes_read = sum(int(o["bytesRead"]) for _i, o in outcomes)
            stored = sum(int(o["storedSize"]) for _i, o in outcomes)
            return self._success(repository, tree, bytes_read, stored)
        except Exception as exc:  # any error ends this volume, never the task
            return _failure(exc)

    def _success(
        self, repository: BackupRepository, tree: Tree, bytes_read: int, stored: int
    ) -> dict[str, Any]:
        repository.put(latest_key(self.namespace, self.claim), tree.id.encode())
        log.info("volume.stored", claim=self.part, tree=tree.id, entries=tree.entries, read=bytes_read,
                 stored=stored)  # fmt: skip
        return {
            "status": Status.SUCCESSFUL.value,
            "reason": "",
            "tree": tree.id,
            "entries": tree.entries,
            "totalSize": tree.size,
            "bytesDone": tree.size,
            "bytesRead": bytes_read,
            "storedSize": stored,
        }

    def _finish(self, result: dict[str, Any]) -> None:
        claim = self.part
        if result["status"] == Status.SUCCESSFUL:
            self.state.log("volume.completed", claim=claim,
                           **{k: result[k] for k in ("tree", "totalSize", "storedSize")})  # fmt: skip
        else:
            log.warning("volume.failed", claim=claim, reason=result["reason"])
            self.state.log("volume.failed", claim=claim, reason=result["reason"])
        backup_stage.complete(
            self.ports, replace(self.message, part=self.volume_part), self.state, claim, result
        )

    # --- helpers -------------------------------------------------------------------------------------

    def _source(self) -> Path:
        """The volume's directory on this node as the API has it (RefusedDirectory when the plan in Redis
        disagrees or the claim is not one this backup may read)."""
        settings, cluster = self.ports.settings, self.ports.cluster
        plan, read_part = self.plan, self.part
        if plan.mode == "datamover":
            # The temporary claim made from the claim's snapshot, named after this backup and the claim
            # (not after anything in Redis) and checked to be made from this backup's snapshot of it.
            read_claim = mover.derived_name(self.message.name, self.claim, self.message.uid)
            if plan.read_claim != read_claim:
                raise node_dirs.RefusedDirectory(
                    f"the volume plan names the claim {plan.read_claim!r} to read, this backup's claim made "
                    f"from the snapshot of {self.part} is {read_claim}"
                )
            snapshot = read_claim  # the snapshot and the claim made from it have the same derived name
            made = mover.claim_made_from(
                cluster.read_claim(self.namespace, read_claim), snapshot,
                mover.backup_labels(self.message.name, self.message.uid),
            )  # fmt: skip
            if made:
                raise node_dirs.RefusedDirectory(f"claim {self.namespace}/{read_claim}: {made}")
            plan, read_part = replace(plan, claim=read_claim), f"{self.namespace}/{read_claim}"
        view = node_dirs.claim_view(cluster, read_part)
        allowed = node_dirs.backup_namespaces(
            self.backup, settings.admin_namespace, node_dirs.selected_namespaces(cluster, self.backup),
            present=[view.namespace] if view.pvc is not None else [],
        )  # fmt: skip
        source = node_dirs.derive_directory(
            plan, read_part, view, allowed, settings.node_name, settings.kubelet_root
        )
        if not source.is_dir():
            raise FileNotFoundError(f"volume directory {source} not found on node {settings.node_name}")
        return source

    def _bounds(self) -> ShardPlan:
        raw = self.state.group_plan(self.group)
        if raw is None:
            raise RepoError(f"the shard plan of {self.part} is gone")
        return ShardPlan(bounds=tuple(bytes.fromhex(b) for b in json.loads(raw)), size=0, entries=0)

    def _update(self, fields: dict[str, Any]) -> None:
        backup_stage.update_volume(self.ports, self.message.namespace, self.message.name, self.part, fields)

    def _report_single(self, done: int) -> None:
        self._update({"status": Status.IN_PROGRESS.value, "bytesDone": done})

    def _store(
        self,
        repository: BackupRepository,
        source: Path,
        start: bytes | None,
        end: bytes | None,
        report: Callable[[int], None],
    ) -> tuple[Tree, WriterStats]:
        """Store ``[start, end)`` of the volume, reporting the bytes read every few seconds."""
        previous = _previous(repository, self.namespace, self.claim)
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
                report(done)

        reporter = threading.Thread(target=report_progress, daemon=True, name="volume-progress")
        reporter.start()
        writer = RepoWriter(repository.store, repository.sealer, on_read=on_read)
        try:
            tree = snapshot_tree(os.fspath(source), writer, previous, start=start, end=end)
            writer.flush()
        finally:
            writer.close()
            stop.set()
            reporter.join()
        return tree, writer.stats


def failure_reason(exc: Exception) -> str:
    """A volume's reason in its status: what went wrong, never a traceback."""
    if isinstance(exc, LocationUnavailable):
        return exc.reason
    if isinstance(exc, node_dirs.RefusedDirectory):
        return f"refused the volume's {exc.what}: {exc.reason}"
    log.warning("volume.error", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
    return f"{type(exc).__name__}: {exc}"


def _failure(exc: Exception) -> dict[str, Any]:
    return {"status": Status.FAILED.value, "reason": failure_reason(exc)}


def _previous(repository: BackupRepository, namespace: str, claim: str) -> Tree | None:
    try:
        tree_id = repository.get(latest_key(namespace, claim)).decode()
        return load_tree(repository.store, repository.sealer, tree_id)
    except (ObjectNotFound, RepoError) as exc:
        log.info("volume.full_backup", claim=f"{namespace}/{claim}", why=str(exc))
        return None
