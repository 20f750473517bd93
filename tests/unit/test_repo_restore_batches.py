"""restore_tree hands files of at most one chunk to its pool in batches: every file of every batch comes
back as it was (holes at the end and empty files included), and a batch that fails on a corrupt chunk
names the file, leaves it not behind and closes every descriptor it held."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest

from davit.repo import FileUnreadable, RepoReader, RepoWriter, restore_tree, snapshot_tree
from davit.repo.index import RepoIndex
from davit.repo.layout import pack_key
from davit.repo.tree_format import iter_entries
from tests.unit.test_repo_support import MiB, assert_same_tree, data_ranges, open_location, write

DIRECTORIES = 5
FILES_PER_DIRECTORY = 150  # more than a batch holds, so each directory spans several batches


def small_files(root: Path) -> None:
    for d in range(DIRECTORIES):
        for f in range(FILES_PER_DIRECTORY):
            write(root / f"d{d}" / f"f{f:03d}.txt", b"%d/%d\n" % (d, f) * (1 + f * 7), mtime_ns=10**18 + f)


def open_descriptors() -> int:
    """The process' open descriptors, after a garbage collection closes those of unreachable files. Other
    tests' leftovers in the same worker process may still close during a restore, so a restore that
    leaks none ends with at most as many as it began with."""
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


def test_small_files_in_batches_come_back_as_they_were(tmp_path: Path) -> None:
    loc = open_location(tmp_path / "store")
    source = tmp_path / "src"
    small_files(source)
    write(source / "empty", b"")
    # One chunk of data, then a hole to the end: the file is sized by a call, not by its data.
    with open(source / "tail-hole.img", "wb") as file:
        file.write(b"head" * 1024)
        file.truncate(2 * MiB)
    with RepoWriter(loc.store, loc.sealer) as writer:
        tree = snapshot_tree(source, writer)
    before = open_descriptors()
    stats = restore_tree(tree, tmp_path / "target", RepoReader(loc.store, loc.sealer))
    assert open_descriptors() <= before
    assert stats.files == DIRECTORIES * FILES_PER_DIRECTORY + 2
    assert_same_tree(source, tmp_path / "target")
    assert os.stat(tmp_path / "target" / "tail-hole.img").st_size == 2 * MiB
    assert data_ranges(tmp_path / "target" / "tail-hole.img") == data_ranges(source / "tail-hole.img")


def test_a_corrupt_small_file_in_a_batch_is_named_and_not_left_behind(tmp_path: Path) -> None:
    loc = open_location(tmp_path / "store")
    source = tmp_path / "src"
    small_files(source)
    with RepoWriter(loc.store, loc.sealer) as writer:
        tree = snapshot_tree(source, writer)
    victim = b"d2/f075.txt"
    entry = next(e for e in iter_entries(loc.store, loc.sealer, tree) if e.path == victim)
    (chunk_id,) = entry.chunk_ids()
    located = RepoIndex.load(loc.store, loc.sealer).get(chunk_id)
    assert located is not None
    # A byte of that chunk only: every other file of its batch and pack stays readable.
    pack = loc.directory / pack_key(located.pack)
    data = bytearray(pack.read_bytes())
    data[located.offset + located.length - 1] ^= 0x01
    pack.write_bytes(bytes(data))

    before = open_descriptors()
    with pytest.raises(FileUnreadable, match=r"'d2/f075\.txt' cannot be read"):
        restore_tree(tree, tmp_path / "target", RepoReader(loc.store, loc.sealer))
    assert open_descriptors() <= before
    assert not (tmp_path / "target" / "d2" / "f075.txt").exists()
    # The files before it were finished before the error came out (tasks are retired in order): they stay.
    restored = tmp_path / "target" / "d2" / "f074.txt"
    assert restored.read_bytes() == (source / "d2" / "f074.txt").read_bytes()
