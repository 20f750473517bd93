"""Snapshots: storing everything below a directory and the tree describing it.

The walk (``davit.repo.walk``) lists the directory in tree order; regular files are opened by the walk and
read by reader threads (``davit.repo.file_reads``), small ones in batches, larger ones one at a time.
Entries wait in walk order until their files are read and stored, and join the tree (``TreeBuilder``)
in that order, so neither the walk nor the previous tree is ever held in memory.
"""

from __future__ import annotations

import os
import queue
import stat
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace

from davit.repo.errors import RepoError
from davit.repo.file_reads import (
    BATCH_BYTES,
    BATCH_FILES,
    SMALL_FILE,
    ReadUnit,
    WaitingEntry,
    open_file,
    read_next_file,
    read_small_files,
)
from davit.repo.shards import PathRange
from davit.repo.tree_format import DIR, FILE, SYMLINK, Entry, Tree, TreeBuilder, iter_entries, tree_order
from davit.repo.walk import entry_from_stat, walk_root
from davit.repo.writer import RepoWriter

#: Entries waiting for their files' chunks before they join the tree; beyond this the walk waits. Large
#: enough that the walk goes on well past a large file being read, so that small files keep the readers
#: busy meanwhile (measured faster than 4096 on mixed data); about 20 MiB of entries at most.
MAX_WAITING = 32768
#: Threads reading batches of small files while the walk goes on. More than cores only contend for the
#: GIL (on two cores, 1 and 3 measured no faster than 2).
READERS = max(2, min(4, os.cpu_count() or 2))
#: Threads reading larger files, one file each, apart from the batches so that a large file never holds
#: up the small ones queued behind it; their chunks are hashed and sealed by the writer's pool, which one
#: such reader keeps busy (2 measured no faster). Once the walk is done, the batch readers help.
FILE_READERS = 1
#: Files opened by the walk and not yet read and closed by a reader (each an open descriptor); beyond
#: this the walk waits for a batch or file to be done.
MAX_OPEN = 256


def snapshot_tree(
    root_dir: str | os.PathLike[str],
    writer: RepoWriter,
    previous: Tree | None = None,
    *,
    start: bytes | None = None,
    end: bytes | None = None,
) -> Tree:
    """Store everything below ``root_dir`` (files, directories, symlinks; other types are skipped) and
    the tree describing it. Files unchanged since ``previous`` (same size, mtime and inode) are not read.
    Symlinks are recorded, never followed, and the walk never leaves ``root_dir``.

    ``start``/``end`` restrict the tree to the entries whose paths fall in ``[start, end)`` in tree order
    (a shard, see ``plan_shards``); the root entry belongs to the shard without a ``start``."""
    in_range = PathRange(start, end)
    snapshot = _Snapshot(writer, previous)
    with walk_root(root_dir, skip=in_range.subtree_before) as walk:
        try:
            if start is None:
                snapshot.add_root(os.fstat(walk.root_fd))
            for path, parent_fd, name, st in walk.entries():
                if in_range.after(path):
                    break
                if in_range.before(path):
                    continue
                snapshot.add(path, parent_fd, name, st)
                snapshot.keep_bounded()
            snapshot.drain()
        finally:
            # Readers already given files finish them (and close their descriptors) before the walk ends.
            snapshot.close()
    return snapshot.finish()


class _Previous:
    """The previous tree's entries, advanced in step with the walk."""

    def __init__(self, entries: Iterable[Entry]) -> None:
        self._entries = iter(entries)
        self._current = next(self._entries, None)

    def find(self, path: bytes) -> Entry | None:
        key = tree_order(path)
        while self._current is not None and tree_order(self._current.path) < key:
            self._current = next(self._entries, None)
        if self._current is not None and self._current.path == path:
            return self._current
        return None


def _unchanged(previous: Entry | None, st: os.stat_result, writer: RepoWriter) -> bool:
    return (
        previous is not None
        and previous.kind == FILE
        and previous.size == st.st_size
        and previous.mtime_ns == st.st_mtime_ns
        and previous.inode == st.st_ino
        # A chunk collected since (or a previous tree from elsewhere) means reading the file again.
        and all(chunk in writer.index for chunk in previous.chunk_ids())
    )


class _Snapshot:
    """A snapshot being taken: the entries waiting in walk order, the batches and files handed to the
    readers, and the tree the entries join once their files are stored."""

    def __init__(self, writer: RepoWriter, previous: Tree | None) -> None:
        store, sealer = writer.store, writer.sealer
        self.writer = writer
        self.builder = TreeBuilder(store, sealer)
        self.previous = _Previous(iter_entries(store, sealer, previous) if previous is not None else ())
        # Entries in walk order; a file being read is its place in its batch until its reader is done.
        self.waiting: deque[WaitingEntry | tuple[ReadUnit, int]] = deque()
        # Batches and files handed to the readers and not yet collected, and their open descriptors; each
        # is put in ``finished`` by its reader's thread when done, so the walk never polls them.
        self.running = self.open_files = 0
        # Larger files handed over and not yet taken by a reader, oldest first.
        self.files_to_read: deque[ReadUnit] = deque()
        self.finished: queue.SimpleQueue[Future[list[WaitingEntry | None]]] = queue.SimpleQueue()
        self.batch = ReadUnit(small=True)
        self.readers = ThreadPoolExecutor(READERS, thread_name_prefix="davit-repo-read")
        self.file_readers = ThreadPoolExecutor(FILE_READERS, thread_name_prefix="davit-repo-read-file")

    # --- the walk's entries ---

    def add_root(self, st: os.stat_result) -> None:
        self.waiting.append(WaitingEntry(entry_from_stat(b"", DIR, st)))

    def add(self, path: bytes, parent_fd: int, name: bytes, st: os.stat_result) -> None:
        """Add what the walk found at ``path``. Sockets, FIFOs and device nodes carry no data a volume
        backup can restore: skipped."""
        if stat.S_ISDIR(st.st_mode):
            self.waiting.append(WaitingEntry(entry_from_stat(path, DIR, st)))
        elif stat.S_ISLNK(st.st_mode):
            try:
                target = os.readlink(name, dir_fd=parent_fd)
            except FileNotFoundError:
                return
            self.waiting.append(WaitingEntry(entry_from_stat(path, SYMLINK, st, target)))
        elif stat.S_ISREG(st.st_mode):
            self._add_file(path, parent_fd, name, st)

    def _add_file(self, path: bytes, parent_fd: int, name: bytes, st: os.stat_result) -> None:
        old = self.previous.find(path)
        if _unchanged(old, st, self.writer):
            assert old is not None
            self.waiting.append(WaitingEntry(entry_from_stat(path, FILE, st, extents=old.extents)))
            return
        # Opened here, by the walk (the directory's descriptor is closed once it is listed); read and
        # closed by a reader.
        fd = open_file(path, parent_fd, name)
        if fd is None:
            return
        if st.st_size <= SMALL_FILE:
            unit = self.batch
        else:
            self.hand_over_batch()  # read in walk order, roughly
            unit = ReadUnit(small=False)
        self.waiting.append((unit, len(unit.paths)))
        unit.paths.append(path)
        unit.fds.append(fd)
        unit.size += st.st_size
        if not unit.small:
            self.hand_over(unit)
        elif len(unit.paths) >= BATCH_FILES or unit.size >= BATCH_BYTES:
            self.hand_over_batch()

    def keep_bounded(self) -> None:
        """Collect what the readers finished and add the entries ready, waiting for the readers while too
        many files are open or too many entries wait."""
        self.collect(block=False)
        while self.open_files > MAX_OPEN:
            self.collect(block=True)
        self.emit_ready()
        if len(self.waiting) > MAX_WAITING:
            first = self.resolve_head(wait=True)
            if first is not None and first.pending is not None:
                self.writer.result(first.pending)
            self.emit_ready()

    def drain(self) -> None:
        """Once the walk is done: read the files still queued and add every entry left."""
        self.hand_over_batch()
        # No more batches: the batch readers help with the larger files still queued, so that the last
        # ones are not read one at a time.
        for _ in range(min(len(self.files_to_read), READERS)):
            self.readers.submit(read_next_file, self.writer, self.files_to_read)
        while self.running:
            self.collect(block=True)
        self.writer.flush()
        self.emit_ready()

    def close(self) -> None:
        self.batch.close()
        self.readers.shutdown(wait=True)
        self.file_readers.shutdown(wait=True)

    def finish(self) -> Tree:
        if self.waiting:
            raise RepoError("internal: entries left waiting after the writer flushed")
        return self.builder.finish()

    # --- the readers ---

    def hand_over(self, unit: ReadUnit) -> None:
        try:
            if unit.small:
                unit.future = self.readers.submit(read_small_files, self.writer, unit)
            else:
                unit.future = Future()
                self.files_to_read.append(unit)
                # Every file queued gets a task of its own here; a task may find its file already
                # taken by a reader that ran out of batches (see ``drain``), and then does nothing.
                self.file_readers.submit(read_next_file, self.writer, self.files_to_read)
        except BaseException:
            unit.close()
            raise
        self.running += 1
        self.open_files += len(unit.paths)
        unit.future.add_done_callback(self.finished.put)

    def hand_over_batch(self) -> None:
        if self.batch.paths:
            self.hand_over(self.batch)
            self.batch = ReadUnit(small=True)

    def collect(self, block: bool) -> None:
        """Collect the batches and files done (raising a reader's error); with ``block``, wait for one
        first."""
        while self.running:
            try:
                future = self.finished.get(block=block)
            except queue.Empty:
                return
            self.running -= 1
            self.open_files -= len(future.result())
            block = False

    # --- the entries waiting ---

    def resolve_head(self, wait: bool) -> WaitingEntry | None:
        """The first waiting entry once its file is read (its chunks may still be in the writer's pool);
        None if there is none or, without ``wait``, if it is still being read. Files that vanished or
        stopped being regular are dropped."""
        while self.waiting:
            head = self.waiting[0]
            if isinstance(head, WaitingEntry):
                return head
            unit, slot = head
            if unit.future is None:  # the batch being filled
                if not wait:
                    return None
                self.hand_over_batch()
            assert unit.future is not None
            if not (wait or unit.future.done()):
                return None
            item = unit.future.result()[slot]
            if item is None:
                self.waiting.popleft()
            else:
                self.waiting[0] = item
        return None

    def emit_ready(self) -> None:
        """Add to the tree the waiting entries whose files are stored, in walk order."""
        while True:
            item = self.resolve_head(wait=False)
            if item is None or not (item.pending is None or item.pending.done):
                return
            self.waiting.popleft()
            if item.pending is None:
                self.builder.add(item.entry)
            else:
                stored = item.pending.entry()
                self.builder.add(replace(item.entry, size=stored.size, extents=stored.extents))
