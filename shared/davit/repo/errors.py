"""Errors of the volume-data repository."""

from __future__ import annotations

from davit import errors


class RepoError(errors.Unreadable):
    """The repository cannot do what was asked (a missing object, an unreadable tree, a walk failure)."""


class MissingChunk(RepoError):
    """A chunk a tree references is in no index, or its pack is gone."""

    def __init__(self, chunk_id: str, detail: str = "in no index") -> None:
        super().__init__(f"chunk {chunk_id} is missing: {detail}")
        self.chunk_id = chunk_id


class CorruptChunk(RepoError):
    """A chunk failed verification: its sealed form did not open, or its content does not hash to its id."""

    def __init__(self, chunk_id: str, detail: str) -> None:
        super().__init__(f"chunk {chunk_id} is corrupt: {detail}")
        self.chunk_id = chunk_id


class UnsafePath(RepoError):
    """A tree entry would be written outside the restore target (absolute, ``..``, or through a symlink)."""


class FileUnreadable(RepoError):
    """A file of a tree cannot be read back: one of its chunks is missing or corrupt. Names the file."""

    def __init__(self, path: str, cause: RepoError) -> None:
        super().__init__(f"file {path!r} cannot be read: {cause}")
        self.path = path
        self.cause = cause
