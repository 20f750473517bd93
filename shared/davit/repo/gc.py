"""Garbage collection of the volume-data repository (docs/format.md, "Garbage collection").

What is in use: every tree a complete backup's manifest names (in any namespace), every tree a
``repo/latest/<namespace>/<claim>`` pointer names, and every other tree root still present (a backup in
progress, a shard waiting for its merge); the tree parts those roots list; the chunks those parts
reference; and one pack holding each of those chunks (a chunk stored twice keeps one copy). Everything
else is garbage, removed in two phases:

1. **mark**: an unused object gets a marker ``repo/gc/doomed/<kind>/<id>.<unix seconds>``. From then on
   writers do not count a marked pack's chunks as stored (``RepoIndex``), so no new reference to them
   is made; readers still read them.
2. **delete**, in a later run at least the grace period after the mark, if the object is still unused
   and its marker still there: a pack's index object, then the pack, then the marker.

An object in use again loses its markers. A tree root deleted in a run keeps its parts and chunks in use
until then, so they are marked only in that run. Every step is one idempotent put or delete of its own
object, so a run killed anywhere is finished by the next one, and runs of several collectors may overlap.

``plan`` decides (pure); ``collect`` reads the store, decides and carries the plan out.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final

from davit.constants import RetentionAction
from davit.format.layout import BackupRef
from davit.format.repository import BackupRepository, FormatError, fetch_sealed
from davit.format.sealing import CorruptObject, Sealer
from davit.repo import layout
from davit.repo.errors import RepoError
from davit.repo.index import DOOMED_PACKS, decode_index, parse_doom_marker
from davit.repo.tree_format import Tree, iter_entries, load_tree
from davit.storage.base import ObjectNotFound, ObjectStore

#: The stage of the message that asks the retention service to collect a BackupLocation's garbage.
COLLECT_STAGE: Final = RetentionAction.COLLECT.value
#: Three times the task time limit (2 h): a backup task's objects are named by a tree root within the
#: task's lifetime, so an object unused for this long after being marked is not about to be used. See
#: docs/format.md for what else the period must cover (overlapping backups of one claim, shards).
DEFAULT_GRACE_SECONDS: Final = 6 * 3600
#: ``repo/latest/<namespace>/<claim>``: the id of the claim's last tree, the base of its next incremental
#: backup (written by the node agent).
LATEST: Final = "repo/latest/"
DOOMED: Final = "repo/gc/doomed/"
DOOMED_TREES: Final = "repo/gc/doomed/trees/"
DOOMED_TREE_PARTS: Final = "repo/gc/doomed/tree-parts/"
#: Small objects (manifests, pointers, roots, index objects) read at once: latency bound.
READ_CONCURRENCY = 16
#: Tree parts read at once (each up to ~4 MiB held while its entries are decoded).
PART_CONCURRENCY = 4
#: Objects being marked or deleted at once.
WRITE_CONCURRENCY = 16


class GcError(RepoError):
    """Something the collection must read to know what is in use could not be read (another
    encryptionKey, a damaged object): nothing depending on it was deleted."""


@dataclass(frozen=True)
class Doom:
    """An object's markers: the earliest one's time and key (what the grace period counts from), and all
    of their keys (a collector that raced another may have marked it twice)."""

    since: int
    key: str
    keys: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    """What to do with the objects of one kind (ids), in that order: mark, unmark, delete."""

    #: Unused and not marked yet: marked now.
    mark: tuple[str, ...] = ()
    #: In use again: their markers go.
    unmark: tuple[str, ...] = ()
    #: Unused and marked at least the grace period ago (or marked now, with no grace period).
    delete: tuple[str, ...] = ()
    #: Unused and marked too recently: kept for now.
    waiting: tuple[str, ...] = ()
    #: Markers of objects that no longer exist (a run killed after deleting one).
    stray: tuple[str, ...] = ()


def plan(
    present: Iterable[str],
    used: Collection[str],
    doomed: Mapping[str, Doom],
    now: float,
    grace_seconds: float,
) -> Plan:
    """Pure: the fate of the ``present`` objects of one kind, given the ones in ``used`` and the markers
    found. An object is deleted only if unused now and marked at least ``grace_seconds`` before ``now``."""
    cutoff = now - grace_seconds
    present_ids = set(present)
    mark: list[str] = []
    unmark: list[str] = []
    delete: list[str] = []
    waiting: list[str] = []
    for object_id in sorted(present_ids):
        doom = doomed.get(object_id)
        if object_id in used:
            if doom is not None:
                unmark.append(object_id)
        elif doom is None:
            mark.append(object_id)
            (delete if grace_seconds <= 0 else waiting).append(object_id)
        elif doom.since <= cutoff or grace_seconds <= 0:
            delete.append(object_id)
        else:
            waiting.append(object_id)
    stray = [key for object_id, doom in doomed.items() if object_id not in present_ids for key in doom.keys]
    return Plan(tuple(mark), tuple(unmark), tuple(delete), tuple(waiting), tuple(sorted(stray)))


@dataclass
class KindReport:
    """One kind of object (packs with their index objects, tree roots, tree parts)."""

    #: In use.
    live: int = 0
    live_bytes: int = 0
    #: Deleted this run (with --dry-run: would be).
    deleted: int = 0
    freed_bytes: int = 0
    #: Marked this run, and all unused objects kept because their mark is younger than the grace period.
    marked: int = 0
    waiting: int = 0
    waiting_bytes: int = 0
    #: Marked before but in use again.
    unmarked: int = 0
    #: Due for deletion but their marker had been withdrawn meanwhile (a writer stored them again).
    withdrawn: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "live": self.live,
            "liveBytes": self.live_bytes,
            "deleted": self.deleted,
            "freedBytes": self.freed_bytes,
            "marked": self.marked,
            "keptByGrace": self.waiting,
            "keptByGraceBytes": self.waiting_bytes,
            "unmarked": self.unmarked,
            "withdrawn": self.withdrawn,
        }


@dataclass
class GcReport:
    dry_run: bool
    grace_seconds: float
    #: The run's "now" (unix seconds): marks made carry it, the grace period is counted back from it.
    started: float
    #: Complete backups whose manifests were read, and ``repo/latest`` pointers read.
    backups: int = 0
    latest: int = 0
    #: Distinct chunks referenced by the trees in use.
    live_chunks: int = 0
    packs: KindReport = field(default_factory=KindReport)
    trees: KindReport = field(default_factory=KindReport)
    tree_parts: KindReport = field(default_factory=KindReport)
    #: Markers removed because their object was gone.
    stray_markers: int = 0
    #: Things that did not stop the collection (a tree that names a part no longer there).
    warnings: list[str] = field(default_factory=list)

    @property
    def kinds(self) -> dict[str, KindReport]:
        return {"packs": self.packs, "trees": self.trees, "treeParts": self.tree_parts}

    @property
    def deleted(self) -> int:
        return sum(k.deleted for k in self.kinds.values())

    @property
    def freed_bytes(self) -> int:
        return sum(k.freed_bytes for k in self.kinds.values())

    @property
    def waiting(self) -> int:
        return sum(k.waiting for k in self.kinds.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "dryRun": self.dry_run,
            "graceSeconds": self.grace_seconds,
            "backups": self.backups,
            "latestPointers": self.latest,
            "liveChunks": self.live_chunks,
            "deleted": self.deleted,
            "freedBytes": self.freed_bytes,
            "keptByGrace": self.waiting,
            **{name: kind.to_dict() for name, kind in self.kinds.items()},
            "strayMarkers": self.stray_markers,
            "warnings": list(self.warnings),
        }


def collect(
    store: ObjectStore,
    sealer: Sealer,
    *,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    now: float | None = None,
    dry_run: bool = False,
) -> GcReport:
    """Collect the repository's garbage (see the module's docstring). ``now`` is the clock (unix seconds;
    the current time if not given). With ``dry_run`` nothing is written or deleted and the report says
    what would be. Raises ``GcError`` when what is in use cannot be known; storage errors pass through.
    Either way what was done is safe, and the next run carries on."""
    if grace_seconds < 0:
        raise ValueError("the grace period cannot be negative")
    report = GcReport(
        dry_run=dry_run, grace_seconds=grace_seconds, started=time.time() if now is None else now
    )
    _Collection(store, sealer, report).run()
    return report


class _Collection:
    def __init__(self, store: ObjectStore, sealer: Sealer, report: GcReport) -> None:
        self.store = store
        self.sealer = sealer
        self.report = report
        self.now = report.started

    def run(self) -> None:
        # Markers first, then what is in use: an object marked by another collector after this listing
        # is simply found unmarked (and marked again, later, which only delays its deletion).
        doomed = {prefix: self._markers(prefix) for prefix in (DOOMED_TREES, DOOMED_TREE_PARTS, DOOMED_PACKS)}
        named = self._named_trees()

        # Roots first: a root deleted now no longer protects its parts and chunks, which are marked in
        # this run and deleted a grace period later, so a merge or a reader that loaded the root just
        # before finishes first.
        roots = self._listing(layout.TREES, lambda key: _id_after(key, layout.TREES))
        root_plan = self._plan(roots, named, doomed[DOOMED_TREES], self.report.trees)
        gone = self._apply(root_plan, roots, doomed[DOOMED_TREES], DOOMED_TREES, self.report.trees,
                           lambda tree_id: [layout.tree_key(tree_id)])  # fmt: skip
        live_roots = [tree_id for tree_id in roots if tree_id not in gone]

        used_parts, live_chunks = self._read_trees(live_roots)
        self.report.live_chunks = len(live_chunks)
        parts = self._listing(layout.TREE_PARTS, lambda key: _id_after(key, layout.TREE_PARTS))
        part_plan = self._plan(parts, used_parts, doomed[DOOMED_TREE_PARTS], self.report.tree_parts)
        self._apply(part_plan, parts, doomed[DOOMED_TREE_PARTS], DOOMED_TREE_PARTS, self.report.tree_parts,
                    lambda part_id: [layout.tree_part_key(part_id)])  # fmt: skip

        # A pack and its index object are one object here, listed by either; the index goes first, so
        # a run killed in between leaves a pack no reader sees and the next run deletes.
        pack_sizes = self._listing(layout.PACKS, layout.pack_id_of_key)
        index_sizes = self._listing(layout.INDEX, lambda key: _id_after(key, layout.INDEX))
        sizes = {
            p: pack_sizes.get(p, 0) + index_sizes.get(p, 0) for p in pack_sizes.keys() | index_sizes.keys()
        }
        used_packs = self._used_packs(
            index_sizes, pack_sizes.keys(), doomed[DOOMED_PACKS].keys(), live_chunks
        )
        pack_plan = self._plan(sizes, used_packs, doomed[DOOMED_PACKS], self.report.packs)
        self._apply(pack_plan, sizes, doomed[DOOMED_PACKS], DOOMED_PACKS, self.report.packs,
                    lambda pack_id: [layout.index_key(pack_id), layout.pack_key(pack_id)])  # fmt: skip

    # --- reading -------------------------------------------------------------------------------------

    def _markers(self, prefix: str) -> dict[str, Doom]:
        found: dict[str, list[tuple[int, str]]] = {}
        for info in self.store.list(prefix):
            marker = parse_doom_marker(info.key, prefix)
            if marker is not None:
                found.setdefault(marker[0], []).append((marker[1], info.key))
        out = {}
        for object_id, marks in found.items():
            since, key = min(marks)
            out[object_id] = Doom(since, key, tuple(k for _s, k in sorted(marks)))
        return out

    def _listing(self, prefix: str, parse: Callable[[str], str | None]) -> dict[str, int]:
        out = {}
        for info in self.store.list(prefix):
            object_id = parse(info.key)
            if object_id is not None:
                out[object_id] = info.size
        return out

    def _named_trees(self) -> set[str]:
        """The trees complete backups' manifests and the ``repo/latest`` pointers name."""
        repository = BackupRepository(self.store, self.sealer)
        refs = list(repository.list_backups())
        pointers = [info.key for info in self.store.list(LATEST)]
        named: set[str] = set()

        def manifest_trees(ref: BackupRef) -> list[str] | None:
            try:
                manifest = repository.read_manifest(ref)
            except ObjectNotFound:
                return None  # deleted since listed
            except (CorruptObject, FormatError, ValueError) as exc:
                # Including one too large or too deeply nested to read: what it names is unknown, so
                # nothing may be deleted on its account. The run stops; the error names the object.
                raise GcError(f"cannot read the manifest {ref.manifest}: {exc}") from exc
            volumes = manifest.get("volumes") or []
            if not isinstance(volumes, list) or not all(isinstance(v, dict) for v in volumes):
                raise GcError(
                    f"cannot read the manifest {ref.manifest}: its volumes are not a list of objects"
                )
            return [str(v["tree"]) for v in volumes if v.get("tree")]

        def pointer_tree(key: str) -> list[str] | None:
            try:
                return [self.sealer.open(key, fetch_sealed(self.store, key)).decode(errors="replace").strip()]
            except ObjectNotFound:
                return None
            except CorruptObject as exc:
                raise GcError(f"cannot read {key}: {exc}") from exc

        with ThreadPoolExecutor(READ_CONCURRENCY) as pool:
            for trees in pool.map(manifest_trees, refs):
                if trees is not None:
                    self.report.backups += 1
                    named.update(trees)
            for key, trees in zip(pointers, pool.map(pointer_tree, pointers), strict=True):
                if trees is not None:
                    self.report.latest += 1
                    named.update(trees)
                    if not layout.is_id(trees[0]):
                        self.report.warnings.append(f"{key} does not hold a tree id")
        return named

    def _read_trees(self, roots: list[str]) -> tuple[set[str], set[bytes]]:
        """The parts the ``roots`` list and the chunks those parts reference (each part read once)."""

        def root(tree_id: str) -> Tree | None:
            try:
                return load_tree(self.store, self.sealer, tree_id)
            except RepoError as exc:
                if not self.store.exists(layout.tree_key(tree_id)):
                    return None  # deleted since listed, by another collector
                raise GcError(f"cannot read tree {tree_id}: {exc}") from exc

        with ThreadPoolExecutor(READ_CONCURRENCY) as pool:
            trees = [tree for tree in pool.map(root, roots) if tree is not None]
        parts = {part for tree in trees for part in tree.parts}

        def chunks(part_id: str) -> set[bytes] | None:
            one = Tree(id=part_id, parts=(part_id,), entries=0, size=0)
            try:
                return {
                    chunk
                    for entry in iter_entries(self.store, self.sealer, one)
                    for chunk in entry.chunk_ids()
                }
            except RepoError as exc:
                if not self.store.exists(layout.tree_part_key(part_id)):
                    return None
                raise GcError(f"cannot read tree part {part_id}: {exc}") from exc

        live: set[bytes] = set()
        with ThreadPoolExecutor(PART_CONCURRENCY) as pool:
            for part_id, found in zip(sorted(parts), pool.map(chunks, sorted(parts)), strict=True):
                if found is None:
                    # The trees listing it are damaged already (``check`` names them); its entries'
                    # chunks are unknown, and no reader can reach them through this part either.
                    self.report.warnings.append(f"tree part {part_id} is missing")
                else:
                    live |= found
        return parts, live

    def _used_packs(
        self,
        index_sizes: Mapping[str, int],
        packs: Collection[str],
        marked: Collection[str],
        live_chunks: set[bytes],
    ) -> set[str]:
        """The packs holding the copy kept of a chunk in use. A chunk stored more than once (two writers
        at once, or a writer that would not reuse a marked pack) keeps one copy: one whose pack exists,
        preferably unmarked, then the lowest pack id, which is also the copy a reader's index uses."""
        kept: dict[bytes, tuple[bool, bool, str]] = {}

        def chunks_in_use(pack_id: str) -> list[bytes]:
            key = layout.index_key(pack_id)
            try:
                entries = decode_index(key, pack_id, self.sealer.open(key, fetch_sealed(self.store, key)))
            except ObjectNotFound:
                return []  # deleted since listed
            except (CorruptObject, RepoError) as exc:
                raise GcError(f"cannot read the index object {key}: {exc}") from exc
            return [chunk for chunk, _entry in entries if chunk in live_chunks]

        with ThreadPoolExecutor(READ_CONCURRENCY) as pool:
            for pack_id, chunks in zip(index_sizes, pool.map(chunks_in_use, list(index_sizes)), strict=True):
                rank = (pack_id not in packs, pack_id in marked, pack_id)
                for chunk in chunks:
                    if chunk not in kept or rank < kept[chunk]:
                        kept[chunk] = rank
        missing = sum(1 for missing_pack, _marked, _pack in kept.values() if missing_pack)
        if missing:
            self.report.warnings.append(f"{missing} chunk(s) in use are indexed but their packs are gone")
        return {pack_id for _missing, _marked, pack_id in kept.values()}

    # --- deciding and acting -------------------------------------------------------------------------

    def _plan(self, sizes: Mapping[str, int], used: Collection[str], doomed: Mapping[str, Doom],
              kind: KindReport) -> Plan:  # fmt: skip
        decided = plan(sizes, used, doomed, self.now, self.report.grace_seconds)
        live = [object_id for object_id in sizes if object_id in used]
        kind.live, kind.live_bytes = len(live), sum(sizes[i] for i in live)
        kind.marked, kind.unmarked = len(decided.mark), len(decided.unmark)
        kind.waiting, kind.waiting_bytes = len(decided.waiting), sum(sizes[i] for i in decided.waiting)
        return decided

    def _apply(
        self,
        decided: Plan,
        sizes: Mapping[str, int],
        doomed: Mapping[str, Doom],
        prefix: str,
        kind: KindReport,
        keys_of: Callable[[str], list[str]],
    ) -> set[str]:
        """Carry ``decided`` out; returns the ids deleted (with --dry-run: that would be)."""
        if self.report.dry_run:
            kind.deleted, kind.freed_bytes = len(decided.delete), sum(sizes[i] for i in decided.delete)
            return set(decided.delete)
        marker_body = self.sealer.seal  # markers hold nothing: their key says it all
        # Rounded up: a mark never looks older than it is.
        new_marks = {object_id: f"{prefix}{object_id}.{math.ceil(self.now)}" for object_id in decided.mark}

        def mark(object_id: str) -> None:
            key = new_marks[object_id]
            self.store.put(key, marker_body(key, b""))

        def unmark(object_id: str) -> None:
            for key in doomed[object_id].keys:
                self.store.delete(key)

        def delete(object_id: str) -> bool:
            doom = doomed.get(object_id)
            marker = doom.key if doom is not None else new_marks[object_id]
            # Withdrawn since listed (a writer stored the same pack again): it is in use.
            if not self.store.exists(marker):
                return False
            for key in keys_of(object_id):
                self.store.delete(key)
            for key in doom.keys if doom is not None else (marker,):
                self.store.delete(key)
            return True

        with ThreadPoolExecutor(WRITE_CONCURRENCY) as pool:
            _drain(pool.map(mark, decided.mark))
            _drain(pool.map(unmark, decided.unmark))
            deleted = {
                i for i, done in zip(decided.delete, pool.map(delete, decided.delete), strict=True) if done
            }
            _drain(pool.map(self.store.delete, decided.stray))
        kind.deleted, kind.freed_bytes = len(deleted), sum(sizes[i] for i in deleted)
        kind.withdrawn = len(decided.delete) - len(deleted)
        self.report.stray_markers += len(decided.stray)
        return deleted


def _drain(results: Iterator[Any]) -> None:
    """Wait for every call of a ``pool.map`` (raising the first failure)."""
    for _ in results:
        pass


def _id_after(key: str, prefix: str) -> str | None:
    object_id = key[len(prefix) :]
    return object_id if key.startswith(prefix) and layout.is_id(object_id) else None
