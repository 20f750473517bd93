"""The volume-data repository end to end over a real LocalStore: a directory with every kind of content
goes in and comes back identical (bytes, modes, owners, mtimes, links, holes); storing it again adds
nothing; an unchanged re-snapshot reads no file; a changed file stores only its new chunks."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from davit.repo import RepoReader, RepoWriter, iter_entries, load_tree, restore_tree, snapshot_tree
from davit.repo.layout import CHUNK_MAX
from tests.unit.test_repo_support import (
    DEEP_LEVELS,
    LATIN1_NAME,
    SPARSE_SIZE,
    UNICODE_NAME,
    Location,
    MiB,
    assert_same_tree,
    data_ranges,
    make_dataset,
    open_location,
    pack_keys,
    stored_bytes,
    write,
)


@pytest.fixture
def loc(tmp_path: Path) -> Location:
    return open_location(tmp_path / "location")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    make_dataset(tmp_path / "source")
    return tmp_path / "source"


def test_round_trip_keeps_everything(loc: Location, source: Path, tmp_path: Path) -> None:
    with RepoWriter(loc.store, loc.sealer) as writer:
        tree = snapshot_tree(source, writer)
    assert tree == load_tree(loc.store, loc.sealer, tree.id)
    entries = {e.path: e for e in iter_entries(loc.store, loc.sealer, tree)}
    assert tree.entries == len(entries) > 2000
    assert os.fsencode(UNICODE_NAME) in entries
    assert os.fsencode(LATIN1_NAME) == b"latin1-\xe9t\xe9.txt" and os.fsencode(LATIN1_NAME) in entries
    assert entries[b"link-absolute"].target == b"/etc/hostname"
    deep = b"/".join(b"level%02d" % i for i in range(DEEP_LEVELS)) + b"/leaf.txt"
    assert entries[deep].kind == "file"

    target = tmp_path / "restored"
    stats = restore_tree(tree, target, RepoReader(loc.store, loc.sealer), keep_setuid=True)
    assert stats.files == sum(1 for e in entries.values() if e.kind == "file")
    assert_same_tree(source, target)


def test_sparse_files_store_nothing_for_holes_and_come_back_sparse(loc: Location, tmp_path: Path) -> None:
    source = tmp_path / "sparse"
    source.mkdir()
    with open(source / "hole.img", "wb") as file:
        file.truncate(SPARSE_SIZE)
    with RepoWriter(loc.store, loc.sealer) as writer:
        tree = snapshot_tree(source, writer)
        assert writer.stats.bytes_read == 0
        assert writer.stats.chunks == 0
    # The tree and location record only: a few hundred bytes for 64 MiB.
    assert stored_bytes(loc) < 4096
    assert not pack_keys(loc)

    # A file with data in three places keeps exactly those places.
    with open(source / "mixed.img", "wb") as file:
        file.truncate(SPARSE_SIZE)
        file.write(b"head" * 1024)
        file.seek(20 * MiB)
        file.write(os.urandom(MiB))
        file.seek(SPARSE_SIZE - 10)
        file.write(b"0123456789")
    before = stored_bytes(loc)
    with RepoWriter(loc.store, loc.sealer) as writer:
        tree = snapshot_tree(source, writer, tree)
        assert writer.stats.bytes_read < 2 * MiB
    assert stored_bytes(loc) - before < 2 * MiB

    target = tmp_path / "restored"
    restore_tree(tree, target, RepoReader(loc.store, loc.sealer), keep_setuid=True)
    assert_same_tree(source, target)
    for name in ("hole.img", "mixed.img"):
        assert os.stat(target / name).st_size == SPARSE_SIZE
        assert data_ranges(target / name) == data_ranges(source / name)
    assert os.stat(target / "hole.img").st_blocks == 0
    assert os.stat(target / "mixed.img").st_blocks * 512 < 2 * MiB


def test_storing_the_same_directory_twice_adds_no_pack(loc: Location, source: Path) -> None:
    with RepoWriter(loc.store, loc.sealer) as writer:
        first = snapshot_tree(source, writer)
    packs = pack_keys(loc)
    assert packs
    # No previous tree: every file is read again, and every chunk is found in the repository.
    with RepoWriter(loc.store, loc.sealer) as writer:
        second = snapshot_tree(source, writer)
        assert writer.stats.bytes_read > 0
        assert writer.stats.chunks_new == 0
        assert writer.stats.packs == 0
    assert pack_keys(loc) == packs
    assert second.id == first.id


def test_unchanged_files_are_not_read_again(loc: Location, source: Path) -> None:
    with RepoWriter(loc.store, loc.sealer) as writer:
        first = snapshot_tree(source, writer)
    read: list[int] = []
    with RepoWriter(loc.store, loc.sealer, on_read=read.append) as writer:
        second = snapshot_tree(source, writer, previous=first)
        assert writer.stats.bytes_read == 0
    assert read == []
    assert second.id == first.id


def test_a_changed_file_stores_only_its_new_chunks(loc: Location, tmp_path: Path) -> None:
    source = tmp_path / "changing"
    big = random.Random(5).randbytes(32 * MiB)  # noqa: S311 - seeded, so the chunking is the same each run
    write(source / "big.bin", big)
    write(source / "other.bin", os.urandom(3 * MiB))
    with RepoWriter(loc.store, loc.sealer) as writer:
        first = snapshot_tree(source, writer)

    with open(source / "big.bin", "ab") as file:
        file.write(b"!")
    with RepoWriter(loc.store, loc.sealer) as writer:
        appended = snapshot_tree(source, writer, previous=first)
        # Only the changed file is read; only its last chunk (and the new byte) is new.
        assert writer.stats.bytes_read == len(big) + 1
        assert 0 < writer.stats.bytes_new <= CHUNK_MAX + 1

    # A byte inserted at the start shifts everything: content-defined cut points find their way back
    # within a chunk or two.
    write(source / "big.bin", b"?" + big + b"!")
    with RepoWriter(loc.store, loc.sealer) as writer:
        inserted = snapshot_tree(source, writer, previous=appended)
        assert 0 < writer.stats.bytes_new <= 2 * CHUNK_MAX + 2

    target = tmp_path / "restored"
    restore_tree(inserted, target, RepoReader(loc.store, loc.sealer), keep_setuid=True)
    assert_same_tree(source, target)


def test_store_file_returns_the_chunks_in_order(loc: Location, tmp_path: Path) -> None:
    data = os.urandom(9 * MiB)
    write(tmp_path / "f.bin", data)
    write(tmp_path / "empty", b"")
    write(tmp_path / "tiny", b"x")
    with RepoWriter(loc.store, loc.sealer) as writer:
        entry = writer.store_file(tmp_path / "f.bin")
        empty = writer.store_file(tmp_path / "empty")
        tiny = writer.store_file(tmp_path / "tiny")
    assert entry.size == len(data) and len(entry.chunks) >= 3
    assert (empty.size, empty.chunks) == (0, [])
    assert len(tiny.chunks) == 1
    reader = RepoReader(loc.store, loc.sealer)
    assert b"".join(reader.read_chunk(bytes.fromhex(c)) for c in entry.chunks) == data
    assert reader.read_chunk(bytes.fromhex(tiny.chunks[0])) == b"x"


def test_restore_replaces_what_is_in_the_target(loc: Location, source: Path, tmp_path: Path) -> None:
    with RepoWriter(loc.store, loc.sealer) as writer:
        tree = snapshot_tree(source, writer)
    target = tmp_path / "restored"
    restore_tree(tree, target, RepoReader(loc.store, loc.sealer), keep_setuid=True)
    # Damage the restored copy in every way a second restore must undo.
    write(target / "data" / "random-3m.bin", b"changed")
    (target / "text" / "readme.txt").unlink()
    os.symlink("/somewhere/else", target / "text" / "readme.txt")
    (target / "link-relative").unlink()
    (target / "link-relative").mkdir()
    restore_tree(tree, target, RepoReader(loc.store, loc.sealer), keep_setuid=True)
    assert_same_tree(source, target)
