"""A large volume stored as several shards (ranges of its tree, each by its own task) and merged: the
merged tree holds exactly the entries a single walk would, in order, and restores to the same files."""

from __future__ import annotations

from pathlib import Path

import pytest

from davit.repo import (
    RepoWriter,
    ShardPlan,
    Tree,
    iter_entries,
    merge_trees,
    plan_shards,
    restore_tree,
    snapshot_tree,
)
from davit.repo.reader import RepoReader
from tests.unit.test_repo_support import Location, assert_same_tree, open_location, write


@pytest.fixture
def loc(tmp_path: Path) -> Location:
    return open_location(tmp_path / "location", "correct horse battery staple")


def awkward_tree(root: Path) -> None:
    """Nested directories, names that sort awkwardly, a symlink, an empty directory, files of sizes
    around a shard's: cuts land inside directories, between siblings and before big files."""
    for d in range(4):
        for f in range(12):
            write(root / f"d{d}" / "sub" / f"f{f:02d}", bytes([d * 16 + f]) * (1000 + 97 * f))
        write(root / f"d{d}.txt", b"x" * 3000)
    write(root / "a b" / "é", b"accent" * 300)
    write(root / "big", bytes(range(256)) * 200)  # larger than a shard on its own
    (root / "empty").mkdir()
    (root / "link").symlink_to("d0/sub/f00")


def entries_of(loc: Location, tree: Tree) -> list[object]:
    return [(e.path, e.kind, e.size, e.target, e.extents) for e in iter_entries(loc.store, loc.sealer, tree)]


def store_sharded(loc: Location, source: Path, plan: ShardPlan, previous: Tree | None = None) -> Tree:
    trees = []
    for shard in range(plan.shards):
        start, end = plan.range(shard)
        with RepoWriter(loc.store, loc.sealer) as writer:
            trees.append(snapshot_tree(source, writer, previous, start=start, end=end))
    return merge_trees(loc.store, loc.sealer, trees)


def test_shards_merge_into_the_tree_a_single_walk_stores(loc: Location, tmp_path: Path) -> None:
    source = tmp_path / "src"
    awkward_tree(source)
    plan = plan_shards(source, shard_bytes=16_000, shard_entries=10_000)
    assert plan.shards > 4
    with RepoWriter(loc.store, loc.sealer) as writer:
        whole = snapshot_tree(source, writer)
    assert plan.size == whole.size and plan.entries == whole.entries

    merged = store_sharded(loc, source, plan)
    assert entries_of(loc, merged) == entries_of(loc, whole)
    assert (merged.entries, merged.size) == (whole.entries, whole.size)

    target = tmp_path / "restored"
    restore_tree(merged, target, RepoReader(loc.store, loc.sealer))
    assert_same_tree(source, target)


def test_a_cut_by_entry_count_and_a_single_shard(loc: Location, tmp_path: Path) -> None:
    source = tmp_path / "src"
    awkward_tree(source)
    by_count = plan_shards(source, shard_bytes=1 << 40, shard_entries=7)
    assert by_count.shards == -(-(by_count.entries - 1) // 7)
    assert entries_of(loc, store_sharded(loc, source, by_count))[0] == (b"", "dir", 0, None, ())

    one = plan_shards(source, shard_bytes=1 << 40, shard_entries=1 << 40)
    assert one.shards == 1 and one.range(0) == (None, None)


def test_sharded_incremental_backups_read_only_what_changed(loc: Location, tmp_path: Path) -> None:
    source = tmp_path / "src"
    awkward_tree(source)
    plan = plan_shards(source, shard_bytes=16_000, shard_entries=10_000)
    first = store_sharded(loc, source, plan)

    write(source / "d2" / "sub" / "f05", b"changed")
    read = 0
    trees = []
    for shard in range(plan.shards):
        start, end = plan.range(shard)
        with RepoWriter(loc.store, loc.sealer) as writer:
            trees.append(snapshot_tree(source, writer, first, start=start, end=end))
            read += writer.stats.bytes_read
    assert read == len(b"changed")
    second = merge_trees(loc.store, loc.sealer, trees)
    target = tmp_path / "restored"
    restore_tree(second, target, RepoReader(loc.store, loc.sealer))
    assert_same_tree(source, target)
