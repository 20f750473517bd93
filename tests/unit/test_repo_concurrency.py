"""Writers that overlap or die: content-addressed names let two writers store overlapping data at once
with no lock, and a writer that dies leaves a readable repository that a retry completes."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import blake3

from davit.repo import RepoIndex, RepoReader, RepoWriter, Tree, check, restore_tree, snapshot_tree
from davit.repo.layout import pack_key
from davit.storage.local import LocalStore
from tests.unit.test_repo_support import (
    Location,
    MiB,
    assert_same_tree,
    make_dataset,
    open_location,
    pack_keys,
    write,
)

KEY = "correct horse battery staple"


def test_two_writers_store_overlapping_data_at_once(tmp_path: Path) -> None:
    loc = open_location(tmp_path / "location", KEY)
    shared = [os.urandom(3 * MiB) for _ in range(4)]
    sources = [tmp_path / "a", tmp_path / "b"]
    for i, source in enumerate(sources):
        for j, data in enumerate(shared):
            write(source / f"shared-{j}.bin", data)
        write(source / f"own-{i}.bin", os.urandom(5 * MiB))
        make_dataset(source / "tree", seed=7, small_files=300)  # identical in both

    trees: list[Tree | None] = [None, None]
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def backup(i: int) -> None:
        try:
            # A store object each, as two processes would have: no shared in-process index either.
            store = LocalStore(loc.directory)
            with RepoWriter(store, loc.sealer, index=RepoIndex(store, loc.sealer), pack_size=2 * MiB) as w:
                barrier.wait()
                trees[i] = snapshot_tree(sources[i], w)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=backup, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors

    for i, tree in enumerate(trees):
        assert tree is not None
        target = tmp_path / f"restored-{i}"
        restore_tree(
            tree,
            target,
            RepoReader(loc.store, loc.sealer, index=RepoIndex(loc.store, loc.sealer)),
            keep_setuid=True,
        )
        assert_same_tree(sources[i], target)
    report = check(loc.store, loc.sealer, [t for t in trees if t is not None], read_data=True)
    assert report.ok, report


def stored_chunks(loc: Location) -> int:
    index = RepoIndex(loc.store, loc.sealer)
    index.refresh()
    return len(index)


def test_a_writer_that_dies_leaves_a_readable_repository_a_retry_completes(tmp_path: Path) -> None:
    loc = open_location(tmp_path / "location", KEY)
    source = tmp_path / "source"
    files = [source / f"f{i}.bin" for i in range(6)]
    for path in files:
        write(path, os.urandom(2 * MiB))

    # Killed mid-way: half the files stored, some packs full and written, the open one lost.
    writer = RepoWriter(loc.store, loc.sealer, pack_size=1 * MiB)
    for path in files[:3]:
        writer.store_file(path)
    writer.abort()
    written = stored_chunks(loc)
    assert pack_keys(loc) and written > 0
    # A pack whose writer died before its index: invisible, harmless.
    orphan = b"DVT-orphan-pack"
    loc.store.put(pack_key(blake3.blake3(orphan).hexdigest()), orphan)
    assert check(loc.store, loc.sealer, []).ok

    with RepoWriter(loc.store, loc.sealer, index=RepoIndex.load(loc.store, loc.sealer)) as retry:
        tree = snapshot_tree(source, retry)
        # Every chunk was seen, the ones already written were not stored again.
        assert 0 < retry.stats.chunks_new == retry.stats.chunks - written
    target = tmp_path / "restored"
    restore_tree(tree, target, RepoReader(loc.store, loc.sealer), keep_setuid=True)
    assert_same_tree(source, target)
    assert check(loc.store, loc.sealer, [tree], read_data=True).ok


def test_a_writer_dropped_without_flush_stores_nothing_half_done(tmp_path: Path) -> None:
    loc = open_location(tmp_path / "location")
    write(tmp_path / "src" / "f.bin", os.urandom(MiB))
    writer = RepoWriter(loc.store, loc.sealer)
    writer.store_file(tmp_path / "src" / "f.bin")
    del writer  # never flushed: its only pack was never written
    assert not pack_keys(loc)
    assert not list(loc.store.list("repo/index/"))
