"""Storing file data: chunk, hash, skip what the repository has, compress and seal the rest into packs.

The calling thread reads files and chunks them (FastCDC releases the GIL); a pool hashes, compresses and
seals chunks (BLAKE3, zstd and AES-GCM release it too), so a writer uses every core. Chunks of at most
64 KiB are done by the calling thread: for them the hand-off costs more than the work. Whole small files
come best in batches (``store_small_files``, from several threads at once): hashed, compressed in one
call and packed under one lock by the calling thread, into an open pack of their own. Memory stays
bounded: at most ``max_inflight`` chunks in flight, two open packs, and ``uploads`` closed packs being
written; a batch is its caller's.

A pack and then its index are written when the pack is full and on ``flush()``. Until its index exists a
pack is invisible, so a writer that dies leaves only complete pack+index pairs (and perhaps a pack without
an index, garbage for a later collection); a retry loads the index and stores only what is missing.
Chunks this writer packed are skipped too, but only its own: another in-process writer's open pack may
never be written, so trusting its claims could reference data that is never stored.
"""

from __future__ import annotations

import os
import stat
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType

import blake3

from davit.format.sealing import Sealer
from davit.repo import layout
from davit.repo.chunking import data_ranges, iter_chunks
from davit.repo.codec import ChunkCodec, SealedParts
from davit.repo.errors import RepoError
from davit.repo.index import IndexEntry, RepoIndex, encode_index
from davit.storage.base import ObjectStore

#: Closed packs being written at once (each held in memory until stored): two keep a remote store busy
#: while the next pack fills.
UPLOADS = 2
#: Chunks up to this size are hashed and sealed by the calling thread: handing them to the pool costs
#: more (a queue, a wake-up, the GIL passed back and forth) than the work itself.
INLINE_CHUNK = 64 << 10


#: What the pool makes of a chunk: its id, its sealed form if new to the repository (None if stored
#: already), and its size.
_Processed = tuple[bytes, SealedParts | None, int]


@dataclass
class _OpenPack:
    """The sealed chunks of a pack being filled, and their index entries (id, offset, length, raw size)."""

    blobs: list[bytes | memoryview] = field(default_factory=list)
    entries: list[tuple[bytes, int, int, int]] = field(default_factory=list)
    length: int = 0

    def take(self) -> tuple[list[bytes | memoryview], list[tuple[bytes, int, int, int]]]:
        """Its contents, leaving it empty."""
        blobs, entries = self.blobs, self.entries
        self.blobs, self.entries, self.length = [], [], 0
        return blobs, entries


@dataclass(frozen=True)
class Extent:
    """A data range of a file, ``length`` bytes from ``offset``, as the ordered ids of its chunks."""

    offset: int
    length: int
    chunks: tuple[bytes, ...]


@dataclass(frozen=True)
class FileEntry:
    """A stored file: its size (holes included) and its data ranges; what is not in a range is a hole."""

    size: int
    extents: tuple[Extent, ...]

    @property
    def chunks(self) -> list[str]:
        """The file's chunk ids (hex), in order."""
        return [chunk.hex() for extent in self.extents for chunk in extent.chunks]


@dataclass
class WriterStats:
    files: int = 0
    bytes_read: int = 0
    #: Chunks seen, and of those the ones stored (new to the repository and to this writer).
    chunks: int = 0
    chunks_new: int = 0
    #: Raw bytes of the new chunks, and what the packs and indexes written take in the store.
    bytes_new: int = 0
    bytes_stored: int = 0
    packs: int = 0


@dataclass
class PendingFile:
    """A file whose chunks are still in the pool. ``done`` once every chunk id is known."""

    size: int
    extents: list[tuple[int, list[int], list[bytes]]] = field(default_factory=list)
    outstanding: int = 0
    submitted: bool = False

    @property
    def done(self) -> bool:
        return self.submitted and self.outstanding == 0

    def entry(self) -> FileEntry:
        if not self.done:
            raise RepoError("file entry requested before its chunks were processed")
        return FileEntry(
            size=self.size,
            extents=tuple(
                Extent(offset, length[0], tuple(ids)) for offset, length, ids in self.extents if length[0]
            ),
        )


def has_holes(st: os.stat_result) -> bool:
    """Whether a file may have holes: fewer blocks allocated than its size needs. Saves asking the
    filesystem for data ranges (two system calls) for every small file."""
    return st.st_blocks * 512 < st.st_size


def open_for_reading(name: str | bytes, dir_fd: int | None = None) -> int:
    """Open a file to back it up: never through a symlink, and without touching its atime where allowed
    (O_NOATIME needs the file's owner or CAP_FOWNER)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        return os.open(name, flags | os.O_NOATIME, dir_fd=dir_fd)
    except PermissionError:
        return os.open(name, flags, dir_fd=dir_fd)


class RepoWriter:
    """Stores files into the repository. Several threads may call ``submit_fd`` and ``result`` at once
    (the chunk pipeline, the open pack and the stats are shared under a lock); ``flush``, ``close`` and
    ``abort`` are for when no file is being submitted."""

    def __init__(
        self,
        store: ObjectStore,
        sealer: Sealer,
        *,
        index: RepoIndex | None = None,
        pack_size: int = layout.PACK_SIZE,
        workers: int | None = None,
        uploads: int = UPLOADS,
        on_read: Callable[[int], None] | None = None,
    ) -> None:
        self.store = store
        self.sealer = sealer
        self.codec = ChunkCodec(sealer)
        self.index = index if index is not None else RepoIndex.load(store, sealer)
        self.pack_size = pack_size
        self.stats = WriterStats()
        self._on_read = on_read
        self._workers = workers or max(2, os.cpu_count() or 2)
        # Two chunks per worker keep the pool busy while the calling thread reads the next ones.
        self._max_inflight = 2 * self._workers + 2
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="davit-repo-chunk")
        self._uploader = ThreadPoolExecutor(uploads, thread_name_prefix="davit-repo-upload")
        self._max_uploads = uploads
        self._inflight: deque[tuple[Future[_Processed], PendingFile, int, int]] = deque()
        self._uploads: deque[Future[int]] = deque()
        self._claimed: set[bytes] = set()
        self._claim_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        # The chunk pipeline and the open pack: in-flight queue, pending files' slots, pack assembly.
        self._lock = threading.RLock()
        # Two open packs: one for the chunks of files cut into chunks, one for whole small files, so that
        # each kind's chunks stay together in the order they were stored (a restore reads them in about
        # that order) however the two interleave in time.
        self._pack = _OpenPack()
        self._small_pack = _OpenPack()
        self._closed = False

    # --- files ---------------------------------------------------------------------------------------

    def store_file(self, path: str | bytes | os.PathLike[str]) -> FileEntry:
        """Store a regular file (never followed through a symlink) and return its chunks, in order."""
        fd = open_for_reading(os.fspath(path))
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise RepoError(f"{os.fsdecode(os.fspath(path))}: not a regular file")
            pending = self.submit_fd(fd, st.st_size, may_have_holes=has_holes(st))
        finally:
            os.close(fd)
        return self.result(pending)

    def submit_fd(self, fd: int, size: int, *, may_have_holes: bool = True) -> PendingFile:
        """Read the data ranges of an open regular file and queue its chunks; ``fd`` may be closed on
        return. ``result()`` (or ``done``) tells when its chunk ids are known."""
        self._check_open()
        pending = PendingFile(size=size)
        ranges = data_ranges(fd, size) if may_have_holes else [(0, size)] if size else []
        for offset, length in ranges:
            got = [0]
            ids: list[bytes] = []
            extent = len(pending.extents)
            pending.extents.append((offset, got, ids))
            for chunk in iter_chunks(fd, offset, length, self._count_read):
                ids.append(b"")
                got[0] += len(chunk)
                self._submit(pending, extent, len(ids) - 1, chunk)
        with self._lock:
            pending.submitted = True
        with self._stats_lock:
            self.stats.files += 1
        return pending

    def store_small_files(self, datas: Sequence[bytes]) -> list[bytes | None]:
        """Store the whole data of small files, each no longer than the minimum chunk (so one chunk, by
        the format's rule), and return each one's chunk id (None for an empty file). A batch costs one
        lock and one compression call rather than a pool hand-off per chunk, and its new chunks go
        straight into the open pack. Several threads may call this at once."""
        self._check_open()
        if any(len(data) > layout.CHUNK_MIN for data in datas):
            raise RepoError("internal: data longer than the minimum chunk must be cut into chunks")
        ids = [blake3.blake3(data).digest() if data else None for data in datas]
        new: list[int] = []
        with self._claim_lock:
            claimed, index = self._claimed, self.index
            for i, chunk_id in enumerate(ids):
                if chunk_id is not None and chunk_id not in claimed and chunk_id not in index:
                    claimed.add(chunk_id)
                    new.append(i)
        new_ids = [ids[i] for i in new]
        keys = [layout.chunk_aad(c.hex()) for c in new_ids if c is not None] if self.codec.encrypts else []
        sealed = self.codec.seal_many(keys, [datas[i] for i in new])
        read = sum(len(data) for data in datas)
        with self._stats_lock:
            self.stats.files += len(datas)
            self.stats.bytes_read += read
            self.stats.chunks += sum(1 for c in ids if c is not None)
            self.stats.chunks_new += len(new)
            self.stats.bytes_new += sum(len(datas[i]) for i in new)
        if self._on_read is not None and read:
            self._on_read(read)
        with self._lock:
            for i, chunk_id, parts in zip(new, new_ids, sealed, strict=True):
                assert chunk_id is not None
                self._add_to_pack(self._small_pack, chunk_id, parts, len(datas[i]))
        return ids

    def store_sealed(self, chunk_id: bytes, sealed: bytes, raw_size: int) -> None:
        """Add a chunk as it is already sealed in this location to the open pack. A sealed chunk is bound
        to its id (``chunk_aad``), not to its pack, so garbage collection moves the chunks in use out of
        a mostly unused pack this way, without opening and sealing them again. The chunk is packed even if
        the index holds it: the caller is about to give the copy it read up."""
        self._check_open()
        with self._stats_lock:
            self.stats.chunks += 1
            self.stats.chunks_new += 1
            self.stats.bytes_new += raw_size
        with self._lock:
            self._add_to_pack(self._pack, chunk_id, (sealed,), raw_size)

    def result(self, pending: PendingFile) -> FileEntry:
        while True:
            with self._lock:
                if pending.done:
                    return pending.entry()
                self._retire_one()

    def _count_read(self, n: int) -> None:
        with self._stats_lock:
            self.stats.bytes_read += n
        if self._on_read is not None:
            self._on_read(n)

    # --- the chunk pipeline --------------------------------------------------------------------------

    def _submit(self, pending: PendingFile, extent: int, slot: int, chunk: memoryview) -> None:
        future: Future[_Processed] | None = None
        if len(chunk) <= INLINE_CHUNK:
            # Outside the lock: several threads submitting files seal their small chunks at once.
            future = Future()
            future.set_result(self._process(chunk))
        with self._lock:
            while len(self._inflight) >= self._max_inflight:
                self._retire_one()
            pending.outstanding += 1
            if future is None:
                future = self._pool.submit(self._process, chunk)
            self._inflight.append((future, pending, extent, slot))

    def _process(self, chunk: memoryview) -> _Processed:
        """The chunk's id, and its sealed form if it is new (None if already stored). Runs in the pool,
        or in the calling thread for small chunks."""
        chunk_id = blake3.blake3(chunk).digest()
        with self._claim_lock:
            if chunk_id in self._claimed or chunk_id in self.index:
                return chunk_id, None, len(chunk)
            self._claimed.add(chunk_id)
        sealed = self.codec.seal_parts(layout.chunk_aad(chunk_id.hex()), chunk)
        return chunk_id, sealed, len(chunk)

    def _retire_one(self) -> None:
        """Under ``_lock``: record the oldest in-flight chunk's id and add it to the open pack if new."""
        if not self._inflight:
            raise RepoError("internal: waiting for a chunk that was never submitted")
        future, pending, extent, slot = self._inflight.popleft()
        chunk_id, sealed, raw_size = future.result()
        pending.extents[extent][2][slot] = chunk_id
        pending.outstanding -= 1
        with self._stats_lock:
            self.stats.chunks += 1
            if sealed is not None:
                self.stats.chunks_new += 1
                self.stats.bytes_new += raw_size
        if sealed is not None:
            self._add_to_pack(self._pack, chunk_id, sealed, raw_size)
        while self._uploads and self._uploads[0].done():
            self._uploads.popleft().result()

    # --- packs ---------------------------------------------------------------------------------------

    def _add_to_pack(self, pack: _OpenPack, chunk_id: bytes, sealed: SealedParts, raw_size: int) -> None:
        """Under ``_lock``: append a sealed chunk to an open pack, and close the pack once full."""
        length = sum(len(part) for part in sealed)
        pack.entries.append((chunk_id, pack.length, length, raw_size))
        pack.blobs.extend(sealed)
        pack.length += length
        if pack.length >= self.pack_size:
            self._close_pack(pack)

    def _close_pack(self, pack: _OpenPack) -> None:
        if not pack.blobs:
            return
        while len(self._uploads) >= self._max_uploads:
            self._uploads.popleft().result()
        blobs, entries = pack.take()
        self._uploads.append(self._uploader.submit(self._write_pack, blobs, entries))

    def _write_pack(self, blobs: list[bytes | memoryview], entries: list[tuple[bytes, int, int, int]]) -> int:
        """In the uploader: the pack, then its index (only then are its chunks visible to anyone)."""
        pack = b"".join(blobs)
        blobs.clear()
        pack_id = blake3.blake3(pack).hexdigest()
        self.store.put(layout.pack_key(pack_id), pack)
        key = layout.index_key(pack_id)
        sealed_index = self.sealer.seal(key, encode_index(pack_id, entries))
        self.store.put(key, sealed_index)
        self.index.add(pack_id, [(cid, IndexEntry(pack_id, off, ln, raw)) for cid, off, ln, raw in entries])
        with self._stats_lock:
            self.stats.packs += 1
            self.stats.bytes_stored += len(pack) + len(sealed_index)
        return len(pack)

    def flush(self) -> None:
        """Process every queued chunk and write the open packs and their indexes; afterwards every chunk
        of every file returned so far is in the repository."""
        self._check_open()
        with self._lock:
            while self._inflight:
                self._retire_one()
            self._close_pack(self._pack)
            self._close_pack(self._small_pack)
            while self._uploads:
                self._uploads.popleft().result()

    # --- lifetime ------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RepoError("the writer is closed")

    def close(self) -> None:
        """Flush and release the pools."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._shutdown()

    def abort(self) -> None:
        """Stop without writing the open packs: what a writer killed mid-way leaves (packs already being
        written finish, each with its index)."""
        if self._closed:
            return
        for future, _pending, _extent, _slot in self._inflight:
            future.cancel()
        self._inflight.clear()
        self._pack.take()
        self._small_pack.take()
        self._shutdown()

    def _shutdown(self) -> None:
        self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._uploader.shutdown(wait=True)
        errors = [f.exception() for f in self._uploads]
        self._uploads.clear()
        for error in errors:
            if error is not None:
                raise error

    def __enter__(self) -> RepoWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self.close()
        else:
            self.abort()
