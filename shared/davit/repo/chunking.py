"""Reading a file's data as content-defined chunks: only its data ranges (holes are skipped), through
bounded windows, with pyfastcdc's FastCDC 2020.

Chunks are memoryviews into the window that was read, which stays alive as long as a chunk refers to it:
no copy between reading and hashing/compressing. Files are read with ``pread`` rather than mmap, since a
file truncated while mapped would kill the process with SIGBUS.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator

import pyfastcdc

from davit.repo import layout

#: Bytes read per ``pread``, beyond the carried-over tail of the previous window: large enough to amortise
#: system calls and the chunker's calls, at least twice the largest chunk so every window holds complete
#: chunks.
WINDOW = 8 << 20
#: Holes shorter than this between two data ranges are read as data (zeros compress to nothing): a file
#: with many tiny holes would otherwise cost a tiny chunk per fragment. Larger holes stay holes.
MIN_HOLE = 64 << 10


def _chunker() -> pyfastcdc.FastCDC:
    # One per file read: pyfastcdc documents its objects as not safe to share between threads.
    return pyfastcdc.FastCDC(layout.CHUNK_AVG, min_size=layout.CHUNK_MIN, max_size=layout.CHUNK_MAX)


def data_ranges(fd: int, size: int) -> list[tuple[int, int]]:
    """The (offset, length) ranges of ``fd`` that hold data, from SEEK_DATA/SEEK_HOLE; the whole file
    where the filesystem does not say."""
    ranges: list[tuple[int, int]] = []
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole from pos to the end
                break
            if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                return [(0, size)]
            raise
        if start >= size:
            break
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        if ranges and start - (ranges[-1][0] + ranges[-1][1]) < MIN_HOLE:
            ranges[-1] = (ranges[-1][0], end - ranges[-1][0])
        else:
            ranges.append((start, end - start))
        pos = end
    return ranges


def _read_into(fd: int, view: memoryview, offset: int) -> int:
    """Fill ``view`` from ``offset``; fewer bytes only at the end of the file."""
    done = 0
    while done < len(view):
        n = os.preadv(fd, [view[done:]], offset + done)
        if n <= 0:
            break
        done += n
    return done


def iter_chunks(
    fd: int, offset: int, length: int, on_read: Callable[[int], None] | None = None
) -> Iterator[memoryview]:
    """The content-defined chunks of ``length`` bytes of ``fd`` from ``offset``; fewer if the file got
    shorter meanwhile. A range no longer than the minimum chunk is one chunk."""
    if length <= 0:
        return
    chunker = _chunker()
    carry: memoryview | None = None
    pos, end = offset, offset + length
    while True:
        want = min(WINDOW, end - pos)
        kept = len(carry) if carry is not None else 0
        buffer = bytearray(kept + want)
        view = memoryview(buffer)
        if carry is not None:
            view[:kept] = carry
        n = _read_into(fd, view[kept:], pos)
        if on_read is not None:
            on_read(n)
        pos += n
        data = view[: kept + n]
        if not data:
            return
        if pos >= end or n < want:
            if len(data) <= layout.CHUNK_MIN:
                yield data
            else:
                for chunk in chunker.cut_buf(data):
                    yield chunk.data
            return
        # The last chunk of a window may end only because the window does: cut it again with what follows.
        chunks = list(chunker.cut_buf(data))
        for chunk in chunks[:-1]:
            yield chunk.data
        carry = chunks[-1].data
