"""Snapshot trees: every entry of a directory (path, type, metadata, and a file's data as chunk ids),
stored as sealed msgpack parts under a root object whose BLAKE3 is the tree's id.

Entries are in depth-first order with each directory's names sorted bytewise, which is the order of their
paths compared component by component. A walk produces that order, so an incremental snapshot merges the
walk with the previous tree's entries as two sorted streams instead of holding either in memory.

Paths are bytes, relative to the root, ``/``-separated; the root itself is the entry with the empty
path. Names are whatever bytes the filesystem holds (not necessarily UTF-8), so nothing is lost.
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import stat
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import blake3
import msgpack

from davit.format.repository import fetch_sealed
from davit.format.sealing import MAX_CONTENT, CorruptObject, Sealer
from davit.repo import layout
from davit.repo.chunking import data_ranges
from davit.repo.errors import RepoError
from davit.repo.writer import Extent, PendingFile, RepoWriter, has_holes, open_for_reading
from davit.storage.base import ObjectNotFound, ObjectStore

FILE = "file"
DIR = "dir"
SYMLINK = "symlink"
KINDS = (FILE, DIR, SYMLINK)
#: Entries waiting for their files' chunks before they join the tree; beyond this the walk waits. Large
#: enough that the walk goes on well past a large file being read, so that small files keep the readers
#: busy meanwhile (measured faster than 4096 on mixed data); about 20 MiB of entries at most.
MAX_WAITING = 32768
#: Regular files up to this size without holes are one chunk each (a data range no longer than the
#: minimum chunk is one chunk): the walk hands them to a reader in batches, which reads each whole with
#: one system call, stores the batch with one call (``RepoWriter.store_small_files``: one lock, one
#: compression call) and makes their entries. A file at a time, the hand-offs and objects per file cost
#: more than its data.
SMALL_FILE = layout.CHUNK_MIN
#: A batch of small files is handed over at this many files or bytes, whichever comes first.
BATCH_FILES = 64
BATCH_BYTES = 2 << 20
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
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class Entry:
    path: bytes
    kind: str
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    size: int
    inode: int
    target: bytes | None = None
    extents: tuple[Extent, ...] = ()

    @property
    def name(self) -> str:
        """The path for messages (undecodable bytes escaped)."""
        return os.fsdecode(self.path) if self.path else "."

    @property
    def components(self) -> list[bytes]:
        return self.path.split(b"/") if self.path else []

    def chunk_ids(self) -> Iterator[bytes]:
        for extent in self.extents:
            yield from extent.chunks


@dataclass(frozen=True)
class Tree:
    """A stored snapshot: its id, and where its entries are."""

    id: str
    parts: tuple[str, ...]
    entries: int
    #: Sum of the sizes of its files (holes included).
    size: int


# --- encoding ----------------------------------------------------------------------------------------


def encode_entry(entry: Entry) -> dict[str, Any]:
    body: dict[str, Any] = {
        "path": entry.path,
        "type": entry.kind,
        "mode": entry.mode,
        "uid": entry.uid,
        "gid": entry.gid,
        "mtime": entry.mtime_ns,
        "size": entry.size,
        "inode": entry.inode,
    }
    if entry.target is not None:
        body["target"] = entry.target
    if entry.extents:
        body["extents"] = [[e.offset, e.length, list(e.chunks)] for e in entry.extents]
    return body


def decode_entry(body: Any) -> Entry:
    try:
        kind = body["type"]
        if kind not in KINDS:
            raise RepoError(f"unknown entry type {kind!r}")
        path, target = body["path"], body.get("target")
        if not isinstance(path, bytes) or not (target is None or isinstance(target, bytes)):
            raise RepoError("entry path and target must be bytes")
        extents = []
        for offset, length, chunks in body.get("extents", ()):
            if not all(isinstance(c, bytes) and len(c) == 32 for c in chunks):
                raise RepoError(f"malformed chunk id in {path!r}")
            extents.append(Extent(int(offset), int(length), tuple(chunks)))
        return Entry(
            path=path,
            kind=kind,
            mode=int(body["mode"]),
            uid=int(body["uid"]),
            gid=int(body["gid"]),
            mtime_ns=int(body["mtime"]),
            size=int(body["size"]),
            inode=int(body["inode"]),
            target=target,
            extents=tuple(extents),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RepoError(f"malformed tree entry: {exc!r}") from exc


def _sort_key(path: bytes) -> list[bytes]:
    return path.split(b"/") if path else []


class TreeBuilder:
    """Writes entries in parts as they come, then the root: at most one part in memory."""

    def __init__(self, store: ObjectStore, sealer: Sealer, part_size: int = layout.TREE_PART_SIZE) -> None:
        self.store = store
        self.sealer = sealer
        self.part_size = part_size
        self._packer = msgpack.Packer(use_bin_type=True)
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._parts: list[bytes] = []
        self._entries = 0
        self._size = 0
        self._last: list[bytes] | None = None

    def add(self, entry: Entry) -> None:
        key = _sort_key(entry.path)
        if self._last is not None and key <= self._last:
            previous = os.fsdecode(b"/".join(self._last))
            raise RepoError(f"tree entries out of order: {entry.name} after {previous}")
        self._last = key
        packed: bytes = self._packer.pack(encode_entry(entry))
        self._buffer.append(packed)
        self._buffered += len(packed)
        self._entries += 1
        if entry.kind == FILE:
            self._size += entry.size
        if self._buffered >= self.part_size:
            self._write_part()

    def _write_part(self) -> None:
        if not self._buffer:
            return
        data = b"".join(self._buffer)
        self._buffer, self._buffered = [], 0
        digest = blake3.blake3(data).digest()
        key = layout.tree_part_key(digest.hex())
        self.store.put(key, self.sealer.seal(key, data))
        self._parts.append(digest)

    def finish(self) -> Tree:
        """Write the last part and the root. Every chunk the entries reference must be stored by now."""
        self._write_part()
        return _write_root(self.store, self.sealer, self._parts, self._entries, self._size)


def _open_verified(
    store: ObjectStore, sealer: Sealer, key: str, object_id: str, max_size: int = MAX_CONTENT
) -> bytes:
    try:
        data = sealer.open(key, fetch_sealed(store, key, max_size), max_size)
    except ObjectNotFound as exc:
        raise RepoError(f"{key} is missing") from exc
    except CorruptObject as exc:
        raise RepoError(str(exc)) from exc
    if blake3.blake3(data).hexdigest() != object_id:
        raise RepoError(f"{key}: content does not match its id")
    return data


def load_tree(store: ObjectStore, sealer: Sealer, tree_id: str) -> Tree:
    if not layout.is_id(tree_id):
        raise RepoError(f"{tree_id!r} is not a tree id")
    key = layout.tree_key(tree_id)
    try:
        root = msgpack.unpackb(_open_verified(store, sealer, key, tree_id), raw=False)
        if int(root["version"]) > layout.REPO_VERSION:
            raise RepoError(f"{key}: tree version {root['version']} is newer than this Davit reads")
        parts = tuple(bytes(p).hex() for p in root["parts"])
        return Tree(id=tree_id, parts=parts, entries=int(root["entries"]), size=int(root["size"]))
    except (KeyError, TypeError, ValueError, msgpack.UnpackException) as exc:
        raise RepoError(f"{key}: malformed tree: {exc!r}") from exc


def iter_entries(store: ObjectStore, sealer: Sealer, tree: Tree) -> Iterator[Entry]:
    """The tree's entries in order, one part in memory at a time."""
    for part_id in tree.parts:
        data = _open_verified(store, sealer, layout.tree_part_key(part_id), part_id, layout.MAX_TREE_PART)
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max(len(data), 1))
        unpacker.feed(data)
        del data
        try:
            for body in unpacker:
                yield decode_entry(body)
        except (ValueError, msgpack.UnpackException) as exc:
            raise RepoError(f"tree part {part_id}: malformed: {exc!r}") from exc


# --- snapshots ---------------------------------------------------------------------------------------


@dataclass
class _Waiting:
    entry: Entry
    pending: PendingFile | None = None


@dataclass(eq=False)
class _Reading:
    """Files handed to a reader at once, each opened by the walk: a batch of small files, or one file of
    any size. ``future`` gives their entries in the same order (None for a file that vanished or stopped
    being regular) once read."""

    small: bool
    paths: list[bytes] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)
    size: int = 0
    future: Future[list[_Waiting | None]] | None = None

    def close(self) -> None:
        """Close the descriptors of files never handed to a reader."""
        fds, self.fds = self.fds, []
        for fd in fds:
            os.close(fd)


@dataclass
class _Walk:
    """A depth-first walk by directory file descriptors: nothing is resolved through a path, so a symlink
    swapped in for a directory mid-walk is never followed out of the root."""

    root_fd: int
    #: Directories whose whole subtree the caller does not want (they are still yielded, not entered).
    skip: Callable[[bytes], bool] = lambda _path: False
    stack: list[tuple[int, bytes, Iterator[bytes]]] = field(default_factory=list)

    def entries(self) -> Iterator[tuple[bytes, int, bytes, os.stat_result]]:
        """(path, parent fd, name, lstat) of everything below the root, in tree order."""
        self.stack.append((self.root_fd, b"", self._names(self.root_fd)))
        while self.stack:
            fd, prefix, names = self.stack[-1]
            name = next(names, None)
            if name is None:
                self.stack.pop()
                if fd != self.root_fd:
                    os.close(fd)
                continue
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:  # removed since listed
                continue
            path = prefix + name
            yield path, fd, name, st
            if stat.S_ISDIR(st.st_mode) and not self.skip(path):
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # replaced by a symlink or a file
                        continue
                    raise
                self.stack.append((child, path + b"/", self._names(child)))

    @staticmethod
    def _names(fd: int) -> Iterator[bytes]:
        # listdir on a descriptor gives str names decoded with surrogateescape: fsencode restores the bytes.
        return iter(sorted(os.fsencode(n) for n in os.listdir(fd)))

    def close(self) -> None:
        for fd, _prefix, _names in self.stack:
            if fd != self.root_fd:
                os.close(fd)
        self.stack.clear()


def _entry_from_stat(
    path: bytes,
    kind: str,
    st: os.stat_result,
    target: bytes | None = None,
    extents: tuple[Extent, ...] = (),
) -> Entry:
    return Entry(
        path=path,
        kind=kind,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        mtime_ns=st.st_mtime_ns,
        size=st.st_size if kind != DIR else 0,
        inode=st.st_ino,
        target=target,
        extents=extents,
    )


class _Previous:
    """The previous tree's entries, advanced in step with the walk."""

    def __init__(self, entries: Iterable[Entry]) -> None:
        self._entries = iter(entries)
        self._current = next(self._entries, None)

    def find(self, path: bytes) -> Entry | None:
        key = _sort_key(path)
        while self._current is not None and _sort_key(self._current.path) < key:
            self._current = next(self._entries, None)
        if self._current is not None and self._current.path == path:
            return self._current
        return None


@dataclass(frozen=True)
class _Range:
    """Paths in ``[start, end)`` in tree order (either bound may be open)."""

    start: bytes | None
    end: bytes | None

    def before(self, path: bytes) -> bool:
        return self.start is not None and _sort_key(path) < _sort_key(self.start)

    def after(self, path: bytes) -> bool:
        return self.end is not None and _sort_key(path) >= _sort_key(self.end)

    def subtree_before(self, directory: bytes) -> bool:
        """Whether everything below ``directory`` comes before ``start``: the directory does, and
        ``start`` is not inside it (a subtree's entries sort between it and its next sibling)."""
        if not self.before(directory):
            return False
        assert self.start is not None
        return not self.start.startswith(directory + b"/")


@dataclass(frozen=True)
class ShardPlan:
    """A volume cut into ranges of its tree: shard ``i`` holds the entries in ``[bounds[i-1], bounds[i])``
    (the first from the root, the last to the end)."""

    bounds: tuple[bytes, ...]
    #: What the metadata walk found: regular files' sizes (holes included) and the entry count.
    size: int
    entries: int

    @property
    def shards(self) -> int:
        return len(self.bounds) + 1

    def range(self, shard: int) -> tuple[bytes | None, bytes | None]:
        start = self.bounds[shard - 1] if shard > 0 else None
        end = self.bounds[shard] if shard < len(self.bounds) else None
        return start, end


def plan_shards(root_dir: str | os.PathLike[str], shard_bytes: int, shard_entries: int) -> ShardPlan:
    """Walk ``root_dir``'s metadata only (fast next to reading) and cut it into ranges of about
    ``shard_bytes`` of file data or ``shard_entries`` entries, whichever comes first, each stored by a
    task of its own. A cut falls before the entry that would overflow a shard, so a single file larger
    than ``shard_bytes`` makes a shard of its own rather than being split."""
    bounds: list[bytes] = []
    total = entries = 0
    shard_size = shard_count = 0
    root_fd = os.open(os.fspath(root_dir), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    walk = _Walk(root_fd)
    try:
        for path, _parent, _name, st in walk.entries():
            size = st.st_size if stat.S_ISREG(st.st_mode) else 0
            if shard_count and (shard_size + size > shard_bytes or shard_count >= shard_entries):
                bounds.append(path)
                shard_size = shard_count = 0
            shard_size += size
            shard_count += 1
            total += size
            entries += 1
    finally:
        walk.close()
        os.close(root_fd)
    return ShardPlan(bounds=tuple(bounds), size=total, entries=entries + 1)


def merge_trees(store: ObjectStore, sealer: Sealer, shards: list[Tree]) -> Tree:
    """One tree of the shards' trees, given in range order: their parts, one after the other, already
    are the whole tree's entries in order, so only a new root is written (no entry is read again)."""
    if len(shards) == 1:
        return shards[0]
    parts = [bytes.fromhex(p) for tree in shards for p in tree.parts]
    entries = sum(tree.entries for tree in shards)
    size = sum(tree.size for tree in shards)
    return _write_root(store, sealer, parts, entries, size)


def _write_root(store: ObjectStore, sealer: Sealer, parts: list[bytes], entries: int, size: int) -> Tree:
    body = {"version": layout.REPO_VERSION, "entries": entries, "size": size, "parts": parts}
    root: bytes = msgpack.packb(body, use_bin_type=True)
    tree_id = blake3.blake3(root).hexdigest()
    key = layout.tree_key(tree_id)
    store.put(key, sealer.seal(key, root))
    return Tree(id=tree_id, parts=tuple(p.hex() for p in parts), entries=entries, size=size)


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
    store, sealer = writer.store, writer.sealer
    in_range = _Range(start, end)
    builder = TreeBuilder(store, sealer)
    prev = _Previous(iter_entries(store, sealer, previous) if previous is not None else ())
    # Entries in walk order; a file being read is its place in its batch until its reader is done.
    waiting: deque[_Waiting | tuple[_Reading, int]] = deque()
    # Batches and files handed to the readers and not yet collected, and their open descriptors; each
    # is put in ``finished`` by its reader's thread when done, so the walk never polls them.
    running = open_files = 0
    # Larger files handed over and not yet taken by a reader, oldest first.
    files_to_read: deque[_Reading] = deque()
    finished: queue.SimpleQueue[Future[list[_Waiting | None]]] = queue.SimpleQueue()
    batch = _Reading(small=True)

    def hand_over(unit: _Reading) -> None:
        nonlocal running, open_files
        try:
            if unit.small:
                unit.future = readers.submit(_read_small_files, writer, unit)
            else:
                unit.future = Future()
                files_to_read.append(unit)
                # Every file queued gets a task of its own here; a task may find its file already
                # taken by a reader that ran out of batches (see below), and then does nothing.
                file_readers.submit(_read_next_file, writer, files_to_read)
        except BaseException:
            unit.close()
            raise
        running += 1
        open_files += len(unit.paths)
        unit.future.add_done_callback(finished.put)

    def hand_over_batch() -> None:
        nonlocal batch
        if batch.paths:
            hand_over(batch)
            batch = _Reading(small=True)

    def collect(block: bool) -> None:
        """Collect the batches and files done (raising a reader's error); with ``block``, wait for one
        first."""
        nonlocal running, open_files
        while running:
            try:
                future = finished.get(block=block)
            except queue.Empty:
                return
            running -= 1
            open_files -= len(future.result())
            block = False

    def resolve_head(wait: bool) -> _Waiting | None:
        """The first waiting entry once its file is read (its chunks may still be in the writer's pool);
        None if there is none or, without ``wait``, if it is still being read. Files that vanished or
        stopped being regular are dropped."""
        while waiting:
            head = waiting[0]
            if isinstance(head, _Waiting):
                return head
            unit, slot = head
            if unit.future is None:  # the batch being filled
                if not wait:
                    return None
                hand_over_batch()
            assert unit.future is not None
            if not (wait or unit.future.done()):
                return None
            item = unit.future.result()[slot]
            if item is None:
                waiting.popleft()
            else:
                waiting[0] = item
        return None

    def emit_ready() -> None:
        while True:
            item = resolve_head(wait=False)
            if item is None or not (item.pending is None or item.pending.done):
                return
            waiting.popleft()
            if item.pending is None:
                builder.add(item.entry)
            else:
                stored = item.pending.entry()
                builder.add(replace(item.entry, size=stored.size, extents=stored.extents))

    # The root is the caller's choice and may be reached through a symlink; nothing below it is.
    root_fd = os.open(os.fspath(root_dir), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    walk = _Walk(root_fd, skip=in_range.subtree_before)
    readers = ThreadPoolExecutor(READERS, thread_name_prefix="davit-repo-read")
    file_readers = ThreadPoolExecutor(FILE_READERS, thread_name_prefix="davit-repo-read-file")
    try:
        if start is None:
            waiting.append(_Waiting(_entry_from_stat(b"", DIR, os.fstat(root_fd))))
        for path, parent_fd, name, st in walk.entries():
            if in_range.after(path):
                break
            if in_range.before(path):
                continue
            if stat.S_ISDIR(st.st_mode):
                waiting.append(_Waiting(_entry_from_stat(path, DIR, st)))
            elif stat.S_ISLNK(st.st_mode):
                try:
                    target = os.readlink(name, dir_fd=parent_fd)
                except FileNotFoundError:
                    continue
                waiting.append(_Waiting(_entry_from_stat(path, SYMLINK, st, target)))
            elif stat.S_ISREG(st.st_mode):
                old = prev.find(path)
                if _unchanged(old, st, writer):
                    assert old is not None
                    waiting.append(_Waiting(_entry_from_stat(path, FILE, st, extents=old.extents)))
                else:
                    # Opened here, by the walk (the directory's descriptor is closed once it is listed);
                    # read and closed by a reader.
                    fd = _open_file(path, parent_fd, name)
                    if fd is not None:
                        if st.st_size <= SMALL_FILE:
                            unit = batch
                        else:
                            hand_over_batch()  # read in walk order, roughly
                            unit = _Reading(small=False)
                        waiting.append((unit, len(unit.paths)))
                        unit.paths.append(path)
                        unit.fds.append(fd)
                        unit.size += st.st_size
                        if not unit.small:
                            hand_over(unit)
                        elif len(unit.paths) >= BATCH_FILES or unit.size >= BATCH_BYTES:
                            hand_over_batch()
            # Sockets, FIFOs and device nodes carry no data a volume backup can restore: skipped.
            collect(block=False)
            while open_files > MAX_OPEN:
                collect(block=True)
            emit_ready()
            if len(waiting) > MAX_WAITING:
                first = resolve_head(wait=True)
                if first is not None and first.pending is not None:
                    writer.result(first.pending)
                emit_ready()
        hand_over_batch()
        # No more batches: the batch readers help with the larger files still queued, so that the last
        # ones are not read one at a time.
        for _ in range(min(len(files_to_read), READERS)):
            readers.submit(_read_next_file, writer, files_to_read)
        while running:
            collect(block=True)
        writer.flush()
        emit_ready()
    finally:
        batch.close()
        # Readers already given files finish them (and close their descriptors) before the walk ends.
        readers.shutdown(wait=True)
        file_readers.shutdown(wait=True)
        walk.close()
        os.close(root_fd)
    if waiting:
        raise RepoError("internal: entries left waiting after the writer flushed")
    return builder.finish()


def _open_file(path: bytes, parent_fd: int, name: bytes) -> int | None:
    try:
        return open_for_reading(name, dir_fd=parent_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # replaced by a symlink since listed
            return None
        raise RepoError(f"cannot read {os.fsdecode(path)}: {exc.strerror}") from exc


def _read_next_file(writer: RepoWriter, files: deque[_Reading]) -> None:
    """In a reader: read the oldest queued file, unless other readers took them all."""
    try:
        unit = files.popleft()
    except IndexError:
        return
    assert unit.future is not None
    try:
        unit.future.set_result(_read_file(writer, unit))
    except BaseException as exc:
        unit.future.set_exception(exc)


def _read_file(writer: RepoWriter, unit: _Reading) -> list[_Waiting | None]:
    """In a reader: store the one file of ``unit``, of any size, and close it."""
    (path,), (fd,) = unit.paths, unit.fds
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return [None]
        pending = writer.submit_fd(fd, st.st_size, may_have_holes=has_holes(st))
    except OSError as exc:
        raise RepoError(f"cannot read {os.fsdecode(path)}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    # The metadata of what was read, not of what was listed: they differ if the file changed meanwhile.
    return [_Waiting(_entry_from_stat(path, FILE, st), pending)]


def _read_small_files(writer: RepoWriter, unit: _Reading) -> list[_Waiting | None]:
    """In a reader: store a batch of small files and close them. A file with holes, or that grew past
    ``SMALL_FILE`` since it was listed, is stored the general way."""
    out: list[_Waiting | None] = []
    # Of the files read whole: their place in ``out``, path, metadata and data.
    whole: list[tuple[int, bytes, os.stat_result]] = []
    datas: list[bytes] = []
    fds = iter(unit.fds)
    try:
        # Every file's read started at once: on a cold cache the reads below then mostly find their
        # data there rather than waiting for the disk one file at a time.
        for fd in unit.fds:
            _will_need(fd)
        for path, fd in zip(unit.paths, fds, strict=True):
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    out.append(None)
                elif st.st_size > SMALL_FILE or (has_holes(st) and not _all_data(fd, st.st_size)):
                    pending = writer.submit_fd(fd, st.st_size, may_have_holes=has_holes(st))
                    out.append(_Waiting(_entry_from_stat(path, FILE, st), pending))
                else:
                    whole.append((len(out), path, st))
                    out.append(None)
                    datas.append(_read_whole(fd, st.st_size))
            except OSError as exc:
                raise RepoError(f"cannot read {os.fsdecode(path)}: {exc.strerror}") from exc
            finally:
                os.close(fd)
    finally:
        for fd in fds:  # after an error: the ones not reached
            os.close(fd)
    ids = writer.store_small_files(datas)
    for (slot, path, st), data, chunk_id in zip(whole, datas, ids, strict=True):
        # The metadata of what was read, as for any file; a file that shrank meanwhile ends in a hole.
        extents = (Extent(0, len(data), (chunk_id,)),) if chunk_id is not None else ()
        out[slot] = _Waiting(_entry_from_stat(path, FILE, st, extents=extents))
    return out


def _all_data(fd: int, size: int) -> bool:
    """Whether a file with fewer blocks than its size needs has no hole after all: compressed or inline
    data (btrfs, ZFS, ext4's inline_data) takes fewer blocks too."""
    return data_ranges(fd, size) == ([(0, size)] if size else [])


def _will_need(fd: int) -> None:
    """Ask the kernel to start reading the file into the page cache: only a hint, so where it cannot
    be given (no such call, or not a regular file any more) nothing is lost."""
    with contextlib.suppress(AttributeError, OSError):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)


def _read_whole(fd: int, size: int) -> bytes:
    """``size`` bytes of ``fd`` from its start, in one system call unless the file shrank meanwhile
    (then fewer)."""
    data = os.pread(fd, size, 0)
    if len(data) == size:
        return data
    parts = [data]
    done = len(data)
    while done < size:
        more = os.pread(fd, size - done, done)
        if not more:
            break
        parts.append(more)
        done += len(more)
    return b"".join(parts)
