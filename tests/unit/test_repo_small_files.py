"""Small files go through their own path: the walk hands them to a reader in batches, each read whole with
one call, hashed, compressed together and packed with one lock (``RepoWriter.store_small_files``). That
path must store exactly what the general one (``submit_fd``: content-defined chunks through the pool)
would: the same chunk ids, so data stored before dedups against data stored after and the other way
round, in the same sealed format; and it must leave to the general path a file with holes, or one that
stopped being small after it was listed."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import blake3
import pytest

from davit.format.sealing import Kdf, Sealer
from davit.repo import (
    RepoError,
    RepoReader,
    RepoWriter,
    file_reads,
    iter_entries,
    restore_tree,
    snapshot_tree,
)
from davit.repo.codec import ChunkCodec
from davit.repo.file_reads import BATCH_FILES, SMALL_FILE, ReadUnit, read_small_files, will_need
from davit.repo.layout import CHUNK_MIN
from davit.repo.tree_format import FILE
from davit.repo.writer import PendingFile, open_for_reading
from tests.unit.test_repo_support import (
    Location,
    MiB,
    assert_same_tree,
    open_location,
    pack_keys,
    write,
)

KEY = "correct horse battery staple"
SEALERS = {"plain": Sealer(), "encrypted": Sealer(passphrase=KEY, salt=bytes(range(16)), kdf=Kdf(n=2**10))}


@pytest.fixture(params=[None, KEY], ids=["plain", "encrypted"])
def loc(request: pytest.FixtureRequest, tmp_path: Path) -> Location:
    return open_location(tmp_path / "location", request.param)


def mixed_small_tree(root: Path, files: int = 3 * BATCH_FILES + 5) -> None:
    """Small files spread over directories that interleave with subdirectories, symlinks and large files,
    so batches span directory boundaries and large files sit between small ones in walk order; sizes
    from empty to exactly the largest small file, some duplicated."""
    for i in range(files):
        size = (0, 1, 100, 4096, 70_000, SMALL_FILE)[i % 6] if i % 7 else 5000
        data = bytes([i % 251]) * size if i % 5 else os.urandom(size)
        write(root / f"d{i % 4}" / f"f{i:04d}", data)
        if i % 50 == 0:
            write(root / f"d{i % 4}" / f"sub{i:04d}" / "inner", b"inner %d" % i)
            (root / f"d{i % 4}" / f"link{i:04d}").symlink_to(f"f{i:04d}")
    write(root / "d1" / "g-large", os.urandom(SMALL_FILE + 1))
    write(root / "d2" / "g-large", os.urandom(3 * MiB))
    for d in range(4):
        write(root / f"d{d}" / "same", b"the same small file everywhere\n" * 10)


def regular_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def expected_chunks(path: Path) -> tuple[bytes, ...]:
    data = path.read_bytes()
    return (blake3.blake3(data).digest(),) if data else ()


def test_small_files_get_the_chunk_ids_the_general_path_gives(loc: Location, tmp_path: Path) -> None:
    source = tmp_path / "src"
    mixed_small_tree(source)
    # Stored one at a time through the general path first: content-defined chunking of a range no
    # longer than the minimum chunk gives the whole range as one chunk.
    general = {}
    with RepoWriter(loc.store, loc.sealer) as writer:
        for path in regular_files(source):
            if path.name != "g-large":
                general[path] = writer.store_file(path)
    packs = pack_keys(loc)

    # Then the whole directory: every small file's data is already there, so only the large files'
    # chunks are new.
    with RepoWriter(loc.store, loc.sealer) as writer:
        tree = snapshot_tree(source, writer)
        new_chunks = writer.stats.chunks_new
    entries = {e.path: e for e in iter_entries(loc.store, loc.sealer, tree)}
    for path, stored in general.items():
        entry = entries[os.fsencode(path.relative_to(source))]
        assert entry.kind == FILE and entry.size == stored.size
        assert [c.hex() for c in entry.chunk_ids()] == stored.chunks
        assert tuple(entry.chunk_ids()) == expected_chunks(path)
        if entry.size:
            (extent,) = entry.extents
            assert (extent.offset, extent.length) == (0, entry.size)
        else:
            assert entry.extents == ()
    # Only the large files' chunks were new; every small one was found.
    large_chunks = sum(len(list(entries[os.fsencode(f"d{d}/g-large")].chunk_ids())) for d in (1, 2))
    assert new_chunks == large_chunks >= 2
    assert pack_keys(loc) > packs

    target = tmp_path / "restored"
    restore_tree(tree, target, RepoReader(loc.store, loc.sealer))
    assert_same_tree(source, target)


def test_data_stored_by_batches_dedups_for_the_general_path(loc: Location, tmp_path: Path) -> None:
    source = tmp_path / "src"
    mixed_small_tree(source, files=BATCH_FILES + 3)
    with RepoWriter(loc.store, loc.sealer) as writer:
        first = snapshot_tree(source, writer)
        assert writer.stats.chunks_new > 0
    # Read again one at a time through the general path: nothing new.
    with RepoWriter(loc.store, loc.sealer) as writer:
        for path in regular_files(source):
            writer.store_file(path)
        assert writer.stats.chunks > 0
        assert writer.stats.chunks_new == 0
        assert writer.stats.packs == 0
    # And a walk without the previous tree reads every file and stores nothing new either.
    with RepoWriter(loc.store, loc.sealer) as writer:
        again = snapshot_tree(source, writer)
        assert writer.stats.bytes_read > 0
        assert writer.stats.chunks_new == 0
    assert again.id == first.id


@pytest.mark.parametrize("mode", sorted(SEALERS))
def test_seal_many_and_seal_parts_seal_as_seal_does(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sealer = SEALERS[mode]
    codec = ChunkCodec(sealer)
    datas = [b"x", os.urandom(5000), b"compressible " * 1000, b"\0" * CHUNK_MIN]
    keys = [f"repo/chunks/{i}" for i in range(len(datas))]
    sealed = [b"".join(parts) for parts in codec.seal_many(keys, datas)]
    assert [sealer.open(k, s) for k, s in zip(keys, sealed, strict=True)] == datas
    assert [codec.open(k, s) for k, s in zip(keys, sealed, strict=True)] == datas
    if not sealer.encrypts:  # no random nonce: byte for byte what one ``seal`` at a time gives
        assert sealed == [codec.seal(k, d) for k, d in zip(keys, datas, strict=True)]
        assert [b"".join(codec.seal_parts(k, d)) for k, d in zip(keys, datas, strict=True)] == sealed
    else:
        assert sealer.open(keys[1], b"".join(codec.seal_parts(keys[1], datas[1]))) == datas[1]
    assert codec.seal_many([], []) == []

    # A zstd backend without the batch call (CFFI) compresses one at a time, to the same result.
    class OneAtATime:
        def __init__(self, real: object) -> None:
            self.compress = real.compress  # type: ignore[attr-defined]

    real = codec._compressor()
    monkeypatch.setattr(codec, "_compressor", lambda: OneAtATime(real))
    again = [b"".join(parts) for parts in codec.seal_many(keys, datas)]
    assert [sealer.open(k, s) for k, s in zip(keys, again, strict=True)] == datas
    if not sealer.encrypts:
        assert again == sealed


def test_store_small_files_stores_each_once(loc: Location) -> None:
    datas = [b"alpha", b"", b"beta" * 1000, b"alpha", os.urandom(CHUNK_MIN)]
    with RepoWriter(loc.store, loc.sealer) as writer:
        ids = writer.store_small_files(datas)
        assert ids[1] is None
        assert ids == [blake3.blake3(d).digest() if d else None for d in datas]
        assert ids[0] == ids[3]
        # Three distinct chunks, the repeated one stored once, counted as seen twice.
        assert (writer.stats.chunks, writer.stats.chunks_new) == (4, 3)
        assert writer.stats.files == 5
        assert writer.stats.bytes_read == sum(map(len, datas))
        assert writer.stats.bytes_new == len(datas[0]) + len(datas[2]) + len(datas[4])
        with pytest.raises(RepoError, match="longer than the minimum chunk"):
            writer.store_small_files([b"x" * (CHUNK_MIN + 1)])
    reader = RepoReader(loc.store, loc.sealer)
    for data, chunk_id in zip(datas, ids, strict=True):
        if chunk_id is not None:
            assert reader.read_chunk(chunk_id) == data

    # Already stored: nothing new, no pack.
    packs = pack_keys(loc)
    with RepoWriter(loc.store, loc.sealer) as writer:
        assert writer.store_small_files(datas) == ids
        assert writer.stats.chunks_new == 0
    assert pack_keys(loc) == packs


def test_threads_storing_the_same_small_files_store_each_once(loc: Location) -> None:
    datas = [os.urandom(4000 + i) for i in range(200)]
    errors: list[BaseException] = []
    with RepoWriter(loc.store, loc.sealer, pack_size=64 << 10) as writer:
        barrier = threading.Barrier(4)

        def store() -> None:
            try:
                barrier.wait()
                for start in range(0, len(datas), 16):
                    writer.store_small_files(datas[start : start + 16])
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=store) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors
        assert writer.stats.chunks == 4 * len(datas)
        assert writer.stats.chunks_new == len(datas)
    # Many small packs (64 KiB each), closed by whichever thread filled them; every chunk readable.
    assert len(pack_keys(loc)) > 10
    reader = RepoReader(loc.store, loc.sealer)
    for data in datas:
        assert reader.read_chunk(blake3.blake3(data).digest()) == data


def opened(*paths: Path) -> ReadUnit:
    unit = ReadUnit(small=True)
    for path in paths:
        unit.paths.append(os.fsencode(path.name))
        unit.fds.append(open_for_reading(os.fspath(path)))
    return unit


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_a_batch_reader_falls_back_for_files_that_changed_since_listed(loc: Location, tmp_path: Path) -> None:
    # What the walk listed as small may have grown by the time a reader gets to it, have holes, or have
    # been replaced by something that is not a regular file.
    small = tmp_path / "small"
    write(small, b"small")
    grown = tmp_path / "grown"
    write(grown, os.urandom(SMALL_FILE + 5000))
    sparse = tmp_path / "sparse"
    with open(sparse, "wb") as file:
        file.truncate(SMALL_FILE)
        file.write(b"data at the start")
    only_hole = tmp_path / "only-hole"
    with open(only_hole, "wb") as file:
        file.truncate(1000)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    unit = opened(small, grown, sparse, only_hole, fifo)
    fds = list(unit.fds)
    with RepoWriter(loc.store, loc.sealer) as writer:
        out = read_small_files(writer, unit)
        assert not any(is_open(fd) for fd in fds)
        assert out[4] is None
        first, grown_item, sparse_item, hole_item = out[0], out[1], out[2], out[3]
        assert first is not None and grown_item is not None
        assert sparse_item is not None and hole_item is not None
        assert first.pending is None
        assert tuple(first.entry.chunk_ids()) == (blake3.blake3(b"small").digest(),)
        # The others went the general way: pending on the writer's pool.
        pending = [item.pending for item in (grown_item, sparse_item, hole_item)]
        assert all(isinstance(p, PendingFile) for p in pending)
        grown_entry, sparse_entry, hole_entry = (writer.result(p) for p in pending if p is not None)
    assert grown_entry.size == SMALL_FILE + 5000 and len(grown_entry.extents) == 1
    assert sparse_entry.size == SMALL_FILE
    assert [(e.offset, e.length) for e in sparse_entry.extents] == [(0, 4096)]
    assert (hole_entry.size, hole_entry.extents) == (1000, ())


def test_fewer_blocks_than_the_size_is_not_taken_for_holes(
    loc: Location, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Compressed or inline data (btrfs, ZFS, ext4's inline_data) takes fewer blocks than its size without
    # any hole: such files are asked for their data ranges, and read whole when they are all data.
    write(tmp_path / "dense", b"dense data" * 100)
    write(tmp_path / "empty", b"")
    monkeypatch.setattr(file_reads, "has_holes", lambda st: True)
    unit = opened(tmp_path / "dense", tmp_path / "empty")
    with RepoWriter(loc.store, loc.sealer) as writer:
        dense, empty = read_small_files(writer, unit)
    assert dense is not None and dense.pending is None
    assert tuple(dense.entry.chunk_ids()) == (blake3.blake3(b"dense data" * 100).digest(),)
    assert empty is not None and empty.pending is None and empty.entry.extents == ()


def test_a_batch_reader_that_fails_closes_every_descriptor(loc: Location, tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        write(tmp_path / name, name.encode() * 10)
    unit = opened(tmp_path / "a", tmp_path / "b", tmp_path / "c")
    # The second one cannot be read (opened for writing only): the batch fails naming it.
    os.close(unit.fds[1])
    unit.fds[1] = os.open(tmp_path / "b", os.O_WRONLY)
    fds = list(unit.fds)
    with RepoWriter(loc.store, loc.sealer) as writer, pytest.raises(RepoError, match="cannot read b"):
        read_small_files(writer, unit)
    assert not any(is_open(fd) for fd in fds)


def test_the_read_ahead_hint_is_only_a_hint(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    try:
        will_need(read_end)  # not a file: ignored
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_file_shrinking_while_read_ends_in_a_hole(loc: Location, tmp_path: Path) -> None:
    path = tmp_path / "shrinking"
    write(path, b"0123456789" * 100)
    unit = opened(path)
    st = os.fstat(unit.fds[0])
    real_fstat = os.fstat

    def fstat_then_truncate(fd: int) -> os.stat_result:
        # Metadata taken, then the file shrinks before its data is read.
        result = real_fstat(fd)
        os.truncate(path, 300)
        return result

    with RepoWriter(loc.store, loc.sealer) as writer, pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "fstat", fstat_then_truncate)
        (item,) = read_small_files(writer, unit)
    assert item is not None and item.pending is None
    assert item.entry.size == st.st_size == 1000
    (extent,) = item.entry.extents
    assert (extent.offset, extent.length) == (0, 300)
    assert extent.chunks == (blake3.blake3(b"0123456789" * 30).digest(),)


def test_many_batches_and_large_files_keep_walk_order(loc: Location, tmp_path: Path) -> None:
    source = tmp_path / "src"
    mixed_small_tree(source, files=6 * BATCH_FILES)
    with RepoWriter(loc.store, loc.sealer) as writer:
        tree = snapshot_tree(source, writer)
    paths = [e.path for e in iter_entries(loc.store, loc.sealer, tree)]
    assert paths == sorted(paths, key=lambda p: p.split(b"/") if p else [])
    assert len(paths) == len(list(source.rglob("*"))) + 1
    assert len(regular_files(source)) > 6 * BATCH_FILES
    target = tmp_path / "restored"
    restore_tree(tree, target, RepoReader(loc.store, loc.sealer))
    assert_same_tree(source, target)
