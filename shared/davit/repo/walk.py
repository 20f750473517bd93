"""The filesystem walk under a snapshot's root, in tree order, by directory file descriptors, and the
entry of what it finds."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from davit.repo.tree_format import DIR, Entry
from davit.repo.writer import Extent

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _enter_all(_path: bytes) -> bool:
    return False


@dataclass
class DirectoryWalk:
    """A depth-first walk by directory file descriptors: nothing is resolved through a path, so a symlink
    swapped in for a directory mid-walk is never followed out of the root."""

    root_fd: int
    #: Directories whose whole subtree the caller does not want (they are still yielded, not entered).
    skip: Callable[[bytes], bool] = _enter_all
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


def entry_from_stat(
    path: bytes,
    kind: str,
    st: os.stat_result,
    target: bytes | None = None,
    extents: tuple[Extent, ...] = (),
) -> Entry:
    """The entry of what ``lstat`` (or ``fstat`` of an opened file) found at ``path``."""
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


@contextlib.contextmanager
def walk_root(
    root_dir: str | os.PathLike[str], skip: Callable[[bytes], bool] = _enter_all
) -> Iterator[DirectoryWalk]:
    """A walk of ``root_dir``, closed (with the root's descriptor) on leaving. The root is the caller's
    choice and may be reached through a symlink; nothing below it is."""
    root_fd = os.open(os.fspath(root_dir), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    walk = DirectoryWalk(root_fd, skip=skip)
    try:
        yield walk
    finally:
        walk.close()
        os.close(root_fd)
