"""Snapshot trees: stored in parts so 100k entries neither write nor read as one object, kept in an
order the incremental merge relies on, verified against their ids on read."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import pytest

from davit.repo import Entry, Extent, RepoError, RepoWriter, iter_entries, load_tree, snapshot_tree
from davit.repo.layout import tree_part_key
from davit.repo.tree_format import DIR, FILE, TreeBuilder
from tests.unit.test_repo_support import Location, open_location, write

ENTRIES = 100_000


@pytest.fixture
def loc(tmp_path: Path) -> Location:
    return open_location(tmp_path / "location", "correct horse battery staple")


def synthetic(i: int) -> Entry:
    chunk = i.to_bytes(32, "big")
    return Entry(
        b"d%03d/f%06d" % (i // 1000, i),
        FILE,
        0o644,
        1000,
        1000,
        i,
        4096,
        i,
        None,
        (Extent(0, 4096, (chunk,)),),
    )


def test_a_tree_of_100k_entries_is_written_and_read_in_parts(loc: Location) -> None:
    builder = TreeBuilder(loc.store, loc.sealer)
    builder.add(Entry(b"", DIR, 0o755, 0, 0, 0, 0, 1))
    for d in range(ENTRIES // 1000):
        builder.add(Entry(b"d%03d" % d, DIR, 0o755, 0, 0, 0, 0, 2 + d))
        for i in range(d * 1000, (d + 1) * 1000):
            builder.add(synthetic(i))
    tree = builder.finish()
    assert tree.entries == ENTRIES + ENTRIES // 1000 + 1
    assert len(tree.parts) > 1
    assert load_tree(loc.store, loc.sealer, tree.id) == tree

    tracemalloc.start()
    try:
        count = 0
        for entry in iter_entries(loc.store, loc.sealer, tree):
            if entry.kind == FILE:
                if count % 997 == 0:
                    assert entry == synthetic(count)
                count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == ENTRIES
    # One part (about 4 MiB serialised) at a time, not the whole tree.
    assert peak < 32 << 20


def test_entries_must_come_in_tree_order(loc: Location) -> None:
    builder = TreeBuilder(loc.store, loc.sealer)
    builder.add(Entry(b"", DIR, 0o755, 0, 0, 0, 0, 1))
    builder.add(Entry(b"a", DIR, 0o755, 0, 0, 0, 0, 2))
    builder.add(Entry(b"a/z", FILE, 0o644, 0, 0, 0, 0, 3))
    builder.add(Entry(b"a-b", FILE, 0o644, 0, 0, 0, 0, 4))  # after a/z: compared by component
    with pytest.raises(RepoError, match="out of order"):
        builder.add(Entry(b"a/zz", FILE, 0o644, 0, 0, 0, 0, 5))


def test_the_incremental_merge_matches_names_that_sort_awkwardly(loc: Location, tmp_path: Path) -> None:
    source = tmp_path / "src"
    for name in ["a/c.txt", "a-b.txt", "a.txt", "A", "a/b/c", "ab", "é", "z/.hidden", "a b"]:
        write(source / name, name.encode() * 100)
    with RepoWriter(loc.store, loc.sealer) as writer:
        first = snapshot_tree(source, writer)
    paths = [e.path for e in iter_entries(loc.store, loc.sealer, first)]
    assert paths == sorted(paths, key=lambda p: p.split(b"/") if p else [])
    with RepoWriter(loc.store, loc.sealer) as writer:
        second = snapshot_tree(source, writer, previous=first)
        assert writer.stats.bytes_read == 0
    assert second.id == first.id

    (source / "a-b.txt").write_bytes(b"changed")
    with RepoWriter(loc.store, loc.sealer) as writer:
        snapshot_tree(source, writer, previous=first)
        assert writer.stats.bytes_read == len(b"changed")


def test_a_tampered_tree_is_refused(loc: Location, tmp_path: Path) -> None:
    write(tmp_path / "src" / "f", b"data")
    with RepoWriter(loc.store, loc.sealer) as writer:
        tree = snapshot_tree(tmp_path / "src", writer)
    # A part swapped for another tree's part: it opens (right key, right name) only if sealed for that
    # name, and its content must still hash to the id the root names.
    other = tmp_path / "other"
    write(other / "g", b"other data")
    with RepoWriter(loc.store, loc.sealer) as writer:
        replacement = snapshot_tree(other, writer)
    key = tree_part_key(tree.parts[0])
    loc.store.put(key, loc.store.get(tree_part_key(replacement.parts[0])))
    with pytest.raises(RepoError, match="authentication failed"):
        list(iter_entries(loc.store, loc.sealer, tree))
    with pytest.raises(RepoError, match="not a tree id"):
        load_tree(loc.store, loc.sealer, "../x")
    with pytest.raises(RepoError, match="missing"):
        load_tree(loc.store, loc.sealer, "f" * 64)
    assert os.path.exists(tmp_path / "src" / "f")
