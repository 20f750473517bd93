"""Reading one file of a tree back: its bytes in order, holes as zeros, every chunk verified against its
id as it is read (``RepoReader.read_chunk``), a few chunks fetched ahead."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from davit.repo.errors import FileUnreadable, RepoError
from davit.repo.reader import RepoReader
from davit.repo.restore import chunk_offsets
from davit.repo.tree_format import FILE, Entry

#: Chunks read ahead of the one being written out (about 1.25 MiB each): enough to keep a remote store
#: busy while the consumer writes.
READ_AHEAD = 8
#: Zeros handed out at once for a hole.
_ZEROS = bytes(1 << 20)


def _zeros(count: int) -> Iterator[bytes]:
    while count > 0:
        piece = min(count, len(_ZEROS))
        yield _ZEROS[:piece]
        count -= piece


def file_data(reader: RepoReader, entry: Entry) -> Iterator[bytes]:
    """The content of the file ``entry``, in pieces. Every chunk is located before the first byte is
    given (a chunk in no index fails at once) and verified as it is read; FileUnreadable names the file.
    RepoError for an entry that is not a file or whose data ranges do not fit its size."""
    if entry.kind != FILE:
        raise RepoError(f"{entry.name!r} is a {entry.kind}, not a file")
    chunks = chunk_offsets(entry, reader)
    position = 0
    for offset, _chunk in chunks:
        if offset < position:
            raise RepoError(f"{entry.name!r}: its data ranges overlap or are out of order")
        position = offset
    pool = ThreadPoolExecutor(min(READ_AHEAD, max(1, len(chunks))), thread_name_prefix="davit-repo-read")
    pending: deque[tuple[int, bytes, Future[bytes]]] = deque()
    try:
        queued = iter(chunks)
        for offset, chunk_id in queued:
            pending.append((offset, chunk_id, pool.submit(reader.read_chunk, chunk_id)))
            if len(pending) >= READ_AHEAD:
                break
        position = 0
        while pending:
            offset, _chunk_id, future = pending.popleft()
            following = next(queued, None)
            if following is not None:
                pending.append((*following, pool.submit(reader.read_chunk, following[1])))
            try:
                data = future.result()
            except RepoError as exc:
                raise FileUnreadable(entry.name, exc) from exc
            yield from _zeros(offset - position)
            if offset + len(data) > entry.size:
                raise RepoError(f"{entry.name!r}: its data runs past its size ({entry.size} bytes)")
            yield data
            position = offset + len(data)
        yield from _zeros(entry.size - position)
    finally:
        for _offset, _chunk_id, future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
