"""Making a restored directory hold exactly a tree: what an in-place restore does after writing the tree
over a volume that already held files.

Every entry below the directory that the tree does not hold is removed (files written after the backup,
a directory the application made since), so the volume is the backup's, not a mix of the backup and what
came after. Nothing is followed: the walk goes by directory descriptor and never through a symlink (a
symlink is itself an entry, removed or kept), and a directory is removed with its contents by descriptor
too. ``reserved`` paths (the restore's own marker directory) are left alone.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Collection, Iterable
from pathlib import Path


def prune(directory: Path, keep: Iterable[bytes], reserved: Collection[bytes] = ()) -> int:
    """Remove what ``directory`` holds beyond the relative paths in ``keep``; how many entries (a
    directory with all it holds counting as one) were removed."""
    wanted = set(keep)
    removed = 0
    for dirpath, dirnames, filenames, dirfd in os.fwalk(os.fsencode(directory), follow_symlinks=False):
        relative = os.path.relpath(dirpath, os.fsencode(directory))
        prefix = b"" if relative == b"." else relative + b"/"
        for name in sorted([*dirnames, *filenames]):
            path = prefix + name
            if path in wanted or path in reserved:
                continue
            st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(name, dir_fd=dirfd)
                if name in dirnames:
                    dirnames.remove(name)
            else:
                os.unlink(name, dir_fd=dirfd)
            removed += 1
    return removed
