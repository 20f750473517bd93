"""Reading the files a snapshot's walk opened, in reader threads: a batch of small files read whole and
stored with one call, or one file of any size stored through the writer's pool."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field

from davit.repo import layout
from davit.repo.chunking import data_ranges
from davit.repo.errors import RepoError
from davit.repo.tree_format import FILE, Entry
from davit.repo.walk import entry_from_stat
from davit.repo.writer import Extent, PendingFile, RepoWriter, has_holes, open_for_reading

#: Regular files up to this size without holes are one chunk each (a data range no longer than the
#: minimum chunk is one chunk): the walk hands them to a reader in batches, which reads each whole with
#: one system call, stores the batch with one call (``RepoWriter.store_small_files``: one lock, one
#: compression call) and makes their entries. A file at a time, the hand-offs and objects per file cost
#: more than its data.
SMALL_FILE = layout.CHUNK_MIN
#: A batch of small files is handed over at this many files or bytes, whichever comes first.
BATCH_FILES = 64
BATCH_BYTES = 2 << 20


@dataclass
class WaitingEntry:
    """An entry on its way into the tree: a file's waits for its chunks (``pending``) to be stored."""

    entry: Entry
    pending: PendingFile | None = None


@dataclass(eq=False)
class ReadUnit:
    """Files handed to a reader at once, each opened by the walk: a batch of small files, or one file of
    any size. ``future`` gives their entries in the same order (None for a file that vanished or stopped
    being regular) once read."""

    small: bool
    paths: list[bytes] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)
    size: int = 0
    future: Future[list[WaitingEntry | None]] | None = None

    def close(self) -> None:
        """Close the descriptors of files never handed to a reader."""
        fds, self.fds = self.fds, []
        for fd in fds:
            os.close(fd)


def open_file(path: bytes, parent_fd: int, name: bytes) -> int | None:
    try:
        return open_for_reading(name, dir_fd=parent_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # replaced by a symlink since listed
            return None
        raise RepoError(f"cannot read {os.fsdecode(path)}: {exc.strerror}") from exc


def read_next_file(writer: RepoWriter, files: deque[ReadUnit]) -> None:
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


def _read_file(writer: RepoWriter, unit: ReadUnit) -> list[WaitingEntry | None]:
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
    return [WaitingEntry(entry_from_stat(path, FILE, st), pending)]


def read_small_files(writer: RepoWriter, unit: ReadUnit) -> list[WaitingEntry | None]:
    """In a reader: store a batch of small files and close them. A file with holes, or that grew past
    ``SMALL_FILE`` since it was listed, is stored the general way."""
    out: list[WaitingEntry | None] = []
    # Of the files read whole: their place in ``out``, path, metadata and data.
    whole: list[tuple[int, bytes, os.stat_result]] = []
    datas: list[bytes] = []
    fds = iter(unit.fds)
    try:
        # Every file's read started at once: on a cold cache the reads below then mostly find their
        # data there rather than waiting for the disk one file at a time.
        for fd in unit.fds:
            will_need(fd)
        for path, fd in zip(unit.paths, fds, strict=True):
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    out.append(None)
                elif st.st_size > SMALL_FILE or (has_holes(st) and not _all_data(fd, st.st_size)):
                    pending = writer.submit_fd(fd, st.st_size, may_have_holes=has_holes(st))
                    out.append(WaitingEntry(entry_from_stat(path, FILE, st), pending))
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
        out[slot] = WaitingEntry(entry_from_stat(path, FILE, st, extents=extents))
    return out


def _all_data(fd: int, size: int) -> bool:
    """Whether a file with fewer blocks than its size needs has no hole after all: compressed or inline
    data (btrfs, ZFS, ext4's inline_data) takes fewer blocks too."""
    return data_ranges(fd, size) == ([(0, size)] if size else [])


def will_need(fd: int) -> None:
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
