"""Content-defined chunking of file data: chunk boundaries depend on content only (not on how the file
is read in windows), sizes stay within bounds, and only data ranges are read (holes are skipped)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pyfastcdc
import pytest

from davit.repo import layout
from davit.repo.chunking import MIN_HOLE, WINDOW, data_ranges, iter_chunks
from tests.unit.test_repo_support import MiB, write


def chunks_of(path: Path) -> list[bytes]:
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        return [bytes(c) for off, length in data_ranges(fd, size) for c in iter_chunks(fd, off, length)]
    finally:
        os.close(fd)


def test_windows_do_not_change_the_cut_points(tmp_path: Path) -> None:
    # Seeded: the chunk count of 19 MiB varies with the data, and the test must not.
    data = random.Random(3).randbytes(2 * WINDOW + 3 * MiB + 17)  # noqa: S311 - test data
    write(tmp_path / "f", data)
    chunks = chunks_of(tmp_path / "f")
    whole = pyfastcdc.FastCDC(layout.CHUNK_AVG, min_size=layout.CHUNK_MIN, max_size=layout.CHUNK_MAX)
    assert chunks == [bytes(c.data) for c in whole.cut_buf(data)]
    assert b"".join(chunks) == data
    assert all(layout.CHUNK_MIN <= len(c) <= layout.CHUNK_MAX for c in chunks[:-1])
    assert len(chunks[-1]) <= layout.CHUNK_MAX
    # FastCDC's average is avg + min: ~1.25 MiB.
    average = len(data) / len(chunks)
    assert 0.75 * MiB < average < 2 * MiB


def test_content_without_cut_points_is_cut_at_the_maximum(tmp_path: Path) -> None:
    write(tmp_path / "zeros", bytes(10 * MiB))
    assert [len(c) for c in chunks_of(tmp_path / "zeros")] == [4 * MiB, 4 * MiB, 2 * MiB]


@pytest.mark.parametrize("size", [0, 1, 1000, layout.CHUNK_MIN])
def test_small_files_are_one_chunk(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    write(tmp_path / "f", data)
    assert chunks_of(tmp_path / "f") == ([data] if size else [])


def test_data_ranges_skip_holes(tmp_path: Path) -> None:
    path = tmp_path / "sparse"
    with open(path, "wb") as file:
        file.truncate(64 * MiB)
        file.write(b"a" * 4096)
        file.seek(4096 + MIN_HOLE // 2)  # a small hole: read as data
        file.write(b"b" * 4096)
        file.seek(32 * MiB)
        file.write(b"c" * 8192)
    fd = os.open(path, os.O_RDONLY)
    try:
        ranges = data_ranges(fd, 64 * MiB)
    finally:
        os.close(fd)
    assert ranges == [(0, 2 * 4096 + MIN_HOLE // 2), (32 * MiB, 8192)]


def test_reads_are_counted(tmp_path: Path) -> None:
    write(tmp_path / "f", os.urandom(3 * MiB))
    seen: list[int] = []
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        assert sum(len(c) for c in iter_chunks(fd, 0, 3 * MiB, seen.append)) == 3 * MiB
    finally:
        os.close(fd)
    assert sum(seen) == 3 * MiB
