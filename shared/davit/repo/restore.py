"""Restoring a tree into a directory, never writing outside it.

Every path is checked (relative, no ``.``/``..``/empty components) and every directory on the way is
opened by descriptor with O_NOFOLLOW, one component at a time: a symlink among the parents (one the
tree itself created, or one already in the target) is refused, never followed. Anything already at an
entry's name is removed, not written through, so an existing symlink or hard link cannot redirect a write.

The tree's contents are untrusted too (a tenant can craft them): a mode, owner or mtime that no
filesystem call takes is refused with the entry's name before anything is done with it; setuid and
setgid bits are stripped from files unless the caller asks to keep them (the node agent restores as
root); and ``reserved`` paths (where the caller itself writes afterwards, e.g. the restore's marker)
may hold no entry, nor any non-directory on their way.

Files are created, sized and only their data ranges written, so holes stay holes. Chunks are read,
verified and written by a pool; a file's owner, mode and mtime are set once its last chunk is written,
and directories' (whose mtimes their children change) at the end, deepest first. Files of at most one
chunk (most files of most volumes) go to the pool in batches, each written whole by one task; larger
files a chunk a task. Each pack is fetched once, ahead of the tasks that need it (``_PackPrefetch``).

A file whose data cannot be read (a chunk missing, or failing verification) fails the restore with an
error naming the file (``FileUnreadable``), and no file left unfinished stays behind: a file of several
chunks is created at its full size before its data is written, so a partly written one would look
complete.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final

from davit.repo.errors import FileUnreadable, RepoError, UnsafePath
from davit.repo.index import IndexEntry
from davit.repo.reader import RepoReader
from davit.repo.tree_format import DIR, FILE, SYMLINK, Entry, Tree, iter_entries

_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
#: Directory descriptors kept open between entries (entries come grouped by directory).
_CACHED_DIRS: Final = 64
#: A batch of small files is handed to the pool at this many files or bytes, whichever comes first: a
#: task and a hand-over per file cost more than writing it, and every hand-over passes the GIL around.
_BATCH_FILES: Final = 64
_BATCH_BYTES: Final = 1 << 20
#: Data the main thread plans ahead of the writes: bounds the memory of chunks in flight and keeps the
#: packs they come from among the reader's cached ones.
_WINDOW_BYTES: Final = 24 << 20
#: The permission bits a mode may carry (``stat.S_IMODE``).
_MODE_BITS: Final = 0o7777
#: Bits that make an executable run as its owner or group.
_SETID_BITS: Final = stat.S_ISUID | stat.S_ISGID
#: uid_t/gid_t: 2**32 - 1 means "unchanged" to chown, so it is no owner.
_MAX_ID: Final = 2**32 - 2
_NS_RANGE: Final = range(-(2**63), 2**63)


@dataclass
class RestoreStats:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes_written: int = 0


def safe_components(path: bytes) -> list[bytes]:
    """The components of a tree entry's path; UnsafePath for anything that could name a place outside
    the target: absolute paths, ``..``, ``.``, empty components, NUL bytes."""
    if not path:
        return []
    if path.startswith(b"/"):
        raise UnsafePath(f"refusing {os.fsdecode(path)!r}: absolute path")
    if b"\0" in path:
        raise UnsafePath(f"refusing {os.fsdecode(path)!r}: NUL byte in path")
    parts = path.split(b"/")
    for part in parts:
        if part == b"..":
            raise UnsafePath(f"refusing {os.fsdecode(path)!r}: '..' component")
        if part in (b"", b"."):
            raise UnsafePath(f"refusing {os.fsdecode(path)!r}: empty or '.' component")
    return parts


class _Dirs:
    """Descriptors of directories below the target, opened without following symlinks."""

    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd
        self._open: OrderedDict[tuple[bytes, ...], int] = OrderedDict()

    def fd(self, parts: list[bytes], create: bool = True) -> int:
        key = tuple(parts)
        if not key:
            return self.root_fd
        cached = self._open.get(key)
        if cached is not None:
            self._open.move_to_end(key)
            return cached
        # Evict before opening: a descriptor is used only until the next call.
        while len(self._open) >= _CACHED_DIRS:
            os.close(self._open.popitem(last=False)[1])
        depth = len(key)
        while depth > 0 and key[:depth] not in self._open:
            depth -= 1
        fd = self._open[key[:depth]] if depth else self.root_fd
        for i in range(depth, len(key)):
            fd = self._open_child(fd, key[: i + 1], create)
            self._open[key[: i + 1]] = fd
        return fd

    @staticmethod
    def _open_child(parent: int, key: tuple[bytes, ...], create: bool) -> int:
        name = key[-1]
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                where = os.fsdecode(b"/".join(key))
                reason = "it is a symlink or not a directory"
                raise UnsafePath(f"refusing to write below {where!r}: {reason}") from exc
            raise
        # The tree lists directories before their contents; a tree without one gets it created.
        os.mkdir(name, 0o700, dir_fd=parent)
        return os.open(name, _DIR_FLAGS, dir_fd=parent)

    def close(self) -> None:
        while self._open:
            os.close(self._open.popitem()[1])


@dataclass(eq=False)
class _FileJob:
    """A large file being written by the pool, chunk by chunk; finished once the last one is written."""

    fd: int
    entry: Entry
    #: A descriptor of its directory, to remove the file again if the restore fails before it is done.
    parent: int
    outstanding: int = 0
    submitted: bool = False


def _remove_existing(parent: int, name: bytes) -> None:
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        try:
            os.rmdir(name, dir_fd=parent)
        except OSError as exc:
            raise RepoError(f"cannot replace directory {os.fsdecode(name)!r}: {exc.strerror}") from exc
    else:
        os.unlink(name, dir_fd=parent)


def _chown(fn: Callable[..., None], *args: object, **kwargs: object) -> None:
    """Ownership as recorded: required as root, best effort otherwise (a user can only give files to
    itself)."""
    try:
        fn(*args, **kwargs)
    except PermissionError:
        if os.geteuid() == 0:
            raise


def _write_chunk(reader: RepoReader, fd: int, offset: int, chunk_id: bytes, entry: Entry) -> int:
    try:
        data = memoryview(reader.read_chunk(chunk_id))
    except RepoError as exc:
        raise FileUnreadable(entry.name, exc) from exc
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], offset + done)
    return done


def check_entry(entry: Entry) -> None:
    """RepoError naming the entry when its mode, owner or mtime is not one a filesystem call takes (a
    crafted tree could otherwise crash the restore with an OverflowError)."""
    where = os.fsdecode(entry.path) or "/"
    for field, value, valid in (
        ("mode", entry.mode, range(_MODE_BITS + 1)),
        ("uid", entry.uid, range(_MAX_ID + 1)),
        ("gid", entry.gid, range(_MAX_ID + 1)),
        ("mtime", entry.mtime_ns, _NS_RANGE),
    ):
        if type(value) is not int or value not in valid:
            raise RepoError(f"refusing {where!r}: its {field} {value!r} is out of range")


def file_mode(entry: Entry, keep_setuid: bool) -> int:
    """The mode a restored file gets: as recorded, without setuid/setgid unless they are kept."""
    return entry.mode if keep_setuid else entry.mode & ~_SETID_BITS


def check_reserved(parts: list[bytes], kind: str, reserved: tuple[tuple[bytes, ...], ...]) -> None:
    """UnsafePath when an entry sits at a reserved path, or is no directory on the way to one."""
    key = tuple(parts)
    for path in reserved:
        if key == path or (key == path[: len(key)] and kind != DIR):
            where = os.fsdecode(b"/".join(key))
            raise UnsafePath(
                f"refusing {where!r}: the restore itself writes {os.fsdecode(b'/'.join(path))!r}"
            )


def _finish_file(fd: int, entry: Entry, keep_setuid: bool) -> None:
    # Owner before mode: chown clears the setuid and setgid bits.
    _chown(os.fchown, fd, entry.uid, entry.gid)
    os.fchmod(fd, file_mode(entry, keep_setuid))
    os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))


def _remove_unfinished(parent: int, name: bytes, fd: int) -> None:
    """Remove the file ``fd`` was opened on, if ``name`` still is that file: a restore that failed leaves
    no file that looks complete (its size is set before its data is written) but is not."""
    try:
        here, opened = os.stat(name, dir_fd=parent, follow_symlinks=False), os.fstat(fd)
        if (here.st_dev, here.st_ino) == (opened.st_dev, opened.st_ino):
            os.unlink(name, dir_fd=parent)
    except OSError:
        pass  # already gone, or replaced: nothing of this restore's to remove


def _create_file(parent: int, name: bytes, entry: Entry, *, sized: bool = False) -> int:
    """A new file at ``name``, replacing whatever is there, ``entry.size`` long unless ``sized`` (its
    data is written up to its end anyway)."""
    try:
        fd = os.open(name, _FILE_FLAGS, 0o600, dir_fd=parent)
    except FileExistsError:
        # Only then is anything looked at: a restore into an empty directory (the usual case) makes no
        # call for it.
        _remove_existing(parent, name)
        fd = os.open(name, _FILE_FLAGS, 0o600, dir_fd=parent)
    if not sized:
        try:
            os.ftruncate(fd, entry.size)
        except BaseException:
            os.close(fd)
            raise
    return fd


def _data_reaches_end(entry: Entry) -> bool:
    """Whether writing the file's data ranges makes it ``entry.size`` long by itself (no hole at its
    end), so that no call is needed to size it."""
    if not entry.extents:
        return entry.size == 0
    return entry.extents[-1].offset + entry.extents[-1].length == entry.size


def _restore_small_file(
    reader: RepoReader, parent: int, name: bytes, entry: Entry, chunks: list[tuple[int, bytes]],
    keep_setuid: bool,
) -> int:  # fmt: skip
    """A whole file of at most one chunk: created, written and finished, or removed again."""
    fd = _create_file(parent, name, entry, sized=_data_reaches_end(entry))
    try:
        written = sum(_write_chunk(reader, fd, offset, chunk_id, entry) for offset, chunk_id in chunks)
        _finish_file(fd, entry, keep_setuid)
    except BaseException:
        _remove_unfinished(parent, name, fd)
        raise
    finally:
        os.close(fd)
    return written


class _SmallFiles:
    """Small files handed to the pool at once, in tree order. ``parents`` are descriptors of their
    directories that the batch owns (the main thread's own ones may be closed meanwhile)."""

    def __init__(self) -> None:
        self.files: list[tuple[int, bytes, Entry, list[tuple[int, bytes]]]] = []
        self.parents: list[int] = []
        self.parent_key: tuple[bytes, ...] | None = None
        self.size = 0

    def add(
        self, parent: int, parts: list[bytes], entry: Entry, plan: list[tuple[int, bytes, IndexEntry]]
    ) -> None:
        key = tuple(parts[:-1])
        if key != self.parent_key or not self.parents:
            self.parents.append(os.dup(parent))
            self.parent_key = key
        self.files.append(
            (self.parents[-1], parts[-1], entry, [(offset, chunk_id) for offset, chunk_id, _ in plan])
        )
        self.size += sum(located.raw_size for _, _, located in plan)

    def close(self) -> None:
        parents, self.parents = self.parents, []
        for fd in parents:
            os.close(fd)


def _restore_small_files(reader: RepoReader, batch: _SmallFiles, keep_setuid: bool) -> int:
    """In the pool: every file of ``batch``, in order; the first that fails stops it (the ones before
    it are finished, the ones after it not created)."""
    try:
        return sum(
            _restore_small_file(reader, parent, name, entry, chunks, keep_setuid)
            for parent, name, entry, chunks in batch.files
        )
    finally:
        batch.close()


#: Packs fetched ahead at once (``_PackPrefetch``).
PREFETCH_PACKS = 2


class _PackPrefetch:
    """Fetches each pack the restore will read as soon as the main thread plans its first chunk from
    it, in a thread of its own: the read of the next pack overlaps the writes of the current one's
    chunks, and the pool's tasks find it in the reader's cache rather than each waiting for it in turn.
    A fetch that fails is only forgotten: the task that needs the pack fetches it again and reports
    the error with the file's name."""

    def __init__(self, reader: RepoReader) -> None:
        self._reader = reader
        # Two at once: against a remote store a pack's round trip is latency more than bandwidth, and the
        # reader keeps four packs (``CACHED_PACKS``), so two in flight never push out one being read.
        self._pool = ThreadPoolExecutor(PREFETCH_PACKS, thread_name_prefix="davit-repo-prefetch")
        self._last: str | None = None

    def chunk_planned(self, pack_id: str) -> None:
        # Chunks come about in the order they were packed: a new pack is one not seen just before.
        if pack_id != self._last:
            self._last = pack_id
            self._pool.submit(self._reader.pack, pack_id)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _chunk_plan(entry: Entry, reader: RepoReader) -> list[tuple[int, bytes, IndexEntry]]:
    out = []
    for extent in entry.extents:
        offset = extent.offset
        for chunk_id in extent.chunks:
            try:
                located = reader.locate(chunk_id)
            except RepoError as exc:
                raise FileUnreadable(entry.name, exc) from exc
            out.append((offset, chunk_id, located))
            offset += located.raw_size
        if offset != extent.offset + extent.length:
            raise RepoError(f"{entry.name}: chunks do not add up to the data range at {extent.offset}")
    return out


def chunk_offsets(entry: Entry, reader: RepoReader) -> list[tuple[int, bytes]]:
    """Where each chunk of a file goes; MissingChunk before anything is written for a chunk not indexed."""
    return [(offset, chunk_id) for offset, chunk_id, _ in _chunk_plan(entry, reader)]


def restore_tree(
    tree: Tree,
    target_dir: str | os.PathLike[str],
    reader: RepoReader,
    *,
    workers: int | None = None,
    keep_setuid: bool = False,
    reserved: Iterable[bytes] = (),
    select: Callable[[bytes], bool] | None = None,
) -> RestoreStats:
    """Write ``tree`` into ``target_dir`` (created if missing): contents, modes (setuid and setgid of
    files only with ``keep_setuid``), ownership, mtimes, symlinks (targets verbatim, the links themselves
    inside the target) and holes. An entry at one of the ``reserved`` paths (or a non-directory on the
    way to one) is refused. With ``select``, only the entries whose paths it accepts are written (every
    entry is still checked). A file whose data cannot be read raises FileUnreadable naming it; files not
    finished when the restore fails are removed."""
    reserved_parts = tuple(tuple(safe_components(path)) for path in reserved)
    # A thread a core: decompression, hashing and the file system calls run without the GIL, so each
    # keeps a core busy. More threads only pass the GIL around and, creating files in the same directory
    # (which the kernel serialises), spin on its lock.
    workers = workers or os.cpu_count() or 2
    max_inflight = 4 * workers
    stats = RestoreStats()
    os.makedirs(target_dir, exist_ok=True)
    root_fd = os.open(os.fspath(target_dir), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    dirs = _Dirs(root_fd)
    directories: list[Entry] = []
    # (task, the large file it writes to, the batch it owns, the bytes it writes).
    inflight: deque[tuple[Future[int], _FileJob | None, _SmallFiles | None, int]] = deque()
    inflight_bytes = 0
    open_jobs: set[_FileJob] = set()
    pool = ThreadPoolExecutor(workers, thread_name_prefix="davit-repo-restore")
    prefetch = _PackPrefetch(reader)
    batch = _SmallFiles()

    def finish(job: _FileJob) -> None:
        _finish_file(job.fd, job.entry, keep_setuid)
        open_jobs.discard(job)
        os.close(job.fd)
        os.close(job.parent)

    def retire_one() -> None:
        nonlocal inflight_bytes
        future, job, _batch, size = inflight[0]
        stats.bytes_written += future.result()
        inflight.popleft()
        inflight_bytes -= size
        if job is not None:
            job.outstanding -= 1
            if job.outstanding == 0 and job.submitted:
                finish(job)

    def submit(
        fn: Callable[..., int], *args: object, size: int, job: _FileJob | None = None,
        owned: _SmallFiles | None = None,
    ) -> None:  # fmt: skip
        nonlocal inflight_bytes
        while inflight and (len(inflight) >= max_inflight or inflight_bytes + size > _WINDOW_BYTES):
            retire_one()
        if job is not None:
            job.outstanding += 1
        inflight.append((pool.submit(fn, *args), job, owned, size))
        inflight_bytes += size

    def submit_batch() -> None:
        nonlocal batch
        if batch.files:
            full, batch = batch, _SmallFiles()
            submit(_restore_small_files, reader, full, keep_setuid, size=full.size, owned=full)

    try:
        for entry in iter_entries(reader.store, reader.sealer, tree):
            parts = safe_components(entry.path)
            check_entry(entry)
            check_reserved(parts, entry.kind, reserved_parts)
            if select is not None and not select(entry.path):
                continue
            if not parts:
                if entry.kind != DIR:
                    raise UnsafePath(f"refusing a root entry of type {entry.kind}")
                directories.append(entry)
                continue
            parent = dirs.fd(parts[:-1])
            name = parts[-1]
            if entry.kind == DIR:
                try:
                    os.mkdir(name, 0o700, dir_fd=parent)
                except FileExistsError:
                    if not stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
                        _remove_existing(parent, name)
                        os.mkdir(name, 0o700, dir_fd=parent)
                directories.append(entry)
                stats.dirs += 1
            elif entry.kind == SYMLINK:
                if entry.target is None:
                    raise RepoError(f"symlink {entry.name} has no target")
                _remove_existing(parent, name)
                os.symlink(entry.target, name, dir_fd=parent)
                _chown(os.chown, name, entry.uid, entry.gid, dir_fd=parent, follow_symlinks=False)
                os.utime(name, ns=(entry.mtime_ns, entry.mtime_ns), dir_fd=parent, follow_symlinks=False)
                stats.symlinks += 1
            elif entry.kind == FILE:
                plan = _chunk_plan(entry, reader)
                stats.files += 1
                for _offset, _chunk_id, located in plan:
                    prefetch.chunk_planned(located.pack)
                if len(plan) <= 1:
                    batch.add(parent, parts, entry, plan)
                    if len(batch.files) >= _BATCH_FILES or batch.size >= _BATCH_BYTES:
                        submit_batch()
                    continue
                submit_batch()
                own = os.dup(parent)
                try:
                    job = _FileJob(_create_file(parent, name, entry), entry, own)
                except BaseException:
                    os.close(own)
                    raise
                open_jobs.add(job)
                for offset, chunk_id, located in plan:
                    submit(
                        _write_chunk, reader, job.fd, offset, chunk_id, entry, size=located.raw_size, job=job
                    )
                job.submitted = True
                if job.outstanding == 0:
                    finish(job)
        submit_batch()
        while inflight:
            retire_one()
        # Deepest first: setting a directory's mtime before its last child is written would not stick,
        # and a read-only mode would stop a non-root restore from finishing its children.
        for entry in reversed(directories):
            parts = safe_components(entry.path)
            fd = dirs.fd(parts, create=False) if parts else root_fd
            _chown(os.fchown, fd, entry.uid, entry.gid)
            os.fchmod(fd, entry.mode)
            os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))
    finally:
        batch.close()  # only when the restore failed while filling it
        for future, _job, owned, _size in inflight:
            if future.cancel() and owned is not None:
                owned.close()
        pool.shutdown(wait=True, cancel_futures=True)
        prefetch.close()
        for job in open_jobs:  # only when the restore failed: each was left unfinished
            _remove_unfinished(job.parent, job.entry.path.rsplit(b"/", 1)[-1], job.fd)
            os.close(job.fd)
            os.close(job.parent)
        dirs.close()
        os.close(root_fd)
    return stats
