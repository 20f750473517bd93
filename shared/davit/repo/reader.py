"""Reading chunks back: locate them in the index, fetch their pack, open and verify them.

The store interface reads whole objects, so a reader keeps the last few packs it fetched: restores and
checks ask for chunks in about the order they were written, so each pack is fetched about once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future

import blake3

from davit.format.sealing import CorruptObject, Sealer
from davit.repo import layout
from davit.repo.codec import ChunkCodec
from davit.repo.errors import CorruptChunk, MissingChunk
from davit.repo.index import IndexEntry, RepoIndex
from davit.storage.base import ObjectNotFound, ObjectStore, ObjectTooLarge

#: Packs kept in memory (16 MiB each at most, plus one chunk's overflow).
CACHED_PACKS = 4


class RepoReader:
    """Verified chunk reads. Thread-safe: a restore reads chunks from a pool."""

    def __init__(
        self,
        store: ObjectStore,
        sealer: Sealer,
        *,
        index: RepoIndex | None = None,
        cached_packs: int = CACHED_PACKS,
    ) -> None:
        self.store = store
        self.sealer = sealer
        self.codec = ChunkCodec(sealer)
        self.index = index if index is not None else RepoIndex.load(store, sealer)
        self._cached_packs = cached_packs
        self._packs: OrderedDict[str, Future[bytes]] = OrderedDict()
        self._lock = threading.Lock()
        self._refreshed = False
        self.bytes_fetched = 0

    def locate(self, chunk_id: bytes) -> IndexEntry:
        entry = self.index.get(chunk_id)
        if entry is None and not self._refreshed:
            # Written by a writer after this index was loaded: look once more.
            self._refreshed = True
            self.index.refresh()
            entry = self.index.get(chunk_id)
        if entry is None:
            raise MissingChunk(chunk_id.hex())
        return entry

    def read_chunk(self, chunk_id: bytes) -> bytes:
        """The chunk's content, verified: its sealed form opens and its content hashes to ``chunk_id``."""
        entry = self.locate(chunk_id)
        try:
            pack = self.pack(entry.pack, chunk_id)
        except MissingChunk:
            # Its pack went since the index was loaded: garbage collection repacked the chunk elsewhere
            # and deleted the pack a grace period later, which a long restore can outlast. The index,
            # read again, knows the copy.
            self.index.refresh()
            moved = self.index.get(chunk_id)
            if moved is None or moved.pack == entry.pack:
                raise
            entry = moved
            pack = self.pack(entry.pack, chunk_id)
        return open_chunk(self.codec, chunk_id, entry, pack)

    def pack(self, pack_id: str, for_chunk: bytes | None = None) -> bytes:
        """A pack's bytes, fetched once while it stays among the recently used."""
        with self._lock:
            future = self._packs.get(pack_id)
            owner = future is None
            if future is None:
                future = self._packs[pack_id] = Future()
                while len(self._packs) > self._cached_packs:
                    self._packs.popitem(last=False)
            else:
                self._packs.move_to_end(pack_id)
        if owner:
            try:
                # A pack closes once it reaches PACK_SIZE: one sealed chunk more at most.
                data = self.store.get(layout.pack_key(pack_id), layout.MAX_PACK)
            except BaseException as exc:
                # Whatever went wrong, the pack is not cached and every waiter gets the same error.
                with self._lock:
                    self._packs.pop(pack_id, None)
                error = _pack_error(exc, pack_id, for_chunk)
                future.set_exception(error)
                if error is exc:
                    raise
                raise error from exc
            with self._lock:
                self.bytes_fetched += len(data)
            future.set_result(data)
            return data
        return future.result()


def _pack_error(exc: BaseException, pack_id: str, for_chunk: bytes | None) -> BaseException:
    """What a failed pack read means for the chunk that needed it."""
    chunk = for_chunk.hex() if for_chunk else "?"
    if isinstance(exc, ObjectTooLarge):
        return CorruptChunk(chunk, f"its pack {pack_id}: {exc.message}")
    if isinstance(exc, ObjectNotFound):
        return MissingChunk(chunk, f"its pack {pack_id} is not in the store")
    return exc


def open_chunk(codec: ChunkCodec, chunk_id: bytes, entry: IndexEntry, pack: bytes) -> bytes:
    hex_id = chunk_id.hex()
    if entry.offset + entry.length > len(pack):
        raise CorruptChunk(hex_id, f"{_where(entry)} lies beyond the pack's end ({len(pack)} bytes)")
    if not 0 <= entry.raw_size <= layout.CHUNK_MAX:
        raise CorruptChunk(hex_id, f"{_where(entry)}: the index gives it {entry.raw_size} bytes; chunks "
                           f"have at most {layout.CHUNK_MAX}")  # fmt: skip
    try:
        # Bounded by what the index promises: a chunk that would expand further is refused before its
        # content is allocated. A view of the pack: its bytes are opened where they are, not copied.
        data = codec.open(
            layout.chunk_aad(hex_id),
            memoryview(pack)[entry.offset : entry.offset + entry.length],
            entry.raw_size,
        )
    except CorruptObject as exc:
        raise CorruptChunk(hex_id, f"{_where(entry)}: {exc}") from exc
    if blake3.blake3(data).digest() != chunk_id:
        raise CorruptChunk(hex_id, f"{_where(entry)}: content does not match its id")
    if len(data) != entry.raw_size:
        raise CorruptChunk(hex_id, f"{_where(entry)}: {len(data)} bytes, the index says {entry.raw_size}")
    return data


def _where(entry: IndexEntry) -> str:
    return f"pack {entry.pack} at {entry.offset}+{entry.length}"
