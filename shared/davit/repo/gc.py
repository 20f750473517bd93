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

A pack in use whose chunks in use take less than a share of it (``repack_below``, half by default) is
**repacked**: those chunks, as they are sealed, go into new packs written with their index objects by a
``RepoWriter``; once those are stored, the old pack is no longer the kept copy of anything, so it is
marked and deleted like any unused pack. A run killed after writing the new packs leaves each chunk
stored twice, which the next run resolves as any duplicate.

``plan`` and ``choose_repacks`` decide (pure); ``collect`` reads the store, decides and carries it out.
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
from davit.repo.codec import ChunkCodec
from davit.repo.errors import CorruptChunk, RepoError
from davit.repo.index import DOOMED_PACKS, IndexEntry, RepoIndex, decode_index, parse_doom_marker
from davit.repo.reader import open_chunk
from davit.repo.tree_format import Tree, iter_entries, load_tree
from davit.repo.writer import RepoWriter
from davit.storage.base import ObjectNotFound, ObjectStore, ObjectTooLarge

#: The stage of the message that asks the retention service to collect a BackupLocation's garbage.
COLLECT_STAGE: Final = RetentionAction.COLLECT.value
#: Three times the task time limit (2 h): a backup task's objects are named by a tree root within the
#: task's lifetime, so an object unused for this long after being marked is not about to be used. See
#: docs/format.md for what else the period must cover (overlapping backups of one claim, shards).
DEFAULT_GRACE_SECONDS: Final = 6 * 3600
#: A pack in use is rewritten once less than this share of its bytes is chunks in use: at most half of
#: the store is then space nothing uses, and a pack's data is copied again only after at least half of it
#: became garbage (each byte is rewritten at most about once per halving of its pack).
DEFAULT_REPACK_BELOW: Final = 0.5
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


def repack_below_of(location: Mapping[str, Any]) -> float:
    """The repacking threshold a BackupLocation sets (``location.repackBelowPercent``) as a share of a
    pack; the default where it is unset, or not a whole percentage the API server would have accepted."""
    percent = (location.get("location") or {}).get("repackBelowPercent")
    if isinstance(percent, int) and not isinstance(percent, bool) and 0 <= percent <= 100:
        return percent / 100
    return DEFAULT_REPACK_BELOW


def choose_repacks(
    pack_sizes: Mapping[str, int], live_bytes: Mapping[str, int], marked: Collection[str], below: float
) -> tuple[str, ...]:
    """Pure: the packs to repack, in id order. ``pack_sizes`` are the packs present, ``live_bytes`` what
    the chunks in use kept in each pack take of it, ``marked`` the packs with a marker. A pack is repacked
    when present, in use, not marked, and its chunks in use take less than ``below`` of it. A marked pack
    in use is unmarked by this run and left for the next: its marker is older than this run, and a pack
    given up must be marked now to be deleted a whole grace period later."""
    return tuple(
        sorted(
            pack_id
            for pack_id, live in live_bytes.items()
            if pack_id in pack_sizes and pack_id not in marked and 0 < live < below * pack_sizes[pack_id]
        )
    )


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
class RepackReport:
    """Packs in use but mostly garbage whose chunks in use were copied into new packs."""

    #: The share below which a pack in use is repacked (0: never).
    below: float
    #: Packs repacked (with --dry-run: would be), their size, and what their chunks in use take.
    packs: int = 0
    packs_bytes: int = 0
    live_bytes: int = 0
    #: New packs written, and what they and their index objects take (with --dry-run: nothing).
    written: int = 0
    written_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "below": self.below,
            "packs": self.packs,
            "packsBytes": self.packs_bytes,
            "liveBytes": self.live_bytes,
            "written": self.written,
            "writtenBytes": self.written_bytes,
        }


@dataclass
class GcReport:
    dry_run: bool
    grace_seconds: float
    #: The run's "now" (unix seconds): marks made carry it, the grace period is counted back from it.
    started: float
    repack: RepackReport = field(default_factory=lambda: RepackReport(DEFAULT_REPACK_BELOW))
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
            "repack": self.repack.to_dict(),
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
    repack_below: float = DEFAULT_REPACK_BELOW,
) -> GcReport:
    """Collect the repository's garbage (see the module's docstring). ``now`` is the clock (unix seconds;
    the current time if not given). Packs in use of which less than ``repack_below`` (0 to 1) is in use
    are repacked. With ``dry_run`` nothing is written or deleted and the report says what would be.
    Raises ``GcError`` when what is in use cannot be known; storage errors pass through. Either way what
    was done is safe, and the next run carries on."""
    if grace_seconds < 0:
        raise ValueError("the grace period cannot be negative")
    if not 0 <= repack_below <= 1:
        raise ValueError("the repacking threshold is a share of a pack, from 0 to 1")
    report = GcReport(
        dry_run=dry_run,
        grace_seconds=grace_seconds,
        started=time.time() if now is None else now,
        repack=RepackReport(repack_below),
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
        pack_doom = doomed[DOOMED_PACKS]
        kept = self._kept_copies(index_sizes, pack_sizes.keys(), pack_doom.keys(), live_chunks)
        live_bytes: dict[str, int] = {}
        for entry in kept.values():
            live_bytes[entry.pack] = live_bytes.get(entry.pack, 0) + entry.length
        used_packs = set(live_bytes)
        # Repacked before the plan: a pack whose chunks in use have just been stored anew is unused from
        # then on, so the plan marks it in this run, and deletes it a grace period later.
        chosen = choose_repacks(pack_sizes, live_bytes, pack_doom.keys(), self.report.repack.below)
        if chosen:
            moved, written = self._repack(chosen, kept, pack_doom)
            used_packs = (used_packs - moved) | written.keys()
            sizes.update(written)
            pack_doom = {pack_id: doom for pack_id, doom in pack_doom.items() if pack_id not in written}
            self.report.repack.packs = len(moved)
            self.report.repack.packs_bytes = sum(pack_sizes[pack_id] for pack_id in moved)
            self.report.repack.live_bytes = sum(live_bytes[pack_id] for pack_id in moved)
        pack_plan = self._plan(sizes, used_packs, pack_doom, self.report.packs)
        self._apply(pack_plan, sizes, pack_doom, DOOMED_PACKS, self.report.packs,
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

    def _kept_copies(
        self,
        index_sizes: Mapping[str, int],
        packs: Collection[str],
        marked: Collection[str],
        live_chunks: set[bytes],
    ) -> dict[bytes, IndexEntry]:
        """Where the copy kept of each chunk in use is. A chunk stored more than once (two writers at
        once, a writer that would not reuse a marked pack, a repack) keeps one copy: one whose pack
        exists, preferably unmarked, then the lowest pack id, which is also the copy a reader's index
        uses."""
        kept: dict[bytes, IndexEntry] = {}

        def rank(pack_id: str) -> tuple[bool, bool, str]:
            return pack_id not in packs, pack_id in marked, pack_id

        def chunks_in_use(pack_id: str) -> list[tuple[bytes, IndexEntry]]:
            key = layout.index_key(pack_id)
            try:
                entries = decode_index(key, pack_id, self.sealer.open(key, fetch_sealed(self.store, key)))
            except ObjectNotFound:
                return []  # deleted since listed
            except (CorruptObject, RepoError) as exc:
                raise GcError(f"cannot read the index object {key}: {exc}") from exc
            return [(chunk, entry) for chunk, entry in entries if chunk in live_chunks]

        with ThreadPoolExecutor(READ_CONCURRENCY) as pool:
            for pack_id, chunks in zip(index_sizes, pool.map(chunks_in_use, list(index_sizes)), strict=True):
                this = rank(pack_id)
                for chunk, entry in chunks:
                    other = kept.get(chunk)
                    if other is None or this < rank(other.pack):
                        kept[chunk] = entry
        missing = sum(1 for entry in kept.values() if entry.pack not in packs)
        if missing:
            self.report.warnings.append(f"{missing} chunk(s) in use are indexed but their packs are gone")
        return kept

    # --- repacking -----------------------------------------------------------------------------------

    def _repack(
        self, chosen: Collection[str], kept: Mapping[bytes, IndexEntry], doomed: Mapping[str, Doom]
    ) -> tuple[set[str], dict[str, int]]:
        """Store the chunks in use of the ``chosen`` packs anew, as they are sealed, in new packs.
        Returns the packs whose chunks in use are all in a new pack now, present in the store, and the
        new packs' sizes (pack and index object). With --dry-run: every chosen pack, and nothing written.

        Each chunk is verified first: a pack holding a damaged chunk is left as it is (``check`` names
        it). The chunks go in pack order, then in the order they had, so that a run repeating a repack
        killed midway writes the same packs again."""
        report = self.report.repack
        if self.report.dry_run:
            return set(chosen), {}
        to_copy: dict[str, list[tuple[bytes, IndexEntry]]] = {pack_id: [] for pack_id in chosen}
        for chunk, entry in kept.items():
            if entry.pack in to_copy:
                to_copy[entry.pack].append((chunk, entry))
        codec = ChunkCodec(self.sealer)
        # This run's own index: the writer records the new packs in it, and nothing else needs loading.
        written = RepoIndex(self.store, self.sealer)
        copied: dict[str, list[bytes]] = {}
        # One pack read ahead while the last one's chunks are verified and packed.
        with (
            ThreadPoolExecutor(1) as reads,
            RepoWriter(self.store, self.sealer, index=written, workers=1, uploads=1) as writer,
        ):
            order = list(chosen)
            ahead = reads.submit(self._fetch_pack, order[0]) if order else None
            for i, pack_id in enumerate(order):
                assert ahead is not None
                data = ahead.result()
                ahead = reads.submit(self._fetch_pack, order[i + 1]) if i + 1 < len(order) else None
                if data is None:
                    continue
                chunks = sorted(to_copy[pack_id], key=lambda item: item[1].offset)
                try:
                    for chunk, entry in chunks:
                        open_chunk(codec, chunk, entry, data)
                except CorruptChunk as exc:
                    self.report.warnings.append(f"pack {pack_id} not repacked: {exc}")
                    continue
                for chunk, entry in chunks:
                    writer.store_sealed(
                        chunk, data[entry.offset : entry.offset + entry.length], entry.raw_size
                    )
                copied[pack_id] = [chunk for chunk, _entry in chunks]
            writer.flush()
            report.written, report.written_bytes = writer.stats.packs, writer.stats.bytes_stored

        new_sizes: dict[str, int] = {}
        for pack_id in sorted(written.packs):
            # A pack stored again (a repack repeated after its first run marked its result unused) is in
            # use again: its markers go before the old packs are marked, and only a pack still present
            # afterwards holds their chunks (a collector that looked at its marker just before may be
            # deleting it).
            for key in doomed[pack_id].keys if pack_id in doomed else ():
                self.store.delete(key)
            pack_size, index_size = (
                self._size(layout.pack_key(pack_id)),
                self._size(layout.index_key(pack_id)),
            )
            if pack_size is not None and index_size is not None:
                new_sizes[pack_id] = pack_size + index_size
        moved = set()
        for pack_id, copied_chunks in copied.items():
            places = [written.get(chunk) for chunk in copied_chunks]
            if all(place is not None and place.pack in new_sizes for place in places):
                moved.add(pack_id)
        return moved, new_sizes

    def _fetch_pack(self, pack_id: str) -> bytes | None:
        """A pack's bytes; None if it went (deleted since listed, by another collector) or is longer
        than any pack can be (damaged: left for ``check`` to name)."""
        try:
            return self.store.get(layout.pack_key(pack_id), layout.MAX_PACK)
        except ObjectNotFound:
            return None
        except ObjectTooLarge as exc:
            self.report.warnings.append(f"pack {pack_id} not repacked: {exc.message}")
            return None

    def _size(self, key: str) -> int | None:
        """The size of the object ``key``, if present."""
        return next((info.size for info in self.store.list(key) if info.key == key), None)

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
