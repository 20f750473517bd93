"""Checking that trees can be restored: every chunk they reference is indexed, its pack exists and holds
it, and (with ``read_data``) it opens and hashes to its id."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from davit.format.sealing import Sealer
from davit.repo import layout
from davit.repo.codec import ChunkCodec
from davit.repo.errors import CorruptChunk, RepoError
from davit.repo.index import IndexEntry, RepoIndex
from davit.repo.reader import open_chunk
from davit.repo.tree_format import Tree, iter_entries, load_tree
from davit.storage.base import ObjectNotFound, ObjectStore, ObjectTooLarge

#: Packs fetched at once with ``read_data`` (each held in memory while its chunks are verified).
READ_CONCURRENCY = 4


@dataclass(frozen=True)
class ChunkProblem:
    chunk: str
    reason: str
    #: The tree entries that reference the chunk, as ``<tree id>:<path>``.
    paths: tuple[str, ...] = ()


@dataclass
class CheckReport:
    trees: int = 0
    entries: int = 0
    #: Distinct chunks the trees reference.
    chunks: int = 0
    packs_read: int = 0
    bytes_read: int = 0
    missing: list[ChunkProblem] = field(default_factory=list)
    corrupt: list[ChunkProblem] = field(default_factory=list)
    #: Unreadable trees and index objects.
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.corrupt or self.errors)

    @property
    def affected_paths(self) -> list[str]:
        return sorted({p for problem in self.missing + self.corrupt for p in problem.paths})


def check(
    store: ObjectStore, sealer: Sealer, trees: Iterable[Tree | str], read_data: bool = False
) -> CheckReport:
    report = CheckReport()
    # A fresh index, not the process's: a check reports on what the store holds now.
    index = RepoIndex(store, sealer)
    index.refresh(errors=report.errors)

    loaded: list[Tree] = []
    referenced: set[bytes] = set()
    for given in trees:
        try:
            tree = load_tree(store, sealer, given) if isinstance(given, str) else given
            for item in iter_entries(store, sealer, tree):
                report.entries += 1
                referenced.update(item.chunk_ids())
        except RepoError as exc:
            report.errors.append(f"tree {given if isinstance(given, str) else given.id}: {exc}")
            continue
        loaded.append(tree)
    report.trees = len(loaded)
    report.chunks = len(referenced)

    pack_sizes: dict[str, int] = {}
    for info in store.list(layout.PACKS):
        pack_id = layout.pack_id_of_key(info.key)
        if pack_id is not None:
            pack_sizes[pack_id] = info.size

    missing: dict[bytes, str] = {}
    corrupt: dict[bytes, str] = {}
    by_pack: dict[str, list[tuple[bytes, IndexEntry]]] = defaultdict(list)
    for chunk_id in referenced:
        entry = index.get(chunk_id)
        if entry is None:
            missing[chunk_id] = "in no index"
        elif entry.pack not in pack_sizes:
            missing[chunk_id] = f"its pack {entry.pack} is not in the store"
        elif entry.offset + entry.length > pack_sizes[entry.pack]:
            corrupt[chunk_id] = f"pack {entry.pack} is shorter than the index says"
        else:
            by_pack[entry.pack].append((chunk_id, entry))

    if read_data and by_pack:
        codec = ChunkCodec(sealer)

        def verify(pack_id: str) -> tuple[int, dict[bytes, str], dict[bytes, str]]:
            chunks = by_pack[pack_id]
            try:
                data = store.get(layout.pack_key(pack_id), layout.MAX_PACK)
            except ObjectNotFound:
                return 0, {c: f"its pack {pack_id} is not in the store" for c, _ in chunks}, {}
            except ObjectTooLarge as exc:
                return 0, {}, {c: f"its pack {pack_id}: {exc.message}" for c, _ in chunks}
            bad: dict[bytes, str] = {}
            for chunk_id, entry in chunks:
                try:
                    open_chunk(codec, chunk_id, entry, data)
                except CorruptChunk as exc:
                    bad[chunk_id] = str(exc)
            return len(data), {}, bad

        with ThreadPoolExecutor(READ_CONCURRENCY) as pool:
            for size, gone, bad in pool.map(verify, sorted(by_pack)):
                report.packs_read += 1 if size else 0
                report.bytes_read += size
                missing.update(gone)
                corrupt.update(bad)

    if missing or corrupt:
        # Second pass, only when something is wrong: which entries the bad chunks belong to.
        paths: dict[bytes, list[str]] = defaultdict(list)
        for tree in loaded:
            for item in iter_entries(store, sealer, tree):
                for chunk_id in set(item.chunk_ids()):
                    if chunk_id in missing or chunk_id in corrupt:
                        paths[chunk_id].append(f"{tree.id}:{item.name}")
        report.missing = [ChunkProblem(c.hex(), r, tuple(paths[c])) for c, r in sorted(missing.items())]
        report.corrupt = [ChunkProblem(c.hex(), r, tuple(paths[c])) for c, r in sorted(corrupt.items())]
    return report
