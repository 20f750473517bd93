"""Cutting a volume into shards, ranges of its tree each stored by a task of its own (their trees are
joined by ``tree_format.merge_trees``)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from davit.repo.tree_format import tree_order
from davit.repo.walk import walk_root


@dataclass(frozen=True)
class PathRange:
    """Paths in ``[start, end)`` in tree order (either bound may be open)."""

    start: bytes | None
    end: bytes | None

    def before(self, path: bytes) -> bool:
        return self.start is not None and tree_order(path) < tree_order(self.start)

    def after(self, path: bytes) -> bool:
        return self.end is not None and tree_order(path) >= tree_order(self.end)

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
    with walk_root(root_dir) as walk:
        for path, _parent, _name, st in walk.entries():
            size = st.st_size if stat.S_ISREG(st.st_mode) else 0
            if shard_count and (shard_size + size > shard_bytes or shard_count >= shard_entries):
                bounds.append(path)
                shard_size = shard_count = 0
            shard_size += size
            shard_count += 1
            total += size
            entries += 1
    return ShardPlan(bounds=tuple(bounds), size=total, entries=entries + 1)
