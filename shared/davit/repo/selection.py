"""Which entries of a tree a listing or a partial restore takes, from the paths a user gave (pure).

A path selects its entry and everything below it. A restore also takes the directories on the way to a
selected path, so that they get their recorded modes and mtimes rather than being created bare.
"""

from __future__ import annotations

from collections.abc import Iterable

from davit.repo.errors import UnsafePath


def normalize(path: str | bytes) -> bytes:
    """A path as a user writes it (``/etc/app/``, ``./data``, ``data//x``) as a tree path (``etc/app``);
    ``.`` or ``/`` alone is the root (``b""``). UnsafePath for ``..`` components and NUL bytes."""
    raw = path if isinstance(path, bytes) else path.encode("utf-8", "surrogateescape")
    if b"\0" in raw:
        raise UnsafePath(f"{raw!r}: NUL byte in path")
    parts = [p for p in raw.split(b"/") if p not in (b"", b".")]
    if b".." in parts:
        raise UnsafePath(f"{raw.decode('utf-8', 'backslashreplace')!r}: '..' is not a path inside a volume")
    return b"/".join(parts)


def _components(path: bytes) -> tuple[bytes, ...]:
    return tuple(path.split(b"/")) if path else ()


class PathSelection:
    """The entries under some paths of a tree. No paths select everything. ``seen`` collects the given
    paths that matched an entry exactly, so that a path naming nothing can be reported."""

    def __init__(self, paths: Iterable[str | bytes] = ()) -> None:
        self.paths: tuple[bytes, ...] = tuple(dict.fromkeys(normalize(p) for p in paths))
        self._parts = [_components(p) for p in self.paths]
        self.seen: set[bytes] = set()

    @property
    def everything(self) -> bool:
        return not self.paths

    def covers(self, path: bytes) -> bool:
        """Whether ``path`` is a selected path or lies below one."""
        if self.everything:
            return True
        parts = _components(path)
        hit = False
        for selected, selected_parts in zip(self.paths, self._parts, strict=True):
            if parts[: len(selected_parts)] == selected_parts:
                hit = True
                if path == selected:
                    self.seen.add(selected)
        return hit

    def leads_to(self, path: bytes) -> bool:
        """Whether ``path`` is a directory on the way to a selected path (the root included)."""
        parts = _components(path)
        return any(len(parts) < len(s) and s[: len(parts)] == parts for s in self._parts)

    def restores(self, path: bytes) -> bool:
        """What a restore writes: the selected entries, everything below them, and the way there."""
        return self.covers(path) or self.leads_to(path)

    def unmatched(self) -> list[bytes]:
        """The given paths no entry had (call after the whole tree went by)."""
        return [p for p in self.paths if p not in self.seen]
