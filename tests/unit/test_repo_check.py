"""check(): a deleted pack shows as missing chunks, a flipped byte as a corrupt chunk (found when data is
read), each with the tree entries it affects; reads verify every chunk against its id."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from davit.repo import (
    CorruptChunk,
    FileUnreadable,
    MissingChunk,
    RepoIndex,
    RepoReader,
    RepoWriter,
    Tree,
    check,
    iter_entries,
    restore_tree,
    snapshot_tree,
)
from davit.repo.codec import ChunkCodec
from davit.repo.layout import CHUNK_MIN, pack_key
from davit.repo.reader import open_chunk
from tests.unit.test_repo_support import Location, open_location, write


@pytest.fixture(params=[None, "correct horse battery staple"], ids=["plain", "encrypted"])
def loc(request: pytest.FixtureRequest, tmp_path: Path) -> Location:
    return open_location(tmp_path / "location", request.param)


def backup(loc: Location, source: Path) -> tuple[Tree, dict[str, str]]:
    """Three files of one chunk, each in a pack of its own; returns the tree and each file's pack."""
    for name in ("a.bin", "b.bin", "c.bin"):
        write(source / "dir" / name, os.urandom(CHUNK_MIN - 1000))
    with RepoWriter(loc.store, loc.sealer, pack_size=CHUNK_MIN // 2) as writer:
        tree = snapshot_tree(source, writer)
    packs = {}
    index = RepoIndex.load(loc.store, loc.sealer)
    for entry in iter_entries(loc.store, loc.sealer, tree):
        if entry.kind == "file":
            (chunk,) = entry.chunk_ids()
            located = index.get(chunk)
            assert located is not None
            packs[entry.path.decode().removeprefix("dir/")] = located.pack
    assert len(set(packs.values())) == 3
    return tree, packs


def test_a_sound_repository_checks_clean(loc: Location, tmp_path: Path) -> None:
    tree, _ = backup(loc, tmp_path / "src")
    for read_data in (False, True):
        report = check(loc.store, loc.sealer, [tree], read_data=read_data)
        assert report.ok, report
        assert (report.trees, report.chunks) == (1, 3)
    assert check(loc.store, loc.sealer, [tree.id], read_data=True).packs_read == 3


def test_a_deleted_pack_is_reported_with_the_paths_it_affects(loc: Location, tmp_path: Path) -> None:
    tree, packs = backup(loc, tmp_path / "src")
    loc.store.delete(pack_key(packs["b.bin"]))
    for read_data in (False, True):
        report = check(loc.store, loc.sealer, [tree], read_data=read_data)
        assert not report.ok and not report.corrupt
        assert len(report.missing) == 1
        assert "is not in the store" in report.missing[0].reason
        assert report.affected_paths == [f"{tree.id}:dir/b.bin"]
    with pytest.raises(FileUnreadable, match=r"'dir/b\.bin' cannot be read: .* not in the store") as raised:
        restore_tree(tree, tmp_path / "restored", RepoReader(loc.store, loc.sealer))
    assert isinstance(raised.value.cause, MissingChunk)


def test_a_flipped_byte_is_found_when_data_is_read(loc: Location, tmp_path: Path) -> None:
    tree, packs = backup(loc, tmp_path / "src")
    path = loc.directory / pack_key(packs["c.bin"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    assert check(loc.store, loc.sealer, [tree], read_data=False).ok
    report = check(loc.store, loc.sealer, [tree], read_data=True)
    assert not report.ok and not report.missing
    assert len(report.corrupt) == 1
    assert report.affected_paths == [f"{tree.id}:dir/c.bin"]
    with pytest.raises(FileUnreadable, match=r"'dir/c\.bin' cannot be read: .* is corrupt") as raised:
        restore_tree(tree, tmp_path / "restored", RepoReader(loc.store, loc.sealer))
    assert isinstance(raised.value.cause, CorruptChunk)
    # The file whose chunk failed is not left behind looking complete.
    assert not (tmp_path / "restored" / "dir" / "c.bin").exists()


def test_a_missing_tree_part_and_index_entry_are_reported(loc: Location, tmp_path: Path) -> None:
    tree, packs = backup(loc, tmp_path / "src")
    loc.store.delete(f"repo/index/{packs['a.bin']}")
    report = check(loc.store, loc.sealer, [tree, "0" * 64])
    assert [p.reason for p in report.missing] == ["in no index"]
    assert report.affected_paths == [f"{tree.id}:dir/a.bin"]
    assert len(report.errors) == 1 and "0" * 64 in report.errors[0]


def test_reads_verify_content_against_the_chunk_id(tmp_path: Path) -> None:
    # Plain mode: the sealed object's own checksum passes, only the id comparison can catch a swap.
    loc = open_location(tmp_path / "location")
    write(tmp_path / "one", b"one" * 1000)
    write(tmp_path / "two", b"two" * 1000)
    with RepoWriter(loc.store, loc.sealer) as writer:
        one = bytes.fromhex(writer.store_file(tmp_path / "one").chunks[0])
        two = bytes.fromhex(writer.store_file(tmp_path / "two").chunks[0])
    index = RepoIndex.load(loc.store, loc.sealer)
    entry_one, entry_two = index.get(one), index.get(two)
    assert entry_one is not None and entry_two is not None
    pack = loc.store.get(pack_key(entry_one.pack))
    codec = ChunkCodec(loc.sealer)
    assert open_chunk(codec, one, entry_one, pack) == b"one" * 1000
    with pytest.raises(CorruptChunk, match="does not match its id"):
        open_chunk(codec, one, entry_two, pack)
