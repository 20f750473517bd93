"""A directory as a store: the embedded default, and in a cluster a ReadWriteMany volume mounted by the
workers. Keys map to files below the directory (and ``prefix``, a subdirectory of it)."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from davit.storage.base import ObjectInfo, ObjectNotFound, ObjectStore, ObjectTooLarge, StorageError

#: Names of files being written (and of check()'s probe); never listed, never valid in a key.
TEMP_PREFIX = ".davit-tmp-"

_ERRNO_CODES = {
    errno.EACCES: "AccessDenied",
    errno.EPERM: "AccessDenied",
    errno.EROFS: "AccessDenied",
    errno.ENOSPC: "NoSpace",
    errno.EDQUOT: "NoSpace",
    # An object where a key needs a directory, or the other way round ("a" and "a/b").
    errno.EEXIST: "KeyConflict",
    errno.ENOTDIR: "KeyConflict",
    errno.EISDIR: "KeyConflict",
}


def _segments(key: str, what: str) -> list[str]:
    """``key``'s path segments; StorageError("InvalidKey") for anything that could leave the root or
    that another store would read differently."""
    if not key or key.startswith("/") or "\\" in key or "\0" in key:
        raise StorageError("InvalidKey", f"invalid {what} {key!r}")
    parts = key.split("/")
    if any(p in ("", ".", "..") or p.startswith(TEMP_PREFIX) for p in parts):
        raise StorageError("InvalidKey", f"invalid {what} {key!r}")
    return parts


class LocalStore(ObjectStore):
    def __init__(self, directory: str | os.PathLike[str], prefix: str = "") -> None:
        """``directory`` must exist when the store is used (it is the mount, which Davit never creates);
        ``prefix`` directories below it are created as objects are written."""
        self.directory = Path(directory)
        self.prefix = prefix.strip("/")
        self.root = (
            self.directory.joinpath(*_segments(self.prefix, "prefix")) if self.prefix else self.directory
        )
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*_segments(key, "key"))

    def _missing_directory(self) -> StorageError:
        return StorageError("NoSuchDirectory", f"{self.directory} does not exist or is not a directory")

    def _error(self, exc: OSError, what: str) -> StorageError:
        if isinstance(exc, FileNotFoundError) and not self.directory.is_dir():
            return self._missing_directory()
        code = _ERRNO_CODES.get(exc.errno or 0) or errno.errorcode.get(exc.errno or 0, type(exc).__name__)
        return StorageError(code, f"{what}: {exc.strerror or exc}")

    # --- ObjectStore ---------------------------------------------------------------------------------

    def check(self) -> None:
        if not self.directory.is_dir():
            raise self._missing_directory()
        if self.root.exists() and not self.root.is_dir():
            raise StorageError("NoSuchDirectory", f"{self.root} is not a directory")
        target = self.root if self.root.is_dir() else self.directory
        try:
            fd, probe = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=target)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise self._error(exc, f"cannot write to {target}") from exc

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        if not self.directory.is_dir():
            # Creating it would write to the node's own disk, under the path where the volume belongs.
            raise self._missing_directory()
        try:
            fd, temp = self._temp_file(path.parent)
        except OSError as exc:
            raise self._error(exc, f"cannot write {key!r} in {self.url}") from exc
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, path)
            _fsync_directory(path.parent)
        except BaseException as exc:
            Path(temp).unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise self._error(exc, f"cannot write {key!r} in {self.url}") from exc
            raise

    @staticmethod
    def _temp_file(directory: Path) -> tuple[int, str]:
        attempts = 3
        for attempt in range(attempts):
            try:
                directory.mkdir(parents=True, exist_ok=True)
                return tempfile.mkstemp(prefix=TEMP_PREFIX, dir=directory)
            except FileNotFoundError:
                # A concurrent delete() removed the directory once it was empty, between our mkdir and
                # mkstemp; make it again.
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def get(self, key: str, max_size: int | None = None) -> bytes:
        path = self._path(key)
        try:
            if max_size is None:
                return path.read_bytes()
            with path.open("rb") as file:
                # read(n) allocates n bytes before reading: ask for what the file holds (bounded), not
                # for the limit. One byte more shows a file that grew past it meanwhile.
                size = os.fstat(file.fileno()).st_size
                if size > max_size:
                    raise ObjectTooLarge(key, size, max_size)
                data = file.read(size + 1)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            if not self.directory.is_dir():
                raise self._missing_directory() from exc
            raise ObjectNotFound(key) from exc
        except OSError as exc:
            raise self._error(exc, f"cannot read {key!r} in {self.url}") from exc
        if len(data) > max_size:
            raise ObjectTooLarge(key, len(data), max_size)
        return data

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        *dirs, start = prefix.split("/")
        if dirs:
            _segments("/".join(dirs), "prefix")
        rel = "".join(f"{d}/" for d in dirs)
        return self._walk(self.root.joinpath(*dirs), rel, start)

    def _walk(self, directory: Path, rel: str, name_prefix: str) -> Iterator[ObjectInfo]:
        try:
            with os.scandir(directory) as scan:
                entries = [
                    e for e in scan if e.name.startswith(name_prefix) and not e.name.startswith(TEMP_PREFIX)
                ]
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise self._error(exc, f"cannot list {directory}") from exc
        # Sorting a directory as "name/" puts it exactly where its keys belong among its siblings' keys
        # ("a-b" < "a/c"), so a depth-first walk yields every key in the order S3 and Azure list them.
        ordered: list[tuple[str, os.DirEntry[str]]] = []
        for entry in entries:
            if entry.name.startswith(TEMP_PREFIX):
                continue
            if entry.is_dir(follow_symlinks=False):
                ordered.append((entry.name + "/", entry))
            elif entry.is_file(follow_symlinks=False):
                ordered.append((entry.name, entry))
        ordered.sort(key=lambda pair: pair[0])
        for sort_name, entry in ordered:
            if sort_name.endswith("/"):
                yield from self._walk(Path(entry.path), rel + sort_name, "")
                continue
            try:
                size = entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:  # deleted while we walked
                continue
            yield ObjectInfo(key=rel + entry.name, size=size)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        except OSError as exc:
            raise self._error(exc, f"cannot delete {key!r} in {self.url}") from exc
        # Empty directories are what an object store would not show; remove them up to the root.
        parent = path.parent
        while parent != self.root:
            try:
                parent.rmdir()
            except OSError:  # not empty (or a concurrent writer's): stop
                break
            parent = parent.parent


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable, not only the file's data."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
